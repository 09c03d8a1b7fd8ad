#!/usr/bin/python3
"""Writes data/lm/tokenizer-golden.json: reference token ids from the SentencePiece library for a few
held-out documents and edge cases, so the C# tokenizer (Microsoft.ML.Tokenizers) can be checked
against the tokenizer that trained the model. One-off; needs Debian's python3-sentencepiece."""
import gzip
import json
import os
import sys

import sentencepiece as spm

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sp = spm.SentencePieceProcessor(model_file=os.path.join(root, "lm", "tokenizer.model"))
held = gzip.open(os.path.join(root, "corpus", "heldout.txt.gz"), "rt", encoding="utf-8").read()
docs = [d for d in held.split("\n\n") if d.strip()]
texts = [d[:1500] for d in docs[:6] + docs[-10:]] + [
    "Hello, world!", "  leading and trailing spaces  ", "digits 1234567890 and 3.14159",
    "tabs\tand\nnewlines\n", "Unicode: naïve café — “quotes” ✓ 日本語", "", " ", "   ", "a   b", "\t", " x", "x ", "Q", "q", "1", "é", "日",
]
cases = [{"text": t, "ids": sp.encode(t)} for t in texts]
out = os.path.join(root, "lm", "tokenizer-golden.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump({"tokenizer": "lm/tokenizer.model", "library": "sentencepiece " + spm.__version__,
               "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "unk_id": sp.unk_id(), "cases": cases},
              f, ensure_ascii=False, separators=(",", ":"))
    f.write("\n")
print(f"{len(cases)} cases -> {out}", file=sys.stderr)
