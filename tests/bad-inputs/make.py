#!/usr/bin/env python3
"""Writes the bad-input corpus: small files that each break one rule a reader must check.

Run from anywhere: python3 tests/bad-inputs/make.py. The output is deterministic (no timestamps, fixed
bytes), so re-running it changes nothing in git. Tests in tests/IlgpuSae.Tests/Reliability read these files;
each must give one clear error (an InvalidDataException, or one `error:` line from the command line) and
never a crash, a stack trace or a silently wrong result.
"""
import gzip
import io
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(name, data):
    path = os.path.join(HERE, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def npy(shape, descr="<f4", payload=b""):
    shape_text = "(" + "".join(f"{d}, " for d in shape) + ")" if len(shape) != 1 else f"({shape[0]},)"
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}"
    total = 10 + len(header) + 1
    header += " " * ((total + 63) // 64 * 64 - total) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + payload


def safetensors(header_obj, payload=b""):
    header = json.dumps(header_obj, separators=(",", ":")).encode()
    header += b" " * ((len(header) + 7) // 8 * 8 - len(header))
    return struct.pack("<Q", len(header)) + header + payload


# npy: rows·d·4 overflows 64 bits to 0, so an unchecked size test passes and reads run past the map.
write("npy/overflow-rows.npy", npy((1 << 62, 4)))
# npy: product of dimensions overflows on its own.
write("npy/overflow-shape.npy", npy((1 << 40, 1 << 40)))
# npy: declares 64 float32 values, holds 8.
write("npy/truncated-data.npy", npy((8, 8), payload=struct.pack("<8f", *range(8))))
# npy: magic and version, then the file ends inside the header-length field (found by the fuzzer).
write("npy/truncated-length.npy", b"\x93NUMPY\x01\x00\x10")
# npy: version 3 with a 3.8 GB header length (found by the fuzzer: an unchecked int cast overflowed).
write("npy/huge-header-length.npy", b"\x93NUMPY\x03\x00\xdd\xd1\x4e\xe3" + b"{" * 8)
# npy: header length field larger than the file.
write("npy/truncated-header.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 200) + b"{'descr'")
# safetensors: the element count overflows to 0, so begin == end passes an unchecked test.
write(
    "safetensors/overflow-shape.safetensors",
    safetensors({"x": {"dtype": "F32", "shape": [1 << 34, 1 << 30], "data_offsets": [0, 0]}}),
)
# safetensors: offsets that are not integers.
write(
    "safetensors/string-offsets.safetensors",
    safetensors({"x": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}}, b"\0" * 8),
)
# safetensors: a dtype that is a number.
write(
    "safetensors/numeric-dtype.safetensors",
    safetensors({"x": {"dtype": 7, "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
)
# safetensors: header length near 2^63.
write("safetensors/huge-header.safetensors", struct.pack("<Q", (1 << 63) - 8) + b"{}")


def manifest(folder, shards, total_rows, d_in=4):
    write(
        f"{folder}/manifest.json",
        json.dumps(
            {
                "format": "ilgpusae-activation-cache",
                "version": 1,
                "d_in": d_in,
                "dtype": "float32",
                "total_rows": total_rows,
                "source": {},
                "shards": shards,
            },
            indent=2,
        ).encode(),
    )


# cache manifest: a shard with a null file name.
manifest("cache-null-file", [{"file": None, "rows": 1, "sha256": "00"}], 1)
# cache manifest: shard rows that sum past 2^63.
manifest(
    "cache-overflow-rows",
    [{"file": "a.npy", "rows": (1 << 63) - 1, "sha256": "00"}, {"file": "b.npy", "rows": 2, "sha256": "00"}],
    1,
)
# cache manifest: no shards list at all.
write(
    "cache-null-shards/manifest.json",
    b'{"format": "ilgpusae-activation-cache", "version": 1, "d_in": 4, "total_rows": 0, "shards": null}',
)

# metrics.jsonl whose last record was torn by a crash (no final newline).
write(
    "metrics/torn-tail.jsonl",
    b'{"step":1,"losses/overall_loss":1.5}\n{"step":2,"losses/overall_loss":1.25}\n{"step":3,"losses/ov',
)
# progress.json of an activation cache run, torn.
write("progress/torn-progress.json", b'{\n  "fingerprint": "abc",\n  "next_con')

# A gzip corpus cut in the middle of its compressed stream.
text = "".join(f"document {i}: the quick brown fox jumps over the lazy dog.\n\n" for i in range(400))
buf = io.BytesIO()
with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
    g.write(text.encode())
whole = buf.getvalue()
write("corpus/truncated.txt.gz", whole[: len(whole) // 2])

# A model's config.json (LmConfig.Load) whose keys have the wrong JSON type: model_type a number (found by
# AFL++: an InvalidOperationException from JsonNode.GetValue, not a clear error), activation a number.
LM_CONFIG = {"model_type": "gpt2", "vocab_size": 4096, "n_positions": 128, "n_embd": 128, "n_layer": 2,
             "n_head": 4, "n_inner": 512, "activation_function": "gelu_new"}
write("lm-config/numeric-model-type.json", json.dumps(dict(LM_CONFIG, model_type=4096), indent=2).encode())
write("lm-config/numeric-activation.json", json.dumps(dict(LM_CONFIG, activation_function=7), indent=2).encode())
# found by AFL++ in CI: zero heads, which the config's own text form used to divide by
write("lm-config/zero-heads.json", json.dumps(dict(LM_CONFIG, n_head=0), indent=2).encode())

# Tokenizer files (LmTokenizer.Load): each must be one InvalidDataException naming the model folder.
BPE_VOCAB = {"H": 0, "e": 1, "l": 2, "o": 3, "He": 4, "ll": 5, "Hell": 6, "Hello": 7}
BPE_MERGES = ["H e", "l l", "He ll", "Hell o"]


def tokenizer_json(model):
    return json.dumps({"version": "1.0", "model": model}, ensure_ascii=False).encode()


# tokenizer.json: a WordPiece model, which only byte-level BPE files may be.
write("tokenizer/wordpiece.json", tokenizer_json({"type": "WordPiece", "vocab": BPE_VOCAB}))
# tokenizer.json: merges that are numbers and null instead of "a b" strings or [a, b] pairs.
write(
    "tokenizer/merges-not-strings.json",
    tokenizer_json({"type": "BPE", "vocab": BPE_VOCAB, "merges": [1, None, ["H"]]}),
)
# tokenizer.json: a byte-level BPE whose vocabulary has no token for most bytes ('.', digits, ...), so that
# encoding a text with one of them failed with a bare KeyNotFoundException (found by the mutation fuzzer's
# seeds); it must be refused when loaded.
write(
    "tokenizer/missing-bytes.json",
    tokenizer_json({"type": "BPE", "vocab": dict(BPE_VOCAB, **{"<|endoftext|>": 8}), "merges": BPE_MERGES}),
)
# tokenizer.json: token ids that are strings.
write(
    "tokenizer/string-ids.json",
    tokenizer_json({"type": "BPE", "vocab": {"H": "0", "e": "1"}, "merges": BPE_MERGES[:1]}),
)
# vocab.json + merges.txt in one file (split at the first NUL byte, as the fuzz target reads it): merges of
# tokens the vocabulary lacks.
write(
    "tokenizer/unknown-merge.bpe",
    json.dumps(BPE_VOCAB).encode() + b"\0#version: 0.2\nq z\nqz y\n",
)
# tokenizer.model (SentencePiece protobuf): the bundled model cut in half.
with open(os.path.join(HERE, "..", "..", "data", "lm", "tokenizer.model"), "rb") as f:
    sp = f.read()
write("tokenizer/truncated.model", sp[: len(sp) // 2])

print("wrote the bad-input corpus under", HERE)
