"""SSD scan backends on this machine: `python benchmarks/bench_ssd.py [--device cuda]`.

Thin: calls promptcot_mamba.bench.ssd_bench and writes benchmarks/results/ssd-<device>.json (+ .png),
printing each backend's ratio against the PyTorch chunked scan measured in the same run. On a CPU it
compares the three reference forms at the ~130M model's layer shape (the Triton kernels run here only
through the interpreter, whose timings mean nothing); on CUDA it runs Codestral's shape with every
available backend (torch, triton, fla, torch-compile).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from promptcot_mamba.bench import ssd_bench

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=3)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda:
        cfg = ssd_bench.SSDBenchConfig(lengths=(1024, 4096, 16384), shape="codestral", dtype="bf16",
                                       backends=("torch", "triton", "fla", "torch-compile"), iters=args.iters,
                                       device=args.device)
    else:
        cfg = ssd_bench.SSDBenchConfig(lengths=(256, 1024), shape="mamba2-130m", dtype="fp32",
                                       backends=("torch", "quadratic", "recurrent"), iters=args.iters,
                                       warmup=1, device="cpu", budget_s=20.0)
    result = ssd_bench.run_ssd_bench(cfg)
    print("\n".join(ssd_bench.summary(result)))
    print(ssd_bench.save(result, RESULTS / f"ssd-{'cuda' if cuda else 'cpu'}.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
