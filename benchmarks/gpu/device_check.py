"""Issue 8's GPU targets measured in one go on a lent device (≤ 8 minutes), or a CPU dry run (SMALL=1).

Stages, in priority order, each guarded (an error is a row, not a crash) and skipped when the time
budget runs out; every row goes to $OUT/device.jsonl as soon as it exists, so a run cut short still
reports what it measured:

  A. SSD kernels at Codestral's layer shape (H=128, P=64, N=128, G=8), bf16: correctness of the Triton
     forward against the fp32 PyTorch reference (plain, with seq_idx + initial state), the kernel chunk
     Q sweep, then `ssd_bench` over T ∈ {4096, 16384}: torch vs triton vs fla vs torch-compile, fwd and
     fwd+bwd. Targets at T = 16,384: fwd ≤ 1.0 ms, fwd+bwd ≤ 3.5 ms, rel err ≤ 1e-2.
  B. Decode at the 7.3B Codestral shape (random bf16 weights, fp32 state): eager, CUDA graph, fused
     Triton step in a CUDA graph, at batch 1 and 128. Targets: ≥ 200 tok/s at b=1, ≥ 4,000 at b=128.
  C. The Triton tests (tests/ssd, tests/model/test_model_fused_step.py) on the GPU (TRITON_INTERPRET=0: the same cases on CUDA).
  D. Figure 2 in miniature: Codestral-shape Mamba vs Qwen2.5-7B-shape Transformer under 24 GB and
     72 GB caps, at the intervals that fit the remaining time (the paper's ratios are at its longest
     interval; short intervals here understate Mamba's advantage).

Usage (repo root):  bash benchmarks/gpu/run_device.sh      or   SMALL=1 python benchmarks/gpu/device_check.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

SMALL = os.environ.get("SMALL") == "1"
if SMALL:  # the CPU dry run exercises the Triton paths through the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from promptcot_mamba.common.tolerances import rel_err  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() and not SMALL else "cpu"
OUT = Path(os.environ.get("OUT") or "/tmp/pcm-device")
OUT.mkdir(parents=True, exist_ok=True)
T0 = time.time()


def emit(**row) -> dict:
    row["t_s"] = round(time.time() - T0, 1)
    line = json.dumps(row, default=str)
    print(line, flush=True)
    with open(OUT / "device.jsonl", "a") as f:
        f.write(line + "\n")
    return row


def left(budget: float) -> float:
    return budget - (time.time() - T0)


def guarded(stage: str):
    def wrap(fn):
        def run(*a, **k):
            try:
                return fn(*a, **k)
            except Exception as err:
                emit(stage=stage, error=f"{type(err).__name__}: {err}"[:500], tb=traceback.format_exc()[-1500:])
                if DEV == "cuda":
                    torch.cuda.empty_cache()
        return run
    return wrap


@guarded("A")
def stage_a(budget: float) -> None:
    from promptcot_mamba.bench import ssd_bench
    from promptcot_mamba.ssd.forms import normalise_doc_ids, ssd_chunked
    from promptcot_mamba.ssd.triton_scan import ssd_triton_forward

    shape = ssd_bench.SHAPES["tiny" if SMALL else "codestral"]
    T = 96 if SMALL else 16384
    dtype = torch.float32 if SMALL else torch.bfloat16
    x, dt, A, B, C, D = ssd_bench.make_inputs(T, shape, 1, dtype, DEV)
    ref_y, ref_h = ssd_chunked(*(t.float() for t in (x, dt, A, B, C, D)), chunk_size=256)
    for Q in ((16, 32) if SMALL else (64, 128, 256)):
        y, h = ssd_triton_forward(x, dt, A, B, C, D, chunk=Q)
        row = dict(stage="A", check="fwd_vs_fp32_ref", T=T, chunk=Q, rel_err_y=rel_err(y, ref_y),
                   rel_err_state=rel_err(h, ref_h))
        if DEV == "cuda":
            from promptcot_mamba.bench.report import median_time

            row["fwd_ms"] = round(1e3 * median_time(lambda Q=Q, inp=(x, dt, A, B, C, D): ssd_triton_forward(*inp, chunk=Q),
                                                    device=DEV, warmup=2, iters=10), 4)
        emit(**row)
    # packed documents + an initial state, against the reference at the same precision
    g = torch.Generator().manual_seed(1)
    doc = normalise_doc_ids(torch.randint(0, 5, (1, T), generator=g).sort(dim=1).values).to(DEV)
    h0 = torch.randn(1, shape["H"], shape["P"], shape["N"], device=DEV)
    y, h = ssd_triton_forward(x, dt, A, B, C, D, h0, doc)
    ry, rh = ssd_chunked(*(t.float() for t in (x, dt, A, B, C, D)), h0, doc, chunk_size=256)
    emit(stage="A", check="docs_h0_vs_fp32_ref", T=T, rel_err_y=rel_err(y, ry), rel_err_state=rel_err(h, rh))
    del x, dt, A, B, C, D, ref_y, ref_h, y, h, ry, rh
    # gradients: the Triton backward (adjoint scans) against autograd through the fp32 reference
    from promptcot_mamba.ssd.triton_scan import ssd_triton_backward

    Tg = 64 if SMALL else 4096
    x, dt, A, B, C, D = ssd_bench.make_inputs(Tg, shape, 1, dtype, DEV, seed=2)
    h0 = torch.randn(1, shape["H"], shape["P"], shape["N"], device=DEV)
    leaves = [t.float().clone().requires_grad_() for t in (x, dt, A, B, C, D, h0)]
    ry, rh = ssd_chunked(*leaves, chunk_size=256)
    gy, gh = torch.randn_like(ry), torch.randn_like(rh)
    ref = torch.autograd.grad((ry, rh), leaves, (gy, gh))
    y, h = ssd_triton_forward(x, dt, A, B, C, D, h0)
    got = ssd_triton_backward(x, dt, A, B, C, D, h0, None, y, h, gy.to(dtype), gh)
    emit(stage="A", check="grads_vs_fp32_ref", T=Tg,
         **{f"rel_err_d{n}": rel_err(g, r) for n, g, r in zip(("x", "dt", "A", "B", "C", "D", "h0"), got, ref)})
    del x, dt, A, B, C, D, h0, leaves, ry, rh, gy, gh, ref, y, h, got
    if left(budget) < 60:
        emit(stage="A", note="ssd_bench skipped for time")
        return
    cfg = ssd_bench.SSDBenchConfig(
        lengths=(64, 128) if SMALL else (4096, 16384), shape="tiny" if SMALL else "codestral",
        dtype="fp32" if SMALL else "bf16", device=DEV, iters=1 if SMALL else 5, warmup=0 if SMALL else 2,
        backends=("torch", "triton") if SMALL else ("torch", "triton", "fla", "torch-compile"), budget_s=20)
    result = ssd_bench.run_ssd_bench(cfg, progress=False)
    for r in result["rows"]:
        emit(stage="A", **r)
    ssd_bench.save(result, OUT / f"ssd-{DEV}.json")


@guarded("B")
def stage_b(budget: float) -> None:
    from promptcot_mamba.bench import decode_bench

    modes = ("eager", "triton") if SMALL else ("eager", "graph", "triton-graph")
    cfg = decode_bench.DecodeBenchConfig(
        model="tiny" if SMALL else "mamba-codestral-7b", dtype="fp32" if SMALL else "bf16",
        batch_sizes=(1, 4) if SMALL else (1, 128), contexts=(8,) if SMALL else (128,),
        steps=4 if SMALL else 32, modes=modes, device=DEV)
    result = decode_bench.run_decode_bench(cfg, progress=False)
    for r in result["rows"]:
        emit(stage="B", **r)
    decode_bench.save(result, OUT / f"decode-{DEV}.json")
    del result
    if DEV == "cuda":
        torch.cuda.empty_cache()
    # the engine-facing piece: BucketedDecoder (one CUDA graph per bucket) against eager model.step
    import copy

    from promptcot_mamba.generate.decode_graphs import BucketedDecoder
    from promptcot_mamba.model.kernels import Kernels

    eager = decode_bench.load_model("tiny" if SMALL else "mamba2-130m", torch.float32 if SMALL else torch.bfloat16, DEV)
    for kind in ("eager", "fused"):
        model = copy.copy(eager)  # the same weights; only the kernels differ
        model.kernels = Kernels(step=kind)
        pool = model.allocate_state(16)
        _, filled = model.prefill(torch.randint(0, 200, (16, 9), device=DEV))
        pool.conv.copy_(filled.conv)
        pool.ssm.copy_(filled.ssm)
        ref_pool = pool.clone()
        dec = BucketedDecoder(model, pool)  # captures every bucket (graphs on CUDA)
        pool.conv.copy_(filled.conv)  # capture wrote the rows: put the prefilled states back
        pool.ssm.copy_(filled.ssm)
        errs = {}
        for n in (3, 16):
            tok = torch.randint(0, 200, (n,), device=DEV)
            got = dec(tok).float()
            ref = eager.step(tok, ref_pool.select(list(range(n)))).float()
            errs[f"n{n}"] = rel_err(got, ref)
            pool.conv.copy_(filled.conv)
            pool.ssm.copy_(filled.ssm)
        emit(stage="B", check="bucketed_decoder_vs_eager", step=kind, graphs=dec.use_graphs, **errs)
    del model, eager


@guarded("C")
def stage_c(budget: float) -> None:
    if SMALL:
        emit(stage="C", note="skipped in the CPU dry run (CI runs these tests under the interpreter)")
        return
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=str(ROOT))
    tests = ["tests/ssd/test_ssd_triton_scan.py", "tests/ssd/test_ssd_triton_step.py",
             "tests/model/test_model_fused_step.py"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", *tests], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=max(30, min(150, left(budget) - 10)))
    emit(stage="C", rc=proc.returncode, tail=proc.stdout[-1500:] + proc.stderr[-500:])


@guarded("D")
def stage_d(budget: float) -> None:
    from promptcot_mamba.bench import throughput

    if left(budget) < (5 if SMALL else 90):
        emit(stage="D", note="Figure 2 skipped for time")
        return
    cfg = throughput.ThroughputConfig(
        mamba="tiny" if SMALL else "mamba-codestral-7b", transformer="tiny-qwen2" if SMALL else "qwen2.5-7b",
        intervals=((4, 8),) if SMALL else ((256, 512),), memory_caps=("0.6MB",) if SMALL else ("24GB", "72GB"),
        prompt_len=8 if SMALL else 128, num_requests=4 if SMALL else 32, dtype="fp32" if SMALL else "bf16",
        device=DEV, transformer_cache="dynamic")
    result = throughput.run_inprocess(cfg, progress=False)
    for r in result["rows"]:
        emit(stage="D", **r)
    throughput.save(result, OUT / f"throughput-{DEV}.json")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--budget", type=float, default=440.0, help="seconds for the whole run")
    p.add_argument("--stages", default="ABCD")
    args = p.parse_args()
    info = {"dev": DEV, "torch": torch.__version__, "small": SMALL}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    try:
        import fla

        info["fla"] = getattr(fla, "__version__", "?")
    except ImportError:
        info["fla"] = None
    if DEV == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    emit(stage="env", **info)
    stages = {"A": stage_a, "B": stage_b, "C": stage_c, "D": stage_d}
    for name in args.stages:
        if left(args.budget) < 20:
            emit(stage=name, note="skipped: budget spent")
            continue
        emit(stage=name, note="start")
        stages[name](args.budget)
    emit(stage="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
