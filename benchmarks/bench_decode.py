"""Decode tokens/s against batch size at the ~130M shape: our engine vs transformers' Mamba2 `generate`.

Both run the same random weights (our `save_pretrained` folder, loaded by `Mamba2ForCausalLM`), fp32,
greedy, the same prompts (16 tokens) and the same number of new tokens, with the same torch thread
count. An extra `ours-bf16` series (bf16 weights, fp32 state) shows what the CPU's bf16 GEMMs add;
it is not part of the comparison. Each measurement runs in its own subprocess so its peak RSS is its
own. Numbers on a shared CPU are noisy: read the ratios, which are measured in the same run.

Two rates per row: end to end (the whole `generate` call: prefill of the prompt + N new tokens, what a
user waits for) and decode only (the time of N tokens minus the time of 4, per extra token: the
steady per-token cost that long reasoning answers are made of).

    python benchmarks/bench_decode.py [--new-tokens 32] [--batches 1,2,4,8,16,32,64] [--hf-batches 1,4,16]
writes benchmarks/results/decode-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHORT = 4  # new tokens of the short run whose time (prefill + 4 steps) is subtracted for decode-only rates


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # both systems: decaying fp32 states go denormal on random weights
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, 50000, (args.batch, args.prompt_tokens), generator=g)
    N = args.new_tokens
    if args.worker == "hf":
        from transformers import Mamba2ForCausalLM

        model = Mamba2ForCausalLM.from_pretrained(args.folder).eval()

        def run(n):
            with torch.no_grad():
                out = model.generate(prompts, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            return out[:, prompts.shape[1]:].tolist()
    else:
        from promptcot_mamba.generate import Engine, EngineConfig, SamplingParams

        engine = Engine.from_pretrained(args.folder, EngineConfig(max_slots=args.slots, prefix_cache_gb=0,
                                                                  decode_on_pool=args.worker == "ours-pool"),
                                        dtype="bfloat16" if args.worker == "ours-bf16" else "float32",
                                        require_tokenizer=False)

        def run(n):
            res = engine.generate(prompts.tolist(), SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True))
            return [r.samples[0].token_ids for r in res]

    run(2)  # warm-up
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    run(SHORT)  # prefill + SHORT tokens: subtracted below to isolate the per-token decode rate
    t_short = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = run(N)
    dt = time.perf_counter() - t0
    assert all(len(t) == N for t in tokens), "every sequence must produce exactly N tokens"
    return {"system": args.worker, "batch": args.batch, "new_tokens": N, "seconds": dt,
            "tokens_per_s": args.batch * N / dt,
            "decode_only_tokens_per_s": args.batch * (N - SHORT) / max(dt - t_short, 1e-9), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_generate_mb": rss_before, "rss_after_generate_mb": _rss_mb(),
            "first_tokens": tokens[0][:8]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", default=None)
    ap.add_argument("--folder", default=None)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--slots", type=int, default=0, help="engine slots (default: the batch size)")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    # one thread by default: on a shared, oversubscribed CPU a 2-thread OpenMP region stalls for whole
    # scheduler slices (measured: a 5 µs op taking 28 ms); pass --threads 2 on an idle machine
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="1,2,4,8,16,32,64")
    ap.add_argument("--hf-batches", default="1,4,16")
    ap.add_argument("--bf16-batches", default="1,16,64",
                    help="also run our engine with bf16 weights (fp32 state) at these batches; not compared to hf")
    ap.add_argument("--config", default="mamba2-130m")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/decode-cpu.json"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    import torch

    from promptcot_mamba.model.config import named_config
    from promptcot_mamba.model.lm import Mamba2LM

    torch.manual_seed(0)
    cfg = named_config(args.config)
    folder = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    Mamba2LM(cfg).save_pretrained(folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def measure(system: str, batch: int) -> dict:
        cmd = [sys.executable, __file__, "--worker", system, "--folder", str(folder), "--batch", str(batch),
               "--new-tokens", str(args.new_tokens), "--prompt-tokens", str(args.prompt_tokens),
               "--threads", str(args.threads), "--slots", str(args.slots or max(batch, 64 if "pool" in system else 1))]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if out.returncode != 0:
            return {"system": system, "batch": batch, "error": out.stderr.strip().splitlines()[-1:]}
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{system:10s} batch {batch:3d}: {r['tokens_per_s']:8.2f} tokens/s end to end, "
              f"{r['decode_only_tokens_per_s']:8.2f} decode only; peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        return r

    rows = []
    hf_b = [int(b) for b in args.hf_batches.split(",") if b]
    for b in [int(b) for b in args.batches.split(",") if b]:
        rows.append(measure("ours", b))
        if b in hf_b:
            rows.append(measure("hf", b))
        if b in [int(x) for x in args.bf16_batches.split(",") if x]:
            rows.append(measure("ours-bf16", b))
    rows.append(measure("ours-pool", 8))  # the whole 64-slot pool stepped for 8 sequences (design check)

    def tps(system, b, key="tokens_per_s"):
        return next((r[key] for r in rows if r["system"] == system and r["batch"] == b and key in r), None)

    ratios = {str(b): tps("ours", b) / tps("hf", b) for b in hf_b if tps("ours", b) and tps("hf", b)}
    d = "decode_only_tokens_per_s"
    decode_ratios = {str(b): tps("ours", b, d) / tps("hf", b, d) for b in hf_b if tps("ours", b, d) and tps("hf", b, d)}
    same = all(r.get("first_tokens") == next((x.get("first_tokens") for x in rows
                                              if x["system"] == "ours" and x["batch"] == r["batch"]), None)
               for r in rows if r["system"] == "hf" and "first_tokens" in r)
    result = {
        "benchmark": "decode tokens/s vs batch, ours vs transformers Mamba2ForCausalLM.generate (same weights)",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"nproc": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine(), "threads": args.threads,
                    "load_avg_at_start": os.getloadavg()},
        "config": args.config, "parameters": cfg.num_parameters(), "dtype": "float32",
        "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
        "rows": rows,
        "ratio_ours_over_hf": ratios,
        "ratio_ours_over_hf_decode_only": decode_ratios,
        "ours_bf16_over_fp32": {str(b): tps("ours-bf16", b) / tps("ours", b)
                                for b in [int(x) for x in args.bf16_batches.split(",") if x]
                                if tps("ours-bf16", b) and tps("ours", b)},
        "ours_pool_vs_packed_batch8": (tps("ours-pool", 8) / tps("ours", 8)) if tps("ours", 8) else None,
        "greedy_tokens_agree_with_hf": same,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for b, r in ratios.items():
        print(f"ours / transformers at batch {b}: {r:.2f}x end to end, {decode_ratios.get(b, float('nan')):.2f}x "
              f"decode only")
    print(f"greedy tokens agree with transformers: {same}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
