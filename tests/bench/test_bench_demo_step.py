"""benchmarks/bench_demo_step.py (issue 15's step-cost record) on a tiny batch: it runs under the demo
workers' allocator settings, counts what it says it counts, and writes its JSON and plot."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_step_bench_records_floor_counts_and_plot(tmp_path):
    out, png = tmp_path / "step.json", tmp_path / "step.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_demo_step.py"), "--rounds", "1", "--steps", "1",
                    "--lengths", "32", "--batch", "2", "--label", "t", "--out", str(out), "--plot", str(png)],
                   check=True, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    run = json.loads(out.read_text())["runs"]["t"]
    from promptcot_mamba.demo.pipeline import WORKER_MALLOC

    assert run["malloc"] == WORKER_MALLOC  # it re-executed itself with the demo workers' settings
    floor = run["hardware_floor"]
    assert floor["gemm_gflops_1024"] > 0 and floor["gemm_gflops_in_proj"] > 0 and floor["copy_gb_s"] > 0
    mamba, llama = run["32"]["step"]["mamba2"], run["32"]["step"]["llama"]
    assert mamba["sdpa_gflop_dense"] == 0  # attention-free
    # the Llama's four layers: SDPA forward 2·b·h·T²·d per product (QKᵀ, PV), backward five products
    # (QKᵀ again, dP, dV, dQ, dK): torch.utils.flop_counter's dense count
    b, T, h, d, layers = 2, 32, 4, 32, 4
    assert abs(llama["sdpa_gflop_dense"] - (2 + 5) * 2 * b * h * T * T * d * layers / 1e9) < 1e-9
    assert llama["matmul_gflop_causal"] == llama["matmul_gflop"] - llama["sdpa_gflop_dense"] / 2
    for s in (mamba, llama):
        assert 0 < s["matmul_floor_s"] and 0 < s["aten_calls_non_view"] < s["aten_calls"]
        assert abs(s["matmul_floor_s"] * floor["gemm_gflops_in_proj"] - s["matmul_gflop_causal"]) < 1e-9
    assert png.stat().st_size > 1000
