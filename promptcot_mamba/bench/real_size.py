"""`pcm bench real-size`: the checkpoints users load (mamba2-2.7b, Mamba-Codestral-7B shapes) on this machine.

Random-weight checkpoints of those exact shapes, in the Hugging Face format (bf16, sharded safetensors),
are written once into a cache folder outside the repository (`--cache`, default
`~/.cache/promptcot-mamba/real-size`). Each (implementation, dtype) then runs in its own process, so
load time and peak RSS are that run's alone:

    ours   Mamba2LM.from_pretrained(folder, dtype=...) in bf16, float32 or bf16 + int8 weights
    hf     transformers' Mamba2ForCausalLM (its PyTorch path) in bf16

and records: load time, prefill of a `prompt`-token prompt (batch 1; the first call, which also pages
in lazily mapped weights, and a second), greedy decode at batch 1 and at batch 8 (seconds per step,
median over the steps after a warm-up), peak RSS against the weights and the decoded states, the
first greedy tokens, and next-token top-1 agreement and perplexity over the prompt, teacher-forced,
against the reference run (our float32 where memory allows) and against our bf16. The checkpoint is
read into the page cache before each run, so no run pays for the disk. In the same run the parent measures the machine's read bandwidth (a 1 GiB fp32 sum, the best
of several) and the bandwidth a bf16 GEMV reaches at the shape's in_proj, and reports each decode step
against its floor: the bytes of the weights a step reads (every layer, the norms and the LM head) divided
by the measured bandwidth. Greedy tokens are compared with a float32 run of ours where memory allows.

The same command runs unchanged on a GPU (`--device cuda`); there the floor uses the GPU's measured
copy bandwidth.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

SHAPES = {"2.7b": "mamba2-2.7b", "7b": "mamba-codestral-7b"}
DEFAULT_CACHE = Path(os.environ.get("PCM_REAL_SIZE_CACHE", Path.home() / ".cache" / "promptcot-mamba" / "real-size"))
GB = 1e9
DECODE_PROMPT = 16  # prompt tokens before the timed decode steps


# --------------------------------------------------------------------------------- checkpoints
def write_random_checkpoint(shape: str, folder: Path, *, shard_bytes: int = 2 * 2**30, seed: int = 0) -> Path:
    """A random-weight bf16 checkpoint of a named shape in the transformers format, written layer by
    layer (never more than one layer in memory beyond the current shard). The weights follow the
    model's own initialisation, so activations stay in a realistic range over 64 layers."""
    from safetensors.torch import save_file

    from promptcot_mamba.common.files import atomic_write_text
    from promptcot_mamba.model.config import named_config
    from promptcot_mamba.model.lm import Mamba2Block

    config = named_config(SHAPES.get(shape, shape))
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    dtype = torch.bfloat16

    def pieces():
        emb = torch.empty(config.vocab_size, config.hidden_size).normal_(std=config.initializer_range)
        yield "backbone.embeddings.weight", emb.to(dtype)
        for i in range(config.num_hidden_layers):
            block = Mamba2Block(config, i)
            for k, v in block.state_dict().items():
                yield f"backbone.layers.{i}.{k}", v.to(dtype).contiguous()
        yield "backbone.norm_f.weight", torch.ones(config.hidden_size, dtype=dtype)
        if not config.tie_word_embeddings:
            head = torch.empty(config.vocab_size, config.hidden_size).normal_(std=config.initializer_range)
            yield "lm_head.weight", head.to(dtype)

    shard: dict[str, torch.Tensor] = {}
    names, weight_map, size, total = [], {}, 0, 0

    def flush():
        nonlocal shard, size
        name = f"model-{len(names) + 1:05d}.safetensors"  # renamed below once the count is known
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        names.append((name, list(shard)))
        shard, size = {}, 0

    for key, t in pieces():
        nbytes = t.numel() * t.element_size()
        if shard and size + nbytes > shard_bytes:
            flush()
        shard[key] = t
        size += nbytes
        total += nbytes
    flush()
    for i, (name, keys) in enumerate(names, 1):
        final = f"model-{i:05d}-of-{len(names):05d}.safetensors"
        (folder / name).rename(folder / final)
        weight_map.update({k: final for k in keys})
    atomic_write_text(folder / "model.safetensors.index.json",
                      json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    hf = config.to_hf_dict()
    hf["torch_dtype"] = "bfloat16"
    atomic_write_text(folder / "config.json", json.dumps(hf, indent=2))  # last: marks the folder complete
    return folder


def decode_weight_bytes(config, itemsize: float) -> float:
    """Bytes a decode step reads from the weights: every layer, the final norm and the LM head (the
    embedding table only through the LM head when tied; a lookup reads one row)."""
    n = config.num_parameters() - (0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size)
    return n * itemsize


# ------------------------------------------------------------------------------ the hardware floor
def read_bandwidth(device: str = "cpu", gib: float = 1.0, reps: int = 7) -> float:
    """Bytes/s of a plain sum over `gib` GiB of fp32 (the best of `reps`): what streaming weights can reach."""
    x = torch.ones(int(gib * 2**30) // 4, device=device)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        x.sum()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best


def gemv_bandwidth(rows: int, cols: int, dtype: torch.dtype = torch.bfloat16, device: str = "cpu",
                   reps: int = 3, total_gib: float = 1.0) -> float:
    """Bytes/s of the weight read in a batch-1 `F.linear` at one projection's shape, cycling through
    copies of the weight that add up to `total_gib` so that they come from memory, not from a cache
    (one 2.7B in_proj, 54 MB, fits this CPU's 260 MB L3; the best of `reps` passes)."""
    w0 = torch.randn(rows, cols, device=device).to(dtype)
    ws = [w0.clone() for _ in range(max(2, int(total_gib * 2**30 // (w0.numel() * w0.element_size()))))]
    x = torch.randn(1, cols, device=device).to(dtype)
    torch.nn.functional.linear(x, ws[0])
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        for w in ws:
            torch.nn.functional.linear(x, w)
        _sync(device)
        best = min(best, (time.perf_counter() - t) / len(ws))
    return w0.numel() * w0.element_size() / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------- a run
def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB  # Linux: KiB


def run_one(impl: str, dtype: str, folder: Path, *, prompt: int, steps: int, batch: int, device: str,
            reference: list[int] | None = None) -> dict:
    """One process's measurements (called in a child: `python -m promptcot_mamba.bench.real_size --worker`)."""
    torch.manual_seed(0)
    tdtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "int8": torch.bfloat16}[dtype]
    out: dict = {"impl": impl, "dtype": dtype, "batch": batch, "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    if impl == "ours":
        from promptcot_mamba.model.lm import Mamba2LM

        # int8: quantized while loading (model/quantize.py), as `--quantize int8` does
        model = Mamba2LM.from_pretrained(folder, dtype=tdtype, device=device,
                                         quantize="int8" if dtype == "int8" else None)
    else:
        import transformers

        transformers.logging.set_verbosity_error()
        model = transformers.Mamba2ForCausalLM.from_pretrained(folder, dtype=tdtype).to(device)
    model.eval()
    _sync(device)
    out["load_s"] = time.perf_counter() - t0
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}.values()
    out["model_gb"] = sum(t.numel() * t.element_size() for t in tensors) / GB
    c = model.config  # the fp32 SSM states and conv windows of the largest batch decoded
    d_inner = c.expand * c.hidden_size
    per_seq = c.num_hidden_layers * (d_inner // c.head_dim * c.head_dim * c.state_size * 4
                                     + (d_inner + 2 * c.n_groups * c.state_size) * c.conv_kernel * 2)
    out["states_gb"] = batch * per_seq / GB
    out["rss_after_load_gb"] = _rss_gb()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, prompt), generator=g).to(device)
    with torch.inference_mode():
        # prefill at batch 1 (the first row), twice: the first call also pages in weights that the
        # load mapped lazily (both libraries map safetensors files), the second is the steady speed
        for key in ("prefill_first_s", "prefill_s"):
            t0 = time.perf_counter()
            if impl == "ours":
                model.prefill(ids[:1])
            else:
                model(ids[:1], use_cache=True, logits_to_keep=1)
            _sync(device)
            out[key] = time.perf_counter() - t0
        out["prefill_tokens"] = prompt
        # next-token predictions over the whole prompt, teacher-forced: top-1 and the mean negative
        # log-likelihood of the prompt's own next tokens (random ids: what matters is the change)
        logits = model(ids[:1]).logits[0, :-1].float()  # (prompt - 1, vocab)
        out["prompt_argmax"] = logits.argmax(-1).tolist()
        out["prompt_nll"] = float(torch.nn.functional.cross_entropy(logits, ids[0, 1:]))
        del logits
        for b in (1, batch):
            # decode after a short prompt: a step's cost does not depend on the context (fixed state)
            times, tokens = _decode(impl, model, ids[:b, :DECODE_PROMPT], steps, device)
            key = f"decode_b{b}"
            out[key + "_step_s"] = statistics.median(times[1:]) if len(times) > 1 else times[0]
            out[key + "_step_times"] = times
            out[key + "_tokens_per_s"] = b / out[key + "_step_s"]
            if b == 1:
                out["greedy_tokens"] = tokens
        # teacher forcing: every run scores the same tokens (the reference run's greedy ones, or its
        # own), so agreement is counted position by position, not ended by the first near-tie
        forced = reference if reference else out["greedy_tokens"]
        seq = torch.cat([ids[:1, :DECODE_PROMPT], torch.tensor([forced[:-1]], device=ids.device)], 1)
        logits = model(seq).logits[0, DECODE_PROMPT - 1:].float()  # (len(forced), vocab)
        top2 = logits.topk(2, -1)
        out["forced_argmax"] = top2.indices[:, 0].tolist()
        out["forced_margin"] = (top2.values[:, 0] - top2.values[:, 1]).tolist()  # top-1 minus top-2 logit
        out["forced_tokens"] = list(forced)
    out["peak_rss_gb"] = _rss_gb()
    return out


def _decode(impl: str, model, ids: torch.Tensor, steps: int, device: str) -> tuple[list[float], list[int]]:
    """Greedy decode `steps` tokens after `ids` (b, T); the seconds of each step and row 0's tokens."""
    times: list[float] = []
    if impl == "ours":
        logits, state = model.prefill(ids)
        tok = logits.argmax(-1)
        tokens = [int(tok[0])]
        for _ in range(steps):
            _sync(device)
            t = time.perf_counter()
            tok = model.step(tok, state).argmax(-1)
            _sync(device)
            times.append(time.perf_counter() - t)
            tokens.append(int(tok[0]))
        return times, tokens

    # transformers: its own generate loop, one token a step; a streamer stamps each token's arrival
    class Stamp:
        def __init__(self):
            self.t: list[float] = []

        def put(self, value):
            _sync(device)
            self.t.append(time.perf_counter())

        def end(self):
            pass

    stamp = Stamp()  # generate hands every step's tokens (b,) to put(); this streamer does not mind b > 1
    gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps + 1,
                         min_new_tokens=steps + 1, do_sample=False, streamer=stamp, pad_token_id=0)
    arrivals = stamp.t[1:]  # the first put is the prompt itself; the second ends the prefill
    times = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return times, [int(v) for v in gen[0, ids.shape[1]:]]


# ---------------------------------------------------------------------------------- the driver
def _child(impl: str, dtype: str, folder: Path, args, reference: list[int] | None = None) -> dict:
    cmd = [sys.executable, "-m", "promptcot_mamba.bench.real_size", "--worker", impl, dtype, str(folder),
           "--prompt", str(args.prompt), "--steps", str(args.steps), "--batch", str(args.batch),
           "--device", args.device]
    if reference:
        cmd += ["--reference", ",".join(map(str, reference))]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        return {"impl": impl, "dtype": dtype, "error": " | ".join(tail)}
    return json.loads(p.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    from promptcot_mamba.bench.report import machine_info
    from promptcot_mamba.model.config import named_config

    result: dict = {"machine": machine_info(args.device), "prompt": args.prompt, "steps": args.steps,
                    "batch": args.batch, "cache": str(args.cache), "shapes": {}}
    mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    for shape in args.shapes:
        config = named_config(SHAPES.get(shape, shape))
        folder = Path(args.cache) / shape
        t0 = time.perf_counter()
        if not (folder / "config.json").is_file():
            print(f"[{shape}] writing a random bf16 checkpoint to {folder} ...", flush=True)
        write_random_checkpoint(shape, folder)
        bw = read_bandwidth(args.device)
        gemv = gemv_bandwidth(config.in_proj_dim, config.hidden_size, device=args.device)
        r: dict = {"config": SHAPES.get(shape, shape), "parameters": config.num_parameters(),
                   "checkpoint_s": time.perf_counter() - t0,
                   "read_bandwidth_gb_s": bw / GB, "bf16_gemv_bandwidth_gb_s": gemv / GB, "runs": []}
        print(f"[{shape}] read {bw / GB:.1f} GB/s, bf16 GEMV at in_proj {gemv / GB:.1f} GB/s", flush=True)
        reference: list[int] | None = None  # the first run's greedy tokens (ours:fp32 goes first when asked)
        for impl, dtype in sorted(args.runs, key=lambda r: r != ("ours", "fp32")):
            itemsize = {"bf16": 2, "fp32": 4, "int8": 1}[dtype]
            if config.num_parameters() * itemsize / GB > 0.8 * mem_total:
                r["runs"].append({"impl": impl, "dtype": dtype, "skipped": f"needs {config.num_parameters() * itemsize / GB:.1f} GB "
                                  f"of weights, the machine has {mem_total:.1f} GB"})
                continue
            _warm_page_cache(folder)  # every run starts with the checkpoint in the page cache, none from disk
            one = _child(impl, dtype, folder, args, reference)
            if "error" not in one and reference is None:
                reference = one["greedy_tokens"]
                r["reference"] = f"{impl}:{dtype}"
            if "error" not in one:
                floor = decode_weight_bytes(config, itemsize) / bw
                one["decode_floor_s"] = floor
                one["decode_b1_vs_floor"] = one["decode_b1_step_s"] / floor
                one["decode_b8_vs_b1"] = one[f"decode_b{args.batch}_step_s"] / one["decode_b1_step_s"]
                one["peak_rss_vs_weights"] = one["peak_rss_gb"] / one["model_gb"]
                one["peak_rss_vs_weights_and_states"] = one["peak_rss_gb"] / (one["model_gb"] + one["states_gb"])
            r["runs"].append(one)
            print(_line(shape, one), flush=True)
        _compare(r)
        result["shapes"][shape] = r
    return result


def _warm_page_cache(folder: Path) -> None:
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass


def _compare(r: dict) -> None:
    """Ratios against transformers bf16, and agreement with the reference run (our float32 where it was
    run, which goes first; otherwise the first run)."""
    runs = {(x["impl"], x["dtype"]): x for x in r["runs"] if "error" not in x and "skipped" not in x}
    hf = runs.get(("hf", "bf16"))
    ref = runs.get(tuple(r["reference"].split(":"))) if r.get("reference") else None
    for x in runs.values():
        if hf is not None and x is not hf:
            x["decode_b1_speedup_vs_hf_bf16"] = hf["decode_b1_step_s"] / x["decode_b1_step_s"]
            x["prefill_speedup_vs_hf_bf16"] = hf["prefill_s"] / x["prefill_s"]
        if ref is not None:
            n = min(len(ref["greedy_tokens"]), len(x["greedy_tokens"]))
            same = next((i for i in range(n) if ref["greedy_tokens"][i] != x["greedy_tokens"][i]), n)
            x["greedy_equal_to_reference_prefix"] = same  # free-running: ends at the first difference
            x["greedy_equal_to_reference_of"] = n
            # teacher-forced on the reference's tokens: top-1 agreement position by position, and the
            # reference's own top-1 − top-2 logit margin where they differ (a near-tie or not)
            agree = [a == t for a, t in zip(x["forced_argmax"], ref["forced_argmax"])]
            x["top1_agreement_with_reference"] = sum(agree) / len(agree)
            x["disagreements_reference_margin"] = [round(m, 4) for a, m in zip(agree, ref["forced_margin"]) if not a]
            x["prompt_top1_agreement_with_reference"] = _agreement(x, ref)
            x["prompt_perplexity_change_vs_reference"] = math.exp(x["prompt_nll"] - ref["prompt_nll"]) - 1
        bf16 = runs.get(("ours", "bf16"))
        if bf16 is not None and x is not bf16:
            x["prompt_top1_agreement_with_ours_bf16"] = _agreement(x, bf16)
            x["prompt_perplexity_change_vs_ours_bf16"] = math.exp(x["prompt_nll"] - bf16["prompt_nll"]) - 1


def _agreement(x: dict, y: dict) -> float:
    pairs = list(zip(x["prompt_argmax"], y["prompt_argmax"]))
    return sum(a == b for a, b in pairs) / len(pairs)


def _line(shape: str, x: dict) -> str:
    if "error" in x or "skipped" in x:
        return f"[{shape}] {x['impl']} {x['dtype']}: {x.get('error') or x.get('skipped')}"
    return (f"[{shape}] {x['impl']:5s} {x['dtype']:4s} load {x['load_s']:.1f} s, prefill {x['prefill_tokens']} "
            f"{x['prefill_s']:.2f} s, decode b1 {x['decode_b1_step_s'] * 1e3:.0f} ms/step "
            f"({x['decode_b1_vs_floor']:.2f}x floor), b{x['batch']} {x['decode_b8_vs_b1']:.2f}x b1 per step, peak RSS {x['peak_rss_gb']:.2f} GB "
            f"({x['peak_rss_vs_weights']:.2f}x weights)")


def _shape(text: str) -> str:
    from promptcot_mamba.model.config import NAMED_CONFIGS

    if text not in SHAPES and text not in NAMED_CONFIGS:
        raise argparse.ArgumentTypeError(f"shape {text!r}: choose {', '.join(SHAPES)} or a named config "
                                         f"({', '.join(sorted(NAMED_CONFIGS))})")
    return text


def _runs(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.replace(",", " ").split():
        impl, _, dtype = item.partition(":")
        if impl not in ("ours", "hf") or dtype not in ("bf16", "fp32", "int8") or (impl == "hf" and dtype == "int8"):
            raise argparse.ArgumentTypeError(f"run {item!r}: write IMPL:DTYPE with IMPL ours|hf, DTYPE bf16|fp32|int8")
        out.append((impl, dtype))
    return out


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", nargs="*", type=_shape, default=["2.7b", "7b"],
                   help="2.7b (mamba2-2.7b) | 7b (mamba-codestral-7b) | any named config (e.g. tiny, for a smoke run)")
    p.add_argument("--runs", type=_runs, nargs="+", default=[_runs("ours:fp32 ours:bf16 ours:int8 hf:bf16")],
                   help="IMPL:DTYPE items (ours|hf : bf16|fp32|int8), each in its own process")
    p.add_argument("--prompt", type=int, default=256, help="prompt tokens for prefill (batch 1)")
    p.add_argument("--steps", type=int, default=12, help="decode steps timed per batch size")
    p.add_argument("--batch", type=int, default=8, help="the second decode batch size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the random checkpoints are written once")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/real-size-<device>.json)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("impl"), ap.add_argument("dtype"), ap.add_argument("folder")
        ap.add_argument("--prompt", type=int), ap.add_argument("--steps", type=int)
        ap.add_argument("--batch", type=int), ap.add_argument("--device"), ap.add_argument("--reference")
        a = ap.parse_args(argv[1:])
        ref = [int(t) for t in a.reference.split(",")] if a.reference else None
        print(json.dumps(run_one(a.impl, a.dtype, Path(a.folder), prompt=a.prompt, steps=a.steps,
                                 batch=a.batch, device=a.device, reference=ref)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(ap)
    args = ap.parse_args(argv)
    args.runs = [r for group in args.runs for r in group]
    return save(run(args), args)


def targets(result: dict) -> list[dict]:
    """Issue 13's targets, each with the measured value and whether it is met (the ones these runs reach)."""
    out = []

    def run(shape, impl, dtype):
        r = result["shapes"].get(shape, {})
        return next((x for x in r.get("runs", []) if x.get("impl") == impl and x.get("dtype") == dtype
                     and "decode_b1_step_s" in x), None)

    def add(what, value, target, higher_is_better):
        if value is not None:
            met = value >= target if higher_is_better else value <= target
            out.append({"target": what, "measured": round(value, 3), "goal": target, "met": met,
                        "by": round(value / target, 3)})

    x = run("2.7b", "ours", "bf16")
    add("2.7B bf16 decode b1 vs transformers bf16 (x faster)", x and x.get("decode_b1_speedup_vs_hf_bf16"), 2.0, True)
    add("2.7B bf16 prefill vs transformers bf16 (x faster)", x and x.get("prefill_speedup_vs_hf_bf16"), 2.0, True)
    x = run("7b", "ours", "bf16")
    add("7B bf16 decode b1 step / bandwidth floor", x and x.get("decode_b1_vs_floor"), 1.25, False)
    x = run("7b", "ours", "int8")
    add("7B int8 decode b1 vs transformers bf16 (x faster)", x and x.get("decode_b1_speedup_vs_hf_bf16"), 2.5, True)
    for shape in result["shapes"]:
        for dtype in ("bf16", "fp32", "int8"):
            x = run(shape, "ours", dtype)
            add(f"{shape} {dtype} peak RSS / (weights + decoded states)", x and x.get("peak_rss_vs_weights_and_states"),
                1.05, False)
    return out


def save(result: dict, args) -> int:
    result["targets"] = targets(result)
    out = Path(args.out or f"benchmarks/results/real-size-{args.device.split(':')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
