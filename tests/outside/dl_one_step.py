"""Outside check of `train --mode dictionary-learning` against saprmarks/dictionary_learning's own trainers.

No dictionary_learning code is here: its trainer modules are imported from a checkout the user names
(`--dl PATH`, the folder that holds `dictionary_learning/`). Needs torch, numpy and einops.

  python3 dl_one_step.py gen CASE.json            init folder (cfg.json + sae_weights.safetensors) and x.npy
  python3 dl_one_step.py dl CASE.json --dl PATH   DL's trainer.update(step, x) for every step -> dl.npz
  python3 dl_one_step.py cmp CASE.json OURS       compare the SAE folder OURS with dl.npz (JSON on stdout)
  (dl --float64 and cmp --reference dl-float64.npz OURS|dl.npz: the float32 rounding floor of either side)

Every step of both sides trains on the same batch x (our data file holds exactly one batch).
"""

import argparse
import importlib.util
import json
import os
import struct
import sys
import types

import numpy as np
import torch as t

MODULES = [
    ("config", "config.py"),
    ("dictionary", "dictionary.py"),
    ("trainers.trainer", "trainers/trainer.py"),
    ("trainers.top_k", "trainers/top_k.py"),
    ("trainers.batch_top_k", "trainers/batch_top_k.py"),
    ("trainers.jumprelu", "trainers/jumprelu.py"),
]


def load_dl(checkout):
    """The trainer modules, without the package __init__ (which imports nnsight and more)."""
    root = os.path.join(checkout, "dictionary_learning")
    for name, path in [("dictionary_learning", root), ("dictionary_learning.trainers", os.path.join(root, "trainers"))]:
        pkg = types.ModuleType(name)
        pkg.__path__ = [path]
        sys.modules[name] = pkg
    mods = {}
    for name, path in MODULES:
        full = "dictionary_learning." + name
        spec = importlib.util.spec_from_file_location(full, os.path.join(root, path))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[full] = mod
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods


def st_write(path, tensors):
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for key in sorted(tensors):
        data = np.ascontiguousarray(tensors[key], dtype=np.float32).tobytes()
        shape = list(np.shape(tensors[key]))
        header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def st_read(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for key, v in header.items():
        if key == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[key] = np.frombuffer(raw[8 + n + s : 8 + n + e], dtype=np.float32).reshape(v["shape"]).copy()
    return out


def gen(case_path):
    c = json.load(open(case_path))
    d, m, rows, arch = c["d"], c["m"], c["batch"], c["arch"]
    rng = np.random.RandomState(c["seed"])
    w_dec = rng.randn(m, d).astype(np.float32)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)  # unit rows, as both libraries initialise
    w_enc = (w_dec.T * rng.uniform(0.8, 1.2, size=(1, m))).astype(np.float32)
    x = (rng.randn(rows, d) * rng.uniform(0.5, 1.5, size=d) + rng.randn(d) * 0.5).astype(np.float32)
    tensors = {
        "W_enc": w_enc,
        "W_dec": w_dec,
        "b_dec": (rng.randn(d) * 0.1).astype(np.float32),
        "b_enc": (rng.randn(m) * 0.05).astype(np.float32),
    }
    cfg = {
        "architecture": arch,
        "d_in": d,
        "d_sae": m,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": arch != "jumprelu",
        "normalize_activations": "none",
    }
    if arch in ("topk", "batchtopk"):
        cfg["k"] = c["k"]
    if arch == "batchtopk":
        tensors["topk_threshold"] = np.array([-1.0], np.float32)
    if arch == "jumprelu":
        lo, hi = c.get("theta_range", [0.001, 0.001])
        tensors["threshold"] = rng.uniform(lo, hi, size=m).astype(np.float32)
    here = os.path.dirname(os.path.abspath(case_path))
    os.makedirs(os.path.join(here, "init"), exist_ok=True)
    json.dump(cfg, open(os.path.join(here, "init", "cfg.json"), "w"), indent=1)
    st_write(os.path.join(here, "init", "sae_weights.safetensors"), tensors)
    np.save(os.path.join(here, "x.npy"), x)


def run_dl(case_path, checkout, float64=False):
    c = json.load(open(case_path))
    mods = load_dl(checkout)
    here = os.path.dirname(os.path.abspath(case_path))
    init = st_read(os.path.join(here, "init", "sae_weights.safetensors"))
    x = t.from_numpy(np.load(os.path.join(here, "x.npy")))
    arch, steps = c["arch"], c["steps"]
    common = dict(
        steps=steps,
        activation_dim=c["d"],
        dict_size=c["m"],
        layer=0,
        lm_name="check",
        lr=c["lr"],
        warmup_steps=c.get("lr_warmup", 0),
        device="cpu",
    )
    if arch in ("topk", "batchtopk"):
        cls = mods["trainers.top_k"].TopKTrainer if arch == "topk" else mods["trainers.batch_top_k"].BatchTopKTrainer
        trainer = cls(k=c["k"], seed=c["seed"], threshold_start_step=c.get("threshold_start", 1000), **common)
        if "dead_window" in c:
            trainer.dead_feature_threshold = c["dead_window"]  # tokens, as our --dead-window
        ae = trainer.ae
        with t.no_grad():  # nn.Linear stores the transposes
            ae.encoder.weight.copy_(t.from_numpy(init["W_enc"].T.copy()))
            ae.encoder.bias.copy_(t.from_numpy(init["b_enc"]))
            ae.decoder.weight.copy_(t.from_numpy(init["W_dec"].T.copy()))
            ae.b_dec.copy_(t.from_numpy(init["b_dec"]))

        def params():
            out = {
                "W_enc": ae.encoder.weight.detach().numpy().T,
                "b_enc": ae.encoder.bias.detach().numpy(),
                "W_dec": ae.decoder.weight.detach().numpy().T,
                "b_dec": ae.b_dec.detach().numpy(),
            }
            if arch == "batchtopk":
                out["topk_threshold"] = ae.threshold.detach().reshape(1).numpy()
            return out

    else:
        trainer = mods["trainers.jumprelu"].JumpReluTrainer(
            bandwidth=c.get("bandwidth", 0.001),
            sparsity_penalty=c.get("l0_coefficient", 1.0),
            sparsity_warmup_steps=c.get("l0_warmup", 0),
            target_l0=c.get("target_l0", 20.0),
            **common,
        )
        ae = trainer.ae
        names = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
        with t.no_grad():
            for name in names:
                getattr(ae, name).copy_(t.from_numpy(init[name]))

        def params():
            return {name: getattr(ae, name).detach().numpy() for name in names}

    if float64:  # the float-rounding floor: DL in double precision (parameters converted in place)
        ae.double()
        x = x.double()
    dead = []
    for step in range(steps):
        trainer.update(step, x.clone())
        dead.append(int(getattr(trainer, "dead_features", -1)))
    name = "dl-float64.npz" if float64 else "dl.npz"
    np.savez(os.path.join(here, name), **{k: np.array(v, np.float64 if float64 else np.float32) for k, v in params().items()})
    json.dump({"dead_per_step": dead}, open(os.path.join(here, "dl-info.json"), "w"))


def compare(case_path, ours_folder, atol=1e-6, reference="dl.npz"):
    here = os.path.dirname(os.path.abspath(case_path))
    ref = dict(np.load(os.path.join(here, reference)))
    if ours_folder.endswith(".npz"):  # another DL result, e.g. float32 against float64
        ours = dict(np.load(os.path.join(here, ours_folder)))
    else:
        ours = st_read(os.path.join(ours_folder, "sae_weights.safetensors"))
    init = st_read(os.path.join(here, "init", "sae_weights.safetensors"))
    result = {}
    for name, r in ref.items():
        a = ours[name].reshape(r.shape)
        norm = max(float(np.linalg.norm(r)), 1e-30)
        result[name] = {
            "max_rel": float(np.max(np.abs(a - r) / (atol + np.abs(r)))),
            "max_abs_over_max": float(np.abs(a - r).max() / max(float(np.abs(r).max()), 1e-30)),
            "norm_rel": float(np.linalg.norm(a - r)) / norm,
            "moved_rel": float(np.linalg.norm(r - init[name].reshape(r.shape))) / norm,
        }
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["gen", "dl", "cmp"])
    parser.add_argument("case")
    parser.add_argument("ours", nargs="?")
    parser.add_argument("--dl", help="a dictionary_learning checkout (the folder holding dictionary_learning/)")
    parser.add_argument("--float64", action="store_true", help="dl: run DL in double precision (dl-float64.npz)")
    parser.add_argument("--reference", default="dl.npz", help="cmp: the reference (dl.npz or dl-float64.npz)")
    args = parser.parse_args()
    if args.command == "gen":
        gen(args.case)
    elif args.command == "dl":
        if not args.dl:
            parser.error("dl needs --dl PATH")
        run_dl(args.case, args.dl, args.float64)
    else:
        compare(args.case, args.ours, reference=args.reference)


if __name__ == "__main__":
    main()
