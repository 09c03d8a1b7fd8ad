#!/usr/bin/env python3
"""The PyTorch half of the same-run comparison (perf/run-vs-torch.sh).

One SAE training step written here from the equations (Rajamanoharan et al. 2024, "Improving Dictionary
Learning with Gated Sparse Autoencoders", Eqs. 2-9; Gao et al. 2024 for TopK) the way a PyTorch library
writes it: autograd for the backward, torch.optim.Adam, and the unit-norm decoder constraint of the
paper (the decoder gradient projected orthogonal to each row before the update, the rows renormalised
after it), i.e. the work of `SaeTrainer` per step.

For each case folder that `IlgpuSae.Bench torch-case` wrote, the script
  1. loads the same starting tensors (every parameter and the batch),
  2. computes the loss of step 1 and, after one update, of step 2, and checks both against the values
     ILGPU computed for the same state (exit 1 on any disagreement: then the two would not be doing the
     same work),
  3. times warm-up + N steps (median), on `--threads` threads,
and writes one Markdown table with both tokens/s and their ratio, plus the OpenBLAS roofline.

    python3 perf/torch/sae_step.py CASES_DIR --out perf/results/FILE.md [--threads 2] [--steps 3]
"""
import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys
import time

import numpy as np
import torch

# Named tolerances |a - r| <= atol + rtol |r| for the losses. Step 1 compares float32 forward passes that
# sum in different orders. Step 2 also goes through one Adam update, which with beta1 = 0 moves each
# weight by about lr * sign(g): a gradient that rounds to the other sign moves that weight the other way.
LOSS1_RTOL, LOSS1_ATOL = 1e-4, 1e-6
LOSS2_RTOL, LOSS2_ATOL = 1e-3, 1e-6


def load_case(folder):
    meta = json.loads((folder / "case.json").read_text())
    tensors = {name: torch.from_numpy(np.load(folder / f"{name}.npy")) for name in meta["tensors"]}
    x = torch.from_numpy(np.load(folder / "x.npy"))
    return meta, tensors, x


def forward_loss(arch, p, x, l1, k):
    """Returns (mse, sparsity, aux, l0) as batch means, the squared error summed over the input width."""
    xc = x - p["b_dec"]
    if arch == "standard":
        f = torch.relu(xc @ p["W_enc"] + p["b_enc"])
        x_hat = f @ p["W_dec"] + p["b_dec"]
        mse = (x - x_hat).pow(2).sum(1).mean()
        sparsity = l1 * f.sum(1).mean()
        aux = torch.zeros((), dtype=x.dtype)
        l0 = (f > 0).float().sum(1).mean()
    elif arch == "gated":
        u = xc @ p["W_enc"]
        pi_gate = u + p["b_gate"]
        pi_mag = torch.exp(p["r_mag"]) * u + p["b_mag"]
        f = (pi_gate > 0).to(x.dtype) * torch.relu(pi_mag)
        x_hat = f @ p["W_dec"] + p["b_dec"]
        mse = (x - x_hat).pow(2).sum(1).mean()
        gate = torch.relu(pi_gate)
        sparsity = l1 * gate.sum(1).mean()
        x_aux = gate @ p["W_dec"].detach() + p["b_dec"].detach()  # the paper's frozen decoder
        aux = (x - x_aux).pow(2).sum(1).mean()
        l0 = (pi_gate > 0).float().sum(1).mean()
    elif arch == "topk":
        pre = torch.relu(xc @ p["W_enc"] + p["b_enc"])
        values, indices = pre.topk(k, dim=1)
        f = torch.zeros_like(pre).scatter_(1, indices, values)
        x_hat = f @ p["W_dec"] + p["b_dec"]
        mse = (x - x_hat).pow(2).sum(1).mean()
        sparsity = torch.zeros((), dtype=x.dtype)
        aux = torch.zeros((), dtype=x.dtype)
        l0 = (f > 0).float().sum(1).mean()
    else:
        raise SystemExit(f"sae_step.py: architecture {arch!r} has no PyTorch step here")
    return mse, sparsity, aux, l0


class Trainer:
    """Adam (beta1, beta2, eps as the case says) with the unit-norm decoder constraint."""

    def __init__(self, meta, tensors):
        self.meta = meta
        self.p = {n: t.clone().requires_grad_(True) for n, t in tensors.items()}
        self.opt = torch.optim.Adam(
            list(self.p.values()),
            lr=float(meta["lr"]),
            betas=(float(meta["beta1"]), float(meta["beta2"])),
            eps=float(meta["eps"]),
        )

    def step(self, x):
        m = self.meta
        self.opt.zero_grad(set_to_none=False)
        mse, sparsity, aux, l0 = forward_loss(m["arch"], self.p, x, m["l1_coefficient"], m["k"])
        (mse + sparsity + aux).backward()
        with torch.no_grad():
            w = self.p["W_dec"]
            g = w.grad
            unit = w / w.norm(dim=1, keepdim=True)
            g -= (g * unit).sum(1, keepdim=True) * unit
        self.opt.step()
        with torch.no_grad():
            w.div_(w.norm(dim=1, keepdim=True).clamp_min(1e-12))
        return float(mse + sparsity + aux)

    def loss(self, x):
        m = self.meta
        with torch.no_grad():
            terms = forward_loss(m["arch"], self.p, x, m["l1_coefficient"], m["k"])
        return float(terms[0] + terms[1] + terms[2])


def parallel_backend():
    info = torch.__config__.parallel_info().splitlines()
    return "; ".join(line.strip() for line in info if "backend" in line.lower() or "MKL" in line) or "?"


def close(a, r, atol, rtol):
    return abs(a - r) <= atol + rtol * abs(r)


def run_case(folder, steps):
    meta, tensors, x = load_case(folder)
    trainer = Trainer(meta, tensors)
    loss1 = trainer.loss(x)
    trainer.step(x)
    loss2 = trainer.loss(x)
    want1, want2 = meta["loss_step1"]["total"], meta["loss_step2"]["total"]
    ok = close(loss1, want1, LOSS1_ATOL, LOSS1_RTOL) and close(loss2, want2, LOSS2_ATOL, LOSS2_RTOL)
    # Timing starts again from the same tensors: warm-up, then `steps` timed steps (median).
    trainer = Trainer(meta, tensors)
    times = []
    for s in range(steps + 1):
        t0 = time.perf_counter()
        trainer.step(x)
        if s > 0:
            times.append(time.perf_counter() - t0)
    return meta, {
        "torch_loss_step1": loss1,
        "torch_loss_step2": loss2,
        "ilgpu_loss_step1": want1,
        "ilgpu_loss_step2": want2,
        "losses_agree": ok,
        "torch_seconds": statistics.median(times),
    }


def fmt(v, spec=".0f"):
    return "–" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--command", default="perf/run-vs-torch.sh")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folders = sorted(p for p in args.cases.iterdir() if (p / "case.json").exists())
    if not folders:
        raise SystemExit(f"sae_step.py: no case folders (case.json) in {args.cases}")
    rows, failures, results = [], [], []
    for folder in folders:
        meta, r = run_case(folder, args.steps)
        results.append({"case": folder.name, **meta, **r})
        b = meta["b"]
        dense = b / meta["ilgpu_dense_seconds"]
        sparse = b / meta["ilgpu_sparse_seconds"] if meta.get("ilgpu_sparse_seconds") else None
        best = max(dense, sparse or 0)
        torch_tps = b / r["torch_seconds"]
        roofline = (
            b / (meta["dense_flops"] / (meta["openblas_gflops"] * 1e9)) if meta.get("openblas_gflops") else None
        )
        rel = abs(r["torch_loss_step1"] - r["ilgpu_loss_step1"]) / abs(r["ilgpu_loss_step1"])
        rel2 = abs(r["torch_loss_step2"] - r["ilgpu_loss_step2"]) / abs(r["ilgpu_loss_step2"])
        sparsity = (
            f"k = {meta['k']}" if meta["k"] else f"{meta['active_fraction'] * 100:g} %"
        )
        print(
            f"{folder.name}: loss ILGPU {r['ilgpu_loss_step1']:.7g} / PyTorch {r['torch_loss_step1']:.7g}, "
            f"step 2 {r['ilgpu_loss_step2']:.7g} / {r['torch_loss_step2']:.7g}; tokens/s ILGPU dense {dense:.0f}, "
            f"sparse {fmt(sparse)}, PyTorch {torch_tps:.0f}, ratio {best / torch_tps:.2f}"
        )
        rows.append(
            f"| {meta['arch']} | {meta['d']}×{meta['m']}×{b} | {sparsity} | {meta['l0_step1']:.1f} | {dense:.0f} | "
            f"{fmt(sparse)} | {torch_tps:.0f} | **{best / torch_tps:.2f}×** | {dense / torch_tps:.2f}× | "
            f"{fmt(roofline)} | {rel:.1e} / {rel2:.1e} |"
        )
        if not r["losses_agree"]:
            failures.append(folder.name)
    first = results[0]
    lines = [
        f"# Training step: ILGPU vs PyTorch in the same run, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- command: `{args.command}`",
        f"- commit: {os.environ.get('ILGPUSAE_COMMIT', 'unknown')}",
        f"- ILGPU device: {first['ilgpu_device']}",
        f"- PyTorch: {torch.__version__}, CPU, {torch.get_num_threads()} threads "
        f"({parallel_backend()})",
        f"- OpenBLAS (same run, by the ILGPU half): {first.get('openblas') or 'not available'}",
        f"- note: {os.environ.get('ILGPUSAE_BENCH_NOTE', '')}",
        "- step: forward, backward, decoder-gradient projection, Adam (β1 0, β2 0.999, ε 1e-8, lr 1e-4), "
        "decoder-row renormalisation; λ 1e-3 unweighted L1 (standard, gated), no penalty for TopK; one "
        "warm-up step, median of the timed ones. Both start from the same tensors (ILGPU's initialisation, "
        "each feature's bias placed so that the active fraction of (row, feature) pairs is open).",
        "- PyTorch: autograd, dense matrix products (as SAELens and dictionary_learning train); TopK "
        "through `topk` + `scatter` into a dense code. ILGPU: dense and sparse paths, best of the two in "
        "the ratio.",
        f"- same work: the loss of step 1 and of step 2 (after one update) agree within "
        f"{LOSS1_ATOL:g} + {LOSS1_RTOL:g}·|r| and {LOSS2_ATOL:g} + {LOSS2_RTOL:g}·|r| (last column: "
        "relative differences)",
        "",
        "| arch | d×M×B | sparsity | L0 | ILGPU dense tokens/s | ILGPU sparse tokens/s | PyTorch tokens/s "
        "| ILGPU best / PyTorch | ILGPU dense / PyTorch | OpenBLAS roofline tokens/s | loss rel. diff "
        "(step 1 / 2) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        "The roofline is the dense step's FLOPs (standard 10·B·d·M, gated 14·B·d·M, TopK as standard) at the "
        "`cblas_sgemm` rate measured in the same run (B×M×d).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
        json_out = args.out.with_suffix(".json")
        json_out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"Wrote {args.out} and {json_out}")
    if failures:
        print(f"sae_step.py: the losses disagree in {', '.join(failures)}: not the same work", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
