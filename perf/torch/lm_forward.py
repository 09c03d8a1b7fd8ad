#!/usr/bin/env python3
"""The PyTorch half of the language-model benchmark (perf/run-vs-torch.sh --lm).

A GPT-2 forward written here from the architecture (Radford et al. 2019; the Hugging Face GPT2LMHeadModel
layout: Conv1D weights [in, out], pre-LayerNorm blocks, GELU with the tanh approximation, causal
attention through torch's scaled_dot_product_attention as transformers runs it) on the checkpoint that
`IlgpuSae.Bench lm --cases DIR` used, from the same token ids to the same hook site. It checks that the
activations equal ILGPU's (exit 1 otherwise: not the same work), times the pass (median after a warm-up,
`--threads` threads, inference mode, the activations copied out as numpy) and writes a table with both.

    python3 perf/torch/lm_forward.py CASES_DIR --out perf/results/FILE.md [--threads 2] [--reps 3]
"""
import argparse
import datetime
import json
import os
import pathlib
import statistics
import struct
import sys
import time

import numpy as np
import torch

# Largest |ILGPU − PyTorch| relative to the largest |PyTorch| activation: float32 through up to 12 layers
# with sums in different orders.
ACT_REL_TOL = 1e-4


def read_safetensors(path):
    """name → tensor, for the float32 tensors of a .safetensors file (the format: an 8-byte little-endian
    header length, a JSON header of dtype/shape/data_offsets, then the raw data)."""
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"lm_forward.py: {name} is {info['dtype']}, only F32 is read here")
        start, end = info["data_offsets"]
        array = np.frombuffer(raw, dtype="<f4", count=(end - start) // 4, offset=base + start)
        out[name.removeprefix("transformer.")] = torch.from_numpy(array.reshape(info["shape"]).copy())
    return out


class Gpt2:
    def __init__(self, folder):
        cfg = json.loads((pathlib.Path(folder) / "config.json").read_text())
        if cfg.get("model_type", "gpt2") != "gpt2":
            raise SystemExit(f"lm_forward.py: {folder} is {cfg.get('model_type')}, only GPT-2 is written here")
        act = cfg.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise SystemExit(f"lm_forward.py: activation {act} is not written here")
        self.d = cfg["n_embd"]
        self.layers = cfg["n_layer"]
        self.heads = cfg["n_head"]
        self.eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.w = read_safetensors(pathlib.Path(folder) / "model.safetensors")

    def ln(self, x, name):
        return torch.nn.functional.layer_norm(x, (self.d,), self.w[name + ".weight"], self.w[name + ".bias"], self.eps)

    def linear(self, x, name):
        return torch.addmm(self.w[name + ".bias"], x, self.w[name + ".weight"])

    def resid_post(self, tokens, last_layer):
        """The residual stream after block `last_layer`: [B·T, d]."""
        b, t = tokens.shape
        hd = self.d // self.heads
        x = self.w["wte.weight"][tokens] + self.w["wpe.weight"][:t]
        x = x.reshape(b * t, self.d)
        for layer in range(last_layer + 1):
            h = f"h.{layer}."
            qkv = self.linear(self.ln(x, h + "ln_1"), h + "attn.c_attn")
            q, k, v = (part.reshape(b, t, self.heads, hd).transpose(1, 2) for part in qkv.split(self.d, dim=1))
            z = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            z = z.transpose(1, 2).reshape(b * t, self.d)
            x = x + self.linear(z, h + "attn.c_proj")
            m = torch.nn.functional.gelu(self.linear(self.ln(x, h + "ln_2"), h + "mlp.c_fc"), approximate="tanh")
            x = x + self.linear(m, h + "mlp.c_proj")
        return x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--command", default="perf/run-vs-torch.sh --lm")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folders = sorted(p for p in args.cases.iterdir() if (p / "case.json").exists())
    if not folders:
        raise SystemExit(f"lm_forward.py: no case folders (case.json) in {args.cases}")
    rows, profiles, failures, results = [], [], [], []
    for folder in folders:
        meta = json.loads((folder / "case.json").read_text())
        tokens = torch.from_numpy(np.load(folder / "tokens.npy").astype(np.int64))
        ours = np.load(folder / "activations.npy")
        model = Gpt2(meta["model"])
        last = int(meta["site"].split(".")[1])
        with torch.inference_mode():
            theirs = model.resid_post(tokens, last).numpy()
            err = float(np.abs(theirs - ours).max() / max(np.abs(theirs).max(), 1e-30))
            times = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                model.resid_post(tokens, last).numpy()
                times.append(time.perf_counter() - t0)
        seconds = statistics.median(times)
        n = tokens.numel()
        ok = err <= ACT_REL_TOL
        if not ok:
            failures.append(folder.name)
        ours_tps, theirs_tps = n / meta["ilgpu_seconds"], n / seconds
        results.append({**meta, "torch_seconds": seconds, "max_rel_error": err, "agree": ok})
        print(f"{folder.name}: ILGPU {ours_tps:.0f} tokens/s, PyTorch {theirs_tps:.0f}, error {err:.1e}")
        rows.append(
            f"| {meta['name']} | {meta['shape']} | {meta['batch']}×{meta['seq_len']} | {meta['site']} | "
            f"{ours_tps:.0f} | {theirs_tps:.0f} | **{ours_tps / theirs_tps:.2f}×** | {err:.1e} |"
        )
        profiles.append(f"| {meta['name']} | {meta['ilgpu_profile']} |")
    first = results[0]
    lines = [
        f"# Language-model forward: ILGPU vs PyTorch in the same run, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- command: `{args.command}`",
        f"- commit: {os.environ.get('ILGPUSAE_COMMIT', 'unknown')}",
        f"- ILGPU device: {first['ilgpu_device']}",
        f"- PyTorch: {torch.__version__}, CPU, {torch.get_num_threads()} threads, inference mode",
        f"- note: {os.environ.get('ILGPUSAE_BENCH_NOTE', '')}",
        "- pass: token ids to the last layer's `hook_resid_post` and the activations on the host (what "
        "`activations` computes per batch, without tokenising and writing shards); one warm-up, median of "
        f"{args.reps}; random token ids; both run the same checkpoint",
        f"- same work: the activations agree within {ACT_REL_TOL:g} of the largest one (last column)",
        "",
        "| model | shape | batch × context | site | ILGPU tokens/s | PyTorch tokens/s | ILGPU / PyTorch "
        "| max rel. difference |",
        "|---|---|---|---|---:|---:|---:|---:|",
        *rows,
        "",
        "## Where ILGPU's time goes",
        "",
        "One extra pass with the device synchronised after each phase (`LanguageModel.Profile`).",
        "",
        "| model | phases |",
        "|---|---|",
        *profiles,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        print(f"Wrote {args.out}")
    if failures:
        print(f"lm_forward.py: the activations disagree in {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
