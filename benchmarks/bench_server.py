"""Server overhead and load, two measurements:

1. (default) decode tokens/s through the HTTP API (`pcm serve`, 16 concurrent requests, streamed and
   not) against the in-process engine on the same 16 prompts, at the ~130M shape. The model folder
   holds random ~130M weights and the tiny test tokenizer (the engine samples only ids the tokenizer
   knows, in both paths alike). In-process, streamed and non-streamed runs alternate for a few rounds
   and the medians are compared, so drift on a shared CPU hits all three alike. Writes
   benchmarks/results/server-cpu.json.

       python benchmarks/bench_server.py [--batch 16] [--new-tokens 48] [--config mamba2-130m]

2. (--load) the server under load on the tiny test model, where the server's own work dominates: 64
   concurrent streams (tokens/s) and sequential short requests (requests/s), against the same
   measurement of a baseline server (another checkout, `--baseline-src DIR`, e.g. a `git worktree` of
   an earlier commit) started the same way, rounds alternating. Writes
   benchmarks/results/server-load-cpu.json.

       python benchmarks/bench_server.py --load [--baseline-src /tmp/old-checkout] [--rounds 3]

Each server runs as its own `pcm serve` process, as users run it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompts_for(batch: int) -> list[str]:
    return [f"Problem {i}: let x be a real number such that x + {i} = {2 * i + 1}." for i in range(batch)]


def in_process(engine, texts: list[str], n: int) -> dict:
    from promptcot_mamba.generate import SamplingParams

    ids = [engine.tokenizer.encode(t) for t in texts]
    sp = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
    engine.generate(ids, SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True))  # warm-up
    t0 = time.perf_counter()
    res = engine.generate(ids, sp)
    dt = time.perf_counter() - t0
    toks = sum(len(r.samples[0].token_ids) for r in res)
    return {"tokens": toks, "seconds": dt, "tokens_per_s": toks / dt, "texts": [r.samples[0].text for r in res]}


async def through_http(url: str, texts: list[str], n: int, stream: bool) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def one(text):
            body = {"model": "bench", "prompt": text, "max_tokens": n, "temperature": 0, "ignore_eos": True,
                    "stream": stream}
            if not stream:
                r = await client.post("/v1/completions", json=body)
                r.raise_for_status()
                j = r.json()
                return j["choices"][0]["text"], j["usage"]["completion_tokens"]
            out, chunks = "", 0
            async with client.stream("POST", "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        c = json.loads(line[6:])
                        out += c["choices"][0]["text"]
                        chunks += 1
            return out, n

        await asyncio.gather(*(one(t) for t in texts[:2]))  # warm-up
        t0 = time.perf_counter()
        res = await asyncio.gather(*(one(t) for t in texts))
        dt = time.perf_counter() - t0
    toks = sum(k for _, k in res)
    return {"tokens": toks, "seconds": dt, "tokens_per_s": toks / dt, "texts": [t for t, _ in res]}


def start_server(folder: Path, src: Path, *, threads: int, slots: int) -> tuple[subprocess.Popen, str]:
    """`python -m promptcot_mamba serve` from the checkout `src`, on a free port; waits for /health."""
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "promptcot_mamba", "serve", "--model", str(folder), "--port",
                             str(port), "--served-model-name", "bench", "--max-slots", str(slots),
                             "--prefix-cache-gb", "0", "--threads", str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=str(src))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"pcm serve from {src} did not come up")
        time.sleep(0.2)


async def streams_tokens_per_s(url: str, n_streams: int, new_tokens: int) -> float:
    """`n_streams` concurrent streamed completions of `new_tokens` tokens each: generated tokens/s."""
    texts = prompts_for(n_streams)
    res = await through_http(url, texts, new_tokens, stream=True)
    return res["tokens_per_s"]


async def sequential_requests_per_s(url: str, n: int, new_tokens: int) -> float:
    """`n` non-streamed completions one after another (what a simple client does): requests/s."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        body = {"model": "bench", "prompt": "Let x be a real number.", "max_tokens": new_tokens, "temperature": 0,
                "ignore_eos": True}
        (await client.post("/v1/completions", json=body)).raise_for_status()  # warm-up
        t0 = time.perf_counter()
        for _ in range(n):
            (await client.post("/v1/completions", json=body)).raise_for_status()
        return n / (time.perf_counter() - t0)


def load_main(args) -> int:
    import torch

    from promptcot_mamba.generate.tiny import save_tiny_model

    folder = save_tiny_model(Path(tempfile.mkdtemp(prefix="bench-server-load-")) / "tiny")
    sources = {"current": ROOT}
    if args.baseline_src:
        sources["baseline"] = Path(args.baseline_src).resolve()
    servers = {k: start_server(folder, src, threads=args.threads, slots=64) for k, src in sources.items()}
    runs: dict[str, dict[str, list[float]]] = {k: {"streams_tokens_per_s": [], "sequential_requests_per_s": []}
                                               for k in servers}
    try:
        for r in range(args.rounds):  # alternate the servers: drift of a shared CPU hits both alike
            for k, (_, url) in servers.items():
                runs[k]["streams_tokens_per_s"].append(asyncio.run(streams_tokens_per_s(url, 64, args.new_tokens)))
                runs[k]["sequential_requests_per_s"].append(asyncio.run(sequential_requests_per_s(url, 40, 16)))
            print(f"round {r + 1}: " + "; ".join(
                f"{k} {v['streams_tokens_per_s'][-1]:.0f} tok/s (64 streams), "
                f"{v['sequential_requests_per_s'][-1]:.1f} req/s (sequential)" for k, v in runs.items()), flush=True)
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    med = {k: {m: statistics.median(x) for m, x in v.items()} for k, v in runs.items()}
    result = {
        "benchmark": "pcm serve under load on the tiny test model: 64 concurrent streams of "
                     f"{args.new_tokens} tokens (tokens/s) and 40 sequential 16-token requests (requests/s)",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"nproc": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    "threads": args.threads, "load_avg_at_start": os.getloadavg()},
        "sources": {k: str(v) for k, v in sources.items()},
        "rounds": runs,
        "median": med,
    }
    if "baseline" in med:
        result["ratio_current_over_baseline"] = {m: med["current"][m] / med["baseline"][m] for m in med["current"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result.get("ratio_current_over_baseline", med), indent=1))
    print(f"wrote {args.out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", action="store_true", help="the server under load on the tiny model (see above)")
    ap.add_argument("--baseline-src", default=None, help="with --load: a checkout whose server is the baseline")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--config", default="mamba2-130m")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, the same in both paths")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.load:
        args.new_tokens = 64 if args.new_tokens == 48 else args.new_tokens
        args.out = args.out or str(ROOT / "benchmarks/results/server-load-cpu.json")
        return load_main(args)
    args.out = args.out or str(ROOT / "benchmarks/results/server-cpu.json")

    import torch

    from promptcot_mamba.generate.tiny import build_tiny_tokenizer
    from promptcot_mamba.model.config import named_config
    from promptcot_mamba.model.lm import Mamba2LM

    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="bench-server-"))
    model = Mamba2LM(named_config(args.config))
    model.tokenizer = build_tiny_tokenizer()
    model.save_pretrained(folder)
    del model
    texts = prompts_for(args.batch)

    from promptcot_mamba.generate import Engine, EngineConfig

    torch.set_num_threads(args.threads)
    engine = Engine.from_pretrained(folder, EngineConfig(max_slots=args.batch, prefix_cache_gb=0))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "promptcot_mamba", "serve", "--model", str(folder), "--port",
                             str(port), "--served-model-name", "bench", "--max-slots", str(args.batch),
                             "--prefix-cache-gb", "0", "--threads", str(args.threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    runs: dict[str, list[dict]] = {"in_process": [], "http_streamed": [], "http_non_streamed": []}
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("pcm serve did not come up")
            time.sleep(0.2)
        # interleaved rounds: drift of a shared CPU hits all three paths alike; report medians
        for r in range(args.rounds):
            runs["in_process"].append(in_process(engine, texts, args.new_tokens))
            runs["http_streamed"].append(asyncio.run(through_http(url, texts, args.new_tokens, stream=True)))
            runs["http_non_streamed"].append(asyncio.run(through_http(url, texts, args.new_tokens, stream=False)))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['tokens_per_s']:.2f}" for k, v in runs.items())
                  + " tokens/s", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    med = {k: statistics.median(x["tokens_per_s"] for x in v) for k, v in runs.items()}
    same = all(x["texts"] == runs["in_process"][0]["texts"] for v in runs.values() for x in v)
    result = {
        "benchmark": "tokens/s through the HTTP API (pcm serve) vs the in-process engine",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"nproc": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    "threads": args.threads, "load_avg_at_start": os.getloadavg()},
        "config": args.config, "batch": args.batch, "new_tokens": args.new_tokens,
        "rounds": {k: [x["tokens_per_s"] for x in v] for k, v in runs.items()},
        "median_tokens_per_s": med,
        "ratio_http_streamed_over_engine": med["http_streamed"] / med["in_process"],
        "ratio_http_non_streamed_over_engine": med["http_non_streamed"] / med["in_process"],
        "same_greedy_texts": same,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"HTTP / in-process: streamed {result['ratio_http_streamed_over_engine']:.3f}, "
          f"non-streamed {result['ratio_http_non_streamed_over_engine']:.3f}; same texts: {same}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
