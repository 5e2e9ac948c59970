"""Issue 13, item 3: int8 weights (model/quantize.py) measured, not assumed — accuracy and decode speed.

For each model, four variants of the same weights: fp32, bf16, int8 quantized from the bf16 weights
(what `--quantize int8` does to a bf16 checkpoint) and int8 quantized from fp32 (an fp32 checkpoint).
On held-out text each variant is scored two ways, teacher-forced:
  prefill  the full forward (`model(ids)`; int8 layers take their dequantize-then-GEMM path)
  decode   `prefill` of the first token, then one `step` per token (the int8 op, bf16 activations)
and reports, over the scored positions: perplexity, next-token top-1 agreement with fp32 and with
bf16 (argmax equal), and the logits' scale-relative error against fp32. Then the decode step's time
at batch 1 (median of rounds that interleave the variants, so a burst of other load lands on all),
its weight bytes and the rate they stream at. A last section times one product of the 4096 × 1024
shape alone: the numbers model/quantize.py's docstring cites.

Models:
  --demo-run DIR   the Mamba-2 a `pcm demo` run trained (its last phase's hf/ folder), scored on the
                   run's held-out problems (data/test_*.jsonl) with their reference worked solutions
                   (demo/domain.py), rendered as in training (ChatML user turn, then the response);
                   only the response's tokens are scored, as only they were trained
  --model DIR      any model folder, scored on `--text FILE` (lines of text; tokenized with the
                   folder's tokenizer)
  --random H,L     random weights, hidden H and L layers, the other settings of mamba2-130m (vocab
                   50,288, tied head): scored on uniformly random token ids (seeded). A random model's
                   perplexity is near the vocabulary size; what it shows is the change.

    python benchmarks/bench_quantize.py --demo-run runs/demo --random 1024,16 \\
        --out benchmarks/results/quantize-cpu.json      # scoring on 1 thread; the step at 1 and 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from promptcot_mamba import Mamba2LM, named_config
from promptcot_mamba.common.tolerances import rel_err
from promptcot_mamba.model.quantize import weight_bytes

VARIANTS = ("fp32", "bf16", "int8", "int8-from-fp32")


def variants(model: Mamba2LM) -> dict[str, Mamba2LM]:
    """The four variants of one model's weights (copies; `model` is fp32)."""
    def copy(dtype):
        twin = Mamba2LM(model.config).to(dtype).eval()
        twin.load_state_dict(model.state_dict())
        if model.config.tie_word_embeddings:
            twin.lm_head.weight = twin.backbone.embeddings.weight
        twin.tokenizer = model.tokenizer
        return twin

    out = {"fp32": copy(torch.float32), "bf16": copy(torch.bfloat16)}
    out["int8"] = copy(torch.bfloat16).quantize("int8")
    out["int8-from-fp32"] = copy(torch.float32).quantize("int8")
    return out


# ------------------------------------------------------------------------------------------ text
def demo_text(run: Path):
    """(model folder, [(ids, n_prompt)]): the demo's trained Mamba-2 and its held-out problems."""
    from promptcot_mamba.demo.domain import parse_problem
    from promptcot_mamba.text.prompts import MATH_SUFFIX
    from promptcot_mamba.train.examples import Renderer

    phases = sorted((run / "train" / "mamba2" / "phases").glob("*/hf"))
    if not phases:
        raise SystemExit(f"{run}: no train/mamba2/phases/*/hf (is it a pcm demo run folder?)")
    folder = phases[-1]
    model = Mamba2LM.from_pretrained(folder, dtype="float32")
    r = Renderer(model.tokenizer)
    seqs = []
    for f in sorted((run / "data").glob("test_*.jsonl")):
        for line in f.read_text().splitlines():
            problem = parse_problem(json.loads(line)["problem"])
            p = model.tokenizer.encode(r.prompt_text(problem.problem + MATH_SUFFIX))
            c = model.tokenizer.encode(r.completion_text(problem.solution()))
            seqs.append((p + c, len(p)))
    return folder, model, seqs


def file_text(folder: Path, path: Path, max_tokens: int):
    model = Mamba2LM.from_pretrained(folder, dtype="float32")
    if model.tokenizer is None:
        raise SystemExit(f"{folder}: no tokenizer.json to tokenize {path}")
    seqs = [(model.tokenizer.encode(t)[:max_tokens], 1) for t in path.read_text().splitlines() if t.strip()]
    return model, [(ids, n) for ids, n in seqs if len(ids) > 1]


def random_model(hidden: int, layers: int, n_seqs: int, length: int, seed: int = 0):
    cfg = named_config("mamba2-130m", hidden_size=hidden, num_hidden_layers=layers, num_heads=2 * hidden // 64)
    torch.manual_seed(seed)
    model = Mamba2LM(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    seqs = [(torch.randint(0, cfg.vocab_size, (length,), generator=g).tolist(), 1) for _ in range(n_seqs)]
    return model, seqs


# ------------------------------------------------------------------------------------------ scoring
@torch.no_grad()
def logits_prefill(model, ids: list[int]) -> torch.Tensor:
    return model(torch.tensor([ids])).logits[0, :-1].float()  # (T-1, V): predictions of ids[1:]


@torch.no_grad()
def logits_decode(model, ids: list[int]) -> torch.Tensor:
    last, state = model.prefill(torch.tensor([ids[:1]]))
    out = [last[0]]
    for t in ids[1:-1]:
        out.append(model.step(torch.tensor([t]), state)[0])
    return torch.stack(out).float()


def score(models: dict, seqs, path: str, max_positions: int) -> dict:
    """Per variant: perplexity over the scored positions, top-1 agreement with fp32 and bf16, and the
    logits' scale-relative error against fp32 (the worst sequence)."""
    fn = logits_prefill if path == "prefill" else logits_decode
    nll = {k: 0.0 for k in models}
    agree = {k: {"fp32": 0, "bf16": 0} for k in models}
    err = {k: 0.0 for k in models}
    n = 0
    for ids, n_prompt in seqs:
        if n >= max_positions:
            break
        targets = torch.tensor(ids[1:])
        lo = n_prompt - 1  # position lo predicts the first scored token
        logits = {k: fn(m, ids)[lo:] for k, m in models.items()}
        tgt = targets[lo:]
        top = {k: v.argmax(-1) for k, v in logits.items()}
        for k, v in logits.items():
            nll[k] += float(F.cross_entropy(v, tgt, reduction="sum"))
            agree[k]["fp32"] += int((top[k] == top["fp32"]).sum())
            agree[k]["bf16"] += int((top[k] == top["bf16"]).sum())
            err[k] = max(err[k], rel_err(v, logits["fp32"]))
        n += len(tgt)
    return {"positions": n, **{k: {"perplexity": math.exp(nll[k] / n), "nll_per_token": nll[k] / n,
                                   "top1_agreement_with_fp32": agree[k]["fp32"] / n,
                                   "top1_agreement_with_bf16": agree[k]["bf16"] / n,
                                   "logits_rel_err_vs_fp32": err[k]} for k in models}}


# ------------------------------------------------------------------------------------------ speed
@torch.no_grad()
def step_times(models: dict, rounds: int, steps: int) -> dict:
    """Median ms per batch-1 step, rounds interleaving the variants (warm-up excluded)."""
    states = {}
    for k, m in models.items():
        _, states[k] = m.prefill(torch.tensor([[1, 2, 3, 4]]))
        for _ in range(3):
            m.step(torch.tensor([5]), states[k])  # warm-up: oneDNN's first call, allocations
    times = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            tok = torch.tensor([5])
            t = time.perf_counter()
            for _ in range(steps):
                m.step(tok, states[k])
            times[k].append((time.perf_counter() - t) / steps * 1e3)
    out = {}
    for k, m in models.items():
        read = weight_bytes(m) - weight_bytes(m.backbone.embeddings)  # a step reads one embedding row
        if m.config.tie_word_embeddings and not m.quantization:
            read += weight_bytes(m.backbone.embeddings)  # the tied head reads the whole matrix
        ms = statistics.median(times[k])
        out[k] = {"step_ms": ms, "step_ms_min": min(times[k]), "weight_bytes": weight_bytes(m),
                  "bytes_read_per_step": read, "stream_gb_s": read / (ms / 1e3) / 1e9}
    return out


def op_times() -> dict:
    """One 4096 × 1024 product: F.linear against the int8 op per dtype, and Int8Linear's two paths."""
    from promptcot_mamba.model.quantize import Int8Linear

    def t(f, n):
        f()
        best = float("inf")
        for _ in range(3):
            s = time.perf_counter()
            for _ in range(n):
                f()
            best = min(best, (time.perf_counter() - s) / n)
        return best * 1e3

    g = torch.Generator().manual_seed(0)
    N, K = 4096, 1024
    w32 = torch.randn(N, K, generator=g)
    q = torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int8)
    out = {"shape": [N, K]}
    for rows in (1, 256):
        n = 20 if rows == 1 else 2
        for dt, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16"), (torch.float16, "fp16")):
            x, w, s = torch.randn(rows, K, generator=g).to(dt), w32.to(dt), torch.rand(N, generator=g).to(dt)
            out[f"rows{rows}_linear_{name}_ms"] = t(lambda x=x, w=w: F.linear(x, w), n)
            if rows == 1 or dt == torch.bfloat16:  # the scalar fp32/fp16 paths take seconds at 256 rows
                out[f"rows{rows}_int8op_{name}_ms"] = t(lambda x=x, s=s: torch.ops.aten._weight_int8pack_mm(x, q, s), n)
            lin = torch.nn.Linear(K, N, bias=False).to(dt)
            layer = Int8Linear.from_linear(lin)
            with torch.no_grad():
                out[f"rows{rows}_Int8Linear_{name}_ms"] = t(lambda x=x, layer=layer: layer(x), n)
    return out


# ------------------------------------------------------------------------------------------ main
def run_one(name: str, source: str, model: Mamba2LM, seqs, args) -> dict:
    c = model.config
    print(f"{name}: hidden {c.hidden_size}, {c.num_hidden_layers} layers, vocab {c.vocab_size}, "
          f"tied {c.tie_word_embeddings}, {model.num_parameters():,} parameters; {len(seqs)} sequences", flush=True)
    models = variants(model)
    del model
    row = {"name": name, "source": source, "config": {"hidden_size": c.hidden_size, "layers": c.num_hidden_layers,
                                                       "vocab_size": c.vocab_size, "tied": c.tie_word_embeddings},
           "parameters": models["fp32"].num_parameters()}
    for path in ("prefill", "decode"):
        t = time.perf_counter()
        row[path] = score(models, seqs, path, args.decode_positions if path == "decode" else 10**9)
        print(f"  {path} ({row[path]['positions']} positions, {time.perf_counter() - t:.0f} s): "
              + "; ".join(f"{k} ppl {v['perplexity']:.4g} top1=fp32 {v['top1_agreement_with_fp32']:.4f} "
                          f"top1=bf16 {v['top1_agreement_with_bf16']:.4f}"
                          for k, v in row[path].items() if k != "positions"), flush=True)
    row["step"] = {}
    for n in args.step_threads:
        torch.set_num_threads(n)
        row["step"][f"threads={n}"] = st = step_times(models, args.rounds, args.steps)
        print(f"  step at batch 1, {n} thread(s): " + "; ".join(
            f"{k} {v['step_ms']:.3f} ms ({v['stream_gb_s']:.1f} GB/s)" for k, v in st.items()), flush=True)
    torch.set_num_threads(args.threads)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo-run", type=Path, action="append", default=[])
    p.add_argument("--model", type=Path, action="append", default=[])
    p.add_argument("--text", type=Path, default=None, help="held-out text for --model, one document a line")
    p.add_argument("--random", action="append", default=[], metavar="HIDDEN,LAYERS")
    p.add_argument("--random-seqs", type=int, default=4)
    p.add_argument("--random-length", type=int, default=256)
    p.add_argument("--decode-positions", type=int, default=4096, help="positions scored through step (slower)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="steps per round")
    p.add_argument("--threads", type=int, default=1, help="torch threads for scoring and the product timings")
    p.add_argument("--step-threads", default="1,2", help="thread counts the decode step is timed at")
    p.add_argument("--no-ops", action="store_true", help="skip the single-product timings")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/quantize-cpu.json"))
    args = p.parse_args()
    if args.model and args.text is None:
        p.error("--model needs --text (held-out text to score)")
    args.step_threads = [int(n) for n in args.step_threads.split(",")]
    torch.set_num_threads(args.threads)
    t0, load0 = time.time(), os.getloadavg()
    rows = []
    for run in args.demo_run:
        folder, model, seqs = demo_text(run)
        rows.append(run_one("demo-mamba2", f"{folder} on {run}/data/test_*.jsonl (reference solutions)",
                            model, seqs, args))
    for folder in args.model:
        model, seqs = file_text(folder, args.text, 4096)
        rows.append(run_one(folder.name, f"{folder} on {args.text}", model, seqs, args))
    for spec in args.random:
        h, n_layers = (int(x) for x in spec.split(","))
        model, seqs = random_model(h, n_layers, args.random_seqs, args.random_length)
        rows.append(run_one(f"random-h{h}-l{n_layers}", "random weights (seed 0) on uniformly random token ids",
                            model, seqs, args))
    ops = None if args.no_ops else op_times()
    if ops:
        print("  one 4096x1024 product: " + json.dumps({k: round(v, 3) for k, v in ops.items() if k != "shape"}))
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv), "torch": torch.__version__,
              "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                          "torch_threads": torch.get_num_threads(), "load_average_at_start": load0,
                          "load_average_at_end": os.getloadavg()},
              "seconds": round(time.time() - t0, 1), "models": rows, "ops": ops}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
