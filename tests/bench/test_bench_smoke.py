"""`pcm bench ssd | decode | throughput` on tiny shapes on CPU: they run, write JSON + PNG, and their
numbers mean what they say (memory-cap arithmetic, state size constant in context, same-run ratios)."""

import json

import pytest
import torch

from promptcot_mamba.bench import decode_bench, ssd_bench, throughput
from promptcot_mamba.common.tolerances import rtol


def test_ssd_bench_rows_json_and_plot(tmp_path):
    cfg = ssd_bench.SSDBenchConfig(lengths=(32, 64), backends=("torch", "quadratic"), iters=1, warmup=0)
    result = ssd_bench.run_ssd_bench(cfg, progress=False)
    rows = result["rows"]
    assert [(r["T"], r["backend"]) for r in rows] == [(32, "torch"), (32, "quadratic"), (64, "torch"), (64, "quadratic")]
    for r in rows:
        assert "error" not in r and r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0
        # the quadratic form equals the chunked reference up to another order of the T·N-term sums
        assert r["rel_err_vs_fp32"] <= rtol(torch.float32, r["T"] * r["N"])
        assert r["fwd_speedup_vs_torch"] > 0
    paths = ssd_bench.save(result, tmp_path / "ssd-cpu.json")
    assert json.loads((tmp_path / "ssd-cpu.json").read_text())["machine"]["torch"] == torch.__version__
    assert (tmp_path / "ssd-cpu.png").stat().st_size > 1000 and paths["png"].endswith(".png")
    assert any("x1.00" in line for line in ssd_bench.summary(result))


def test_ssd_bench_records_a_failing_backend_without_stopping():
    cfg = ssd_bench.SSDBenchConfig(lengths=(16,), backends=("fla", "torch"), iters=1, warmup=0, backward=False)
    rows = ssd_bench.run_ssd_bench(cfg, progress=False)["rows"]
    assert "error" in rows[0] and "fwd_ms" in rows[1]


def test_decode_bench_state_is_constant_in_context(tmp_path):
    cfg = decode_bench.DecodeBenchConfig(batch_sizes=(1, 2), contexts=(4, 24), steps=3, warmup_steps=1)
    result = decode_bench.run_decode_bench(cfg, progress=False)
    rows = result["rows"]
    assert len(rows) == 4 and all(r["tokens_per_s"] > 0 for r in rows)
    by_batch = {}
    for r in rows:
        by_batch.setdefault(r["batch"], set()).add(r["state_bytes"])
    assert all(len(v) == 1 for v in by_batch.values())  # same bytes at 4 and 24 tokens of context
    assert by_batch[2].pop() == 2 * by_batch[1].pop()
    decode_bench.save(result, tmp_path / "decode-cpu.json")
    assert (tmp_path / "decode-cpu.png").exists()


def test_decode_bench_refuses_graph_modes_on_cpu():
    with pytest.raises(ValueError, match="CUDA"):
        decode_bench.DecodeBenchConfig(modes=("graph",))
    with pytest.raises(ValueError, match="unknown"):
        decode_bench.DecodeBenchConfig(modes=("warp",))


def test_memory_cap_arithmetic():
    assert throughput.batch_under_cap(cap=1000, weights=400, per_seq=100, reserve=0.1, limit=64) == 5
    assert throughput.batch_under_cap(cap=1000, weights=950, per_seq=100, reserve=0.1, limit=64) == 0
    assert throughput.batch_under_cap(cap=10**9, weights=0, per_seq=1, reserve=0.0, limit=7) == 7
    lengths = throughput.generation_lengths((5, 9), 200, seed=3)
    assert min(lengths) == 5 and max(lengths) == 9
    assert lengths == throughput.generation_lengths((5, 9), 200, seed=3)


def test_throughput_inprocess_smoke(tmp_path):
    """Under a cap the Transformer's KV cache at long generations limits its batch; Mamba's does not."""
    cfg = throughput.ThroughputConfig(intervals=((2, 4), (40, 48)), memory_caps=("0.6MB",), prompt_len=8,
                                      num_requests=4)
    result = throughput.run_inprocess(cfg, progress=False)
    short, long_ = result["rows"]
    assert long_["transformer_bytes_per_seq"] > short["transformer_bytes_per_seq"]
    assert long_["mamba_bytes_per_seq"] == short["mamba_bytes_per_seq"]
    assert long_["transformer_batch"] < long_["mamba_batch"] == 4
    for r in result["rows"]:
        assert r["mamba_tokens_per_s"] > 0 and r["transformer_tokens_per_s"] > 0 and r["ratio"] > 0
        assert r["transformer_path"] == "generate/dynamic" and r["mamba_path"] == "eager"
    throughput.save(result, tmp_path / "throughput-cpu.json")
    assert (tmp_path / "throughput-cpu.png").exists()


def test_throughput_against_two_endpoints(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from promptcot_mamba.llm.scripted_server import ScriptedEndpoint, serve_in_thread

    def words(k):
        return lambda route, body, i: " ".join(["w"] * min(k, body["max_tokens"]))

    fast, slow = ScriptedEndpoint(responder=words(50), keep_bodies=True), ScriptedEndpoint(responder=words(10))
    with serve_in_thread(fast.app()) as url_a, serve_in_thread(slow.app()) as url_b:
        result = throughput.run_endpoints(url_a, url_b, ((4, 8), (16, 32)), num_requests=3, progress=False)
    rows = result["rows"]
    assert [r["mamba_tokens"] for r in rows] == [3 * 8, 3 * 32]
    assert [r["transformer_tokens"] for r in rows] == [3 * 8, 3 * 10]
    assert all(r["mamba_failed"] == 0 for r in rows)
    assert {b["max_tokens"] for b in fast.bodies} == {8, 32}
    throughput.save(result, tmp_path / "throughput-endpoints.json")


def test_pcm_bench_commands(tmp_path):
    from promptcot_mamba.cli import main

    out = tmp_path / "s.json"
    assert main(["bench", "ssd", "--device", "cpu", "--lengths", "16", "--backends", "torch", "--iters", "1",
                 "--warmup", "0", "--no-backward", "--no-plot", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["backend"] == "torch"
    out = tmp_path / "d.json"
    assert main(["bench", "decode", "--device", "cpu", "--batch-sizes", "1", "--contexts", "4", "--steps", "2",
                 "--no-plot", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["tokens_per_s"] > 0
    assert main(["bench"]) == 2
