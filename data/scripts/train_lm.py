#!/usr/bin/python3
"""Trains IlgpuSae's bundled test language model: a small GPT-2 on data/corpus, saved in the Hugging Face
GPT2LMHeadModel layout (config.json + model.safetensors, tied LM head), with a SentencePiece BPE
tokenizer (tokenizer.model) and golden outputs for the C# runner's tests.

One-off fixture job, not a run-time dependency: needs Debian's python3-torch, python3-sentencepiece and
python3-numpy (`apt-get install python3-torch python3-sentencepiece python3-numpy`).

    /usr/bin/python3 data/scripts/train_lm.py --minutes 25 --out data/lm

Seeded; with the same thread count and machine it retraces the same run. Hook sites are named as
TransformerLens names them: blocks.L.hook_resid_pre, blocks.L.hook_resid_post, blocks.L.hook_mlp_out,
blocks.L.attn.hook_z (heads concatenated, before W_O) and blocks.L.mlp.hook_post (after GELU).
"""
import argparse
import gzip
import json
import math
import os
import struct
import tempfile
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F

SEED = 1234


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class Gpt2(torch.nn.Module):
    """GPT-2 with HF parameter names (Conv1D weights stored [in, out])."""

    def __init__(self, vocab, ctx, d, layers, heads):
        super().__init__()
        self.d, self.heads, self.layers = d, heads, layers
        p = {}
        std = 0.02
        p["wte.weight"] = torch.nn.Parameter(torch.randn(vocab, d) * std)
        p["wpe.weight"] = torch.nn.Parameter(torch.randn(ctx, d) * 0.01)
        for l in range(layers):
            h = f"h.{l}."
            p[h + "ln_1.weight"], p[h + "ln_1.bias"] = torch.nn.Parameter(torch.ones(d)), torch.nn.Parameter(torch.zeros(d))
            p[h + "attn.c_attn.weight"] = torch.nn.Parameter(torch.randn(d, 3 * d) * std)
            p[h + "attn.c_attn.bias"] = torch.nn.Parameter(torch.zeros(3 * d))
            p[h + "attn.c_proj.weight"] = torch.nn.Parameter(torch.randn(d, d) * std / math.sqrt(2 * layers))
            p[h + "attn.c_proj.bias"] = torch.nn.Parameter(torch.zeros(d))
            p[h + "ln_2.weight"], p[h + "ln_2.bias"] = torch.nn.Parameter(torch.ones(d)), torch.nn.Parameter(torch.zeros(d))
            p[h + "mlp.c_fc.weight"] = torch.nn.Parameter(torch.randn(d, 4 * d) * std)
            p[h + "mlp.c_fc.bias"] = torch.nn.Parameter(torch.zeros(4 * d))
            p[h + "mlp.c_proj.weight"] = torch.nn.Parameter(torch.randn(4 * d, d) * std / math.sqrt(2 * layers))
            p[h + "mlp.c_proj.bias"] = torch.nn.Parameter(torch.zeros(d))
        p["ln_f.weight"], p["ln_f.bias"] = torch.nn.Parameter(torch.ones(d)), torch.nn.Parameter(torch.zeros(d))
        # Module parameter names may not contain '.', so keep the HF names beside a ParameterList.
        self.names = list(p.keys())
        self.params = torch.nn.ParameterList([p[k] for k in self.names])

    def state(self):
        return {k: v for k, v in zip(self.names, self.params)}

    def forward(self, ids, hooks=None, replace=None):
        """ids [B, T]. hooks: dict to fill with site activations. replace: {site: fn(tensor) -> tensor}."""
        w = self.state()
        B, T = ids.shape
        d, H = self.d, self.heads

        def site(name, value):
            if replace is not None and name in replace:
                value = replace[name](value)
            if hooks is not None:
                hooks[name] = value.detach()
            return value

        x = w["wte.weight"][ids] + w["wpe.weight"][:T]
        mask = torch.full((T, T), float("-inf")).triu(1)
        for l in range(self.layers):
            h = f"h.{l}."
            x = site(f"blocks.{l}.hook_resid_pre", x)
            a = F.layer_norm(x, (d,), w[h + "ln_1.weight"], w[h + "ln_1.bias"], 1e-5)
            qkv = a @ w[h + "attn.c_attn.weight"] + w[h + "attn.c_attn.bias"]
            q, k, v = qkv.split(d, dim=-1)
            q, k, v = (t.view(B, T, H, d // H).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / math.sqrt(d // H) + mask
            z = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
            z = site(f"blocks.{l}.attn.hook_z", z)
            x = x + z @ w[h + "attn.c_proj.weight"] + w[h + "attn.c_proj.bias"]
            m = F.layer_norm(x, (d,), w[h + "ln_2.weight"], w[h + "ln_2.bias"], 1e-5)
            post = site(f"blocks.{l}.mlp.hook_post", gelu_new(m @ w[h + "mlp.c_fc.weight"] + w[h + "mlp.c_fc.bias"]))
            out = site(f"blocks.{l}.hook_mlp_out", post @ w[h + "mlp.c_proj.weight"] + w[h + "mlp.c_proj.bias"])
            x = site(f"blocks.{l}.hook_resid_post", x + out)
        x = F.layer_norm(x, (d,), w["ln_f.weight"], w["ln_f.bias"], 1e-5)
        return x @ w["wte.weight"].T


def save_safetensors(path, tensors, metadata=None):
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        dtype = {np.float32: "F32", np.int64: "I64", np.int32: "I32"}[arr.dtype.type]
        data = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--out", default="data/lm")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--minutes", type=float, default=25)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    train_text = gzip.open(os.path.join(args.corpus, "train.txt.gz"), "rt", encoding="utf-8").read()
    held_text = gzip.open(os.path.join(args.corpus, "heldout.txt.gz"), "rt", encoding="utf-8").read()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(train_text)
        train_file = f.name
    spm.SentencePieceTrainer.train(
        input=train_file, model_prefix=os.path.join(args.out, "tokenizer"), vocab_size=args.vocab, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        normalization_rule_name="identity", num_threads=1, split_digits=True, input_sentence_size=0,
        max_sentence_length=100000)
    os.remove(train_file)
    os.remove(os.path.join(args.out, "tokenizer.vocab"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.out, "tokenizer.model"))

    def encode(text):
        ids = []
        for doc in text.split("\n\n"):
            if doc.strip():
                ids.append(sp.bos_id())
                ids.extend(sp.encode(doc))
        return torch.tensor(ids, dtype=torch.long)

    train_ids, held_ids = encode(train_text), encode(held_text)
    model = Gpt2(args.vocab, args.ctx, args.d, args.layers, args.heads)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)

    def batches(ids, n, gen):
        starts = torch.randint(0, len(ids) - args.ctx - 1, (n,), generator=gen)
        x = torch.stack([ids[s:s + args.ctx] for s in starts])
        y = torch.stack([ids[s + 1:s + args.ctx + 1] for s in starts])
        return x, y

    def held_loss(n_batches=40):
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            losses = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
                      for x, y in (batches(held_ids, args.batch, gen) for _ in range(n_batches))]
        return sum(losses) / len(losses)

    gen = torch.Generator().manual_seed(SEED)
    log, start, step = [], time.time(), 0
    budget = args.minutes * 60
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batches(train_ids, args.batch, gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0:
            entry = {"step": step, "tokens": step * args.batch * args.ctx, "train_loss": loss.item(),
                     "heldout_loss": held_loss(10), "seconds": round(time.time() - start, 1)}
            log.append(entry)
            print(json.dumps(entry), flush=True)

    final = held_loss(100)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state().items()}
    save_safetensors(os.path.join(args.out, "model.safetensors"), state, {"format": "pt"})
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": args.vocab,
        "n_positions": args.ctx, "n_ctx": args.ctx, "n_embd": args.d, "n_layer": args.layers, "n_head": args.heads,
        "n_inner": 4 * args.d, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True, "bos_token_id": sp.bos_id(), "eos_token_id": sp.eos_id(),
        "tokenizer_class": "SentencePiece", "torch_dtype": "float32",
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    # Golden outputs: fixed sequences from the held-out text, with logits, every hook site, and the
    # clean and zero-ablated next-token losses (all positions after BOS counted).
    gen = torch.Generator().manual_seed(99)
    seqs = torch.stack([held_ids[s:s + 32] for s in torch.randint(0, len(held_ids) - 33, (3,), generator=gen)])
    seqs[:, 0] = sp.bos_id()
    golden = {"input_ids": seqs.numpy().astype(np.int64)}
    hooks = {}
    with torch.no_grad():
        logits = model(seqs, hooks=hooks)
        golden["logits"] = logits.numpy()
        for name, value in hooks.items():
            golden[name] = value.numpy().astype(np.float32)

        def ce(lg):
            return F.cross_entropy(lg[:, :-1].flatten(0, 1), seqs[:, 1:].flatten()).item()

        ablations = {"clean": ce(logits)}
        for name in hooks:
            ablations["zero:" + name] = ce(model(seqs, replace={name: torch.zeros_like}))
    save_safetensors(os.path.join(args.out, "golden.safetensors"), golden, {"losses": json.dumps(ablations)})
    report = {"steps": step, "tokens": step * args.batch * args.ctx, "train_tokens": len(train_ids),
              "heldout_tokens": len(held_ids), "final_heldout_loss": final, "minutes": args.minutes,
              "parameters": int(sum(v.size for v in state.values())), "golden_losses": ablations, "log": log}
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(json.dumps({k: v for k, v in report.items() if k != "log"}, indent=2))


if __name__ == "__main__":
    main()
