#!/usr/bin/env bash
# The project's line limit, which CSharpier cannot enforce alone (it does not wrap comments or strings):
# every .cs line fits in max_line_length (.editorconfig, 110 characters) except a line that holds a string
# literal (a message stays whole, so that it can be searched for) or a test method's name.
# Prints each offending line and exits 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${1:-$(awk -F' *= *' '$1 == "max_line_length" {print $2; exit}' .editorconfig)}
find src tests perf -name '*.cs' -not -path '*/obj/*' -not -path '*/bin/*' -print0 | sort -z | xargs -0 perl -CSD -ne '
  BEGIN { $n = shift @ARGV }
  chomp; my $s = $_; $s =~ s/^\s+//;
  if (length($_) > $n
      && $s !~ /^([:?+(]|=>|\|\||&&)?\s*(\$@|@\$|\$|@)?"/
      && !($ARGV =~ m{^tests/} && $s =~ /^public (async Task|void) \w+\(/)) {
    print "$ARGV:$.: ", length($_), " characters (limit $n)\n"; $bad++;
  }
  close ARGV if eof;
  END { exit($bad ? 1 : 0) }' "$limit"
