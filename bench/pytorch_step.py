#!/usr/bin/env python3
"""The train-step benchmark of bench/train_step.ts, in PyTorch, for side-by-side numbers.

One optimizer step (forward + backward + gradient clipping at 1.0 + AdamW, lr 1e-4, weight decay
0.01, and one readback of the loss) of the same Llama shapes, batches (equal-length sequences of
random tokens) and rank as `deno task bench --only=train_step`, all seven projections adapted:

  hira       the reference's form (train_hira.py): y = x·(W0 ⊙ (1 + B·A))ᵀ, autograd through
             the materialised effective weight
  hira-peft  PEFT's form: y = x·W0ᵀ + x·(W0 ⊙ (B·A))ᵀ (the base product plus a second one)
  lora       y = x·W0ᵀ + (α/r)·x·Aᵀ·Bᵀ with α = 2r
  full       every weight trained
  peft-hira, peft-lora
             transformers' LlamaForCausalLM with peft's HiraConfig / LoraConfig, when both
             packages are installed (and peft has HiRA); skipped otherwise

Plain PyTorch (>= 1.13) is all the first four need; they run on CPU too (--device=cpu), which
is how this file is tested. Each method is timed round-robin like the Deno bench (one step of
each per round, median of --reps), after two warm-up steps.

  python3 bench/pytorch_step.py [--configs=tiny,llama-4x512] [--methods=hira,lora,...]
      [--reps=10] [--rank=32] [--device=cuda|cpu] [--dtype=float32|bfloat16] [--threads=N]
      [--json=FILE] [--ours=FILE]

--ours reads `deno task bench --json` outputs (comma-separated files; their "train_step" sections)
and prints both side by side: ms/step here, ms/step there, and their ratio. A file that is missing,
empty or not JSON (a bench run that was cut short) is reported and left out.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
METHODS = ["hira", "hira-peft", "lora", "full", "peft-hira", "peft-lora"]


def bench_configs():
    """The configs of bench/train_step.ts: HF config fields and the batch's sequence lengths."""
    with open(os.path.join(ROOT, "data_file/tiny/model/config.json")) as f:
        tiny = json.load(f)
    return {
        "tiny": (tiny, [64] * 16),
        "llama-4x512": ({
            "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4,
            "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 4096,
            "tie_word_embeddings": False,
        }, [64] * 16),
        "llama-8x2048": ({
            "hidden_size": 2048, "intermediate_size": 5504, "num_hidden_layers": 8,
            "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000,
            "tie_word_embeddings": False,
        }, [512] * 8),
    }


class Proj(torch.nn.Module):
    """One adapted projection W0 [out, in] under `method`."""

    def __init__(self, w0, method, r, gen):
        super().__init__()
        self.method = method
        out_f, in_f = w0.shape
        if method == "full":
            self.w0 = torch.nn.Parameter(w0)
            return
        self.register_buffer("w0", w0)
        bound = 1 / math.sqrt(in_f)
        a = (torch.rand(r, in_f, generator=gen) * 2 - 1) * bound
        # B is zero at init in HiRA and LoRA; small values here keep every product non-trivial.
        b = torch.randn(out_f, r, generator=gen) * 1e-3
        self.a = torch.nn.Parameter(a.to(w0))
        self.b = torch.nn.Parameter(b.to(w0))
        self.scale = 2.0  # LoRA's α/r with α = 2r

    def forward(self, x):
        m = self.method
        if m == "full":
            return F.linear(x, self.w0)
        if m == "hira":
            return F.linear(x, self.w0 * (1 + self.b @ self.a))
        if m == "hira-peft":
            return F.linear(x, self.w0) + F.linear(x, self.w0 * (self.b @ self.a))
        if m == "lora":
            return F.linear(x, self.w0) + self.scale * F.linear(F.linear(x, self.a), self.b)
        raise ValueError(m)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
    return x * cos + rot * sin


def causal_attention(q, k, v):
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v


class Llama(torch.nn.Module):
    """A plain Llama (RMSNorm, RoPE, GQA causal attention, SwiGLU) with adapted projections."""

    def __init__(self, cfg, method, r, dtype, device, seed=1):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.c = cfg["hidden_size"]
        self.f = cfg["intermediate_size"]
        self.heads = cfg["num_attention_heads"]
        self.kv = cfg.get("num_key_value_heads", self.heads)
        self.d = cfg.get("head_dim", self.c // self.heads)
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.theta = cfg.get("rope_theta", 10000.0)
        v = cfg["vocab_size"]
        full = method == "full"

        def w(o, i):
            return (torch.randn(o, i, generator=gen) * 0.02).to(dtype)

        self.embed = torch.nn.Parameter(w(v, self.c), requires_grad=full)
        self.tied = cfg.get("tie_word_embeddings", False)
        self.head = None if self.tied else torch.nn.Parameter(w(v, self.c), requires_grad=full)
        self.final_norm = torch.nn.Parameter(torch.ones(self.c, dtype=dtype), requires_grad=full)
        shapes = {
            "q_proj": (self.heads * self.d, self.c), "k_proj": (self.kv * self.d, self.c),
            "v_proj": (self.kv * self.d, self.c), "o_proj": (self.c, self.heads * self.d),
            "gate_proj": (self.f, self.c), "up_proj": (self.f, self.c),
            "down_proj": (self.c, self.f),
        }
        self.layers = torch.nn.ModuleList()
        for _ in range(cfg["num_hidden_layers"]):
            layer = torch.nn.ModuleDict(
                {p: Proj(w(*shapes[p]), method, r, gen) for p in PROJECTIONS})
            layer.norms = torch.nn.ParameterList([
                torch.nn.Parameter(torch.ones(self.c, dtype=dtype), requires_grad=full)
                for _ in range(2)
            ])
            self.layers.append(layer)
        self.to(device)

    def forward(self, tokens, targets):
        b, t = tokens.shape
        pos = torch.arange(t, device=tokens.device, dtype=torch.float32)
        inv = self.theta ** (-torch.arange(0, self.d, 2, device=tokens.device).float() / self.d)
        ang = torch.outer(pos, inv)
        ang = torch.cat((ang, ang), dim=-1)
        cos, sin = ang.cos().to(self.embed.dtype), ang.sin().to(self.embed.dtype)
        x = self.embed[tokens]
        for layer in self.layers:
            h = rms_norm(x, layer.norms[0], self.eps)
            q = layer["q_proj"](h).view(b, t, self.heads, self.d).transpose(1, 2)
            k = layer["k_proj"](h).view(b, t, self.kv, self.d).transpose(1, 2)
            v = layer["v_proj"](h).view(b, t, self.kv, self.d).transpose(1, 2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            rep = self.heads // self.kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            a = causal_attention(q, k, v).transpose(1, 2).reshape(b, t, self.heads * self.d)
            x = x + layer["o_proj"](a)
            h = rms_norm(x, layer.norms[1], self.eps)
            x = x + layer["down_proj"](F.silu(layer["gate_proj"](h)) * layer["up_proj"](h))
        x = rms_norm(x, self.final_norm, self.eps)
        logits = F.linear(x, self.embed if self.tied else self.head)
        return F.cross_entropy(logits.float().view(b * t, -1), targets.view(-1))


def peft_library_model(cfg, method, r, dtype, device):
    """transformers + peft (HiraConfig / LoraConfig), or a reason why not."""
    try:
        import peft
        import transformers
    except ImportError as e:
        return None, f"not installed ({e.name})"
    if method == "peft-hira" and not hasattr(peft, "HiraConfig"):
        return None, f"peft {peft.__version__} has no HiraConfig"
    fields = {k: v for k, v in cfg.items() if k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "vocab_size", "tie_word_embeddings", "rms_norm_eps",
        "rope_theta", "head_dim")}
    torch.manual_seed(1)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields)).to(dtype).to(device)
    if method == "peft-hira":
        pc = peft.HiraConfig(r=r, target_modules=PROJECTIONS)
    else:
        pc = peft.LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=PROJECTIONS)
    model = peft.get_peft_model(model, pc)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, tokens, targets):
            logits = self.m(input_ids=tokens).logits
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))

    return Wrapped(), f"transformers {transformers.__version__}, peft {peft.__version__}"


class Prepared:
    def __init__(self, cfg, seqs, method, r, dtype, device):
        note = None
        if method.startswith("peft-"):
            model, note = peft_library_model(cfg, method, r, dtype, device)
            if model is None:
                raise LookupError(note)
        else:
            model = Llama(cfg, method, r, dtype, device)
        self.model, self.note, self.device = model, note, device
        gen = torch.Generator().manual_seed(3)
        b, t = len(seqs), seqs[0]
        self.tokens = torch.randint(0, cfg["vocab_size"], (b, t), generator=gen).to(device)
        self.targets = torch.randint(0, cfg["vocab_size"], (b, t), generator=gen).to(device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.01)
        self.n_tokens = b * t
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.step()
        self.step()
        self.peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None

    def step(self):
        loss = self.model(self.tokens, self.targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()  # the step's one readback, as in the Deno bench


def run(args):
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    all_cfgs = bench_configs()
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "rank": args.rank,
        "configs": {},
    }
    for name in args.configs:
        cfg, seqs = all_cfgs[name]
        prepared, res = {}, {}
        for m in args.methods:
            print(f"  pytorch {name} {m}: warm-up", file=sys.stderr)
            try:
                prepared[m] = Prepared(cfg, seqs, m, args.rank, dtype, device)
            except LookupError as e:
                res[m] = {"skipped": str(e)}
        times = {m: [] for m in prepared}
        for _ in range(args.reps):
            for m, p in prepared.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                p.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[m].append((time.perf_counter() - t0) * 1000)
        for m, p in prepared.items():
            ms = statistics.median(times[m])
            res[m] = {"ms": ms, "tokens_per_s": p.n_tokens / ms * 1000, "peak_bytes": p.peak}
            if p.note:
                res[m]["stack"] = p.note
            del p.model, p.opt
        for num, den, key in (("hira", "lora", "hira_over_lora"),
                              ("hira-peft", "hira", "peft_over_hira"),
                              ("peft-hira", "peft-lora", "peft_hira_over_peft_lora")):
            if "ms" in res.get(num, {}) and "ms" in res.get(den, {}):
                res[key] = res[num]["ms"] / res[den]["ms"]
        out["configs"][name] = {"tokens": sum(seqs), "methods": res}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def table(res, ours=None):
    lines = [f"PyTorch {res['torch']} on {res['device']} ({res['dtype']}, r = {res['rank']}, "
             f"{res['threads']} CPU threads)", ""]
    head = "| config | method | PyTorch ms/step | PyTorch tokens/s | peak MiB |"
    sep = "| --- | --- | --- | --- | --- |"
    if ours:
        head += " ours ms/step | ours / PyTorch |"
        sep += " --- | --- |"
    lines += [head, sep]
    for name, c in res["configs"].items():
        for m, r in c["methods"].items():
            if not isinstance(r, dict):
                continue
            if "skipped" in r:
                blank = " | |" if ours else ""
                lines.append(f"| {name} | {m} | skipped: {r['skipped']} | | |{blank}")
                continue
            peak = f"{r['peak_bytes'] / 2**20:.1f}" if r.get("peak_bytes") else "n/a"
            row = f"| {name} | {m} | {r['ms']:.1f} | {r['tokens_per_s']:.0f} | {peak} |"
            if ours:
                o = ours.get(name, {}).get("methods", {}).get(m)
                row += f" {o['ms']:.1f} | {o['ms'] / r['ms']:.2f} |" if o else " | |"
            lines.append(row)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="tiny,llama-4x512")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--ours", help="`deno task bench --json` outputs (comma-separated)")
    args = ap.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    args.methods = [m for m in args.methods.split(",") if m]
    known = bench_configs()
    for c in args.configs:
        if c not in known:
            ap.error(f"--configs: unknown config {c!r} (known: {', '.join(known)})")
    for m in args.methods:
        if m not in METHODS:
            ap.error(f"--methods: unknown method {m!r} (known: {', '.join(METHODS)})")
    res = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
    ours = None
    if args.ours:
        ours = {}
        for path in args.ours.split(","):
            try:
                with open(path) as f:
                    ours.update(json.load(f).get("train_step", {}).get("configs", {}))
            except (OSError, ValueError) as e:
                print(f"--ours: {path}: {e}", file=sys.stderr)
    print(table(res, ours))


if __name__ == "__main__":
    main()
