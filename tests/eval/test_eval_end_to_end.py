"""`pcm eval run` end to end on a tiny random model: through the in-process engine, and through `pcm serve`
on 127.0.0.1 with the OpenAI client. The model is random, so the scores are ~0; what is checked is that
every sample is generated, graded and reported."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from promptcot_mamba.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from promptcot_mamba.generate.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _check_report(out, samples_by_bench):
    report = json.loads((out / "report.json").read_text())
    by = {s["benchmark"]: s for s in report["benchmarks"]}
    assert set(by) == set(samples_by_bench)
    for name, n_samples in samples_by_bench.items():
        s = by[name]
        assert s["samples"] == n_samples and s["complete"], s
        assert sum(s["verdicts"].values()) == n_samples
        rows = (out / name / "verdicts.jsonl").read_text().splitlines()
        assert len(rows) == n_samples
    assert (out / "report.md").read_text().startswith("# Evaluation")
    return report


def test_pcm_eval_run_in_process_engine(tiny_model, tmp_path):
    out = tmp_path / "run"
    args = ["eval", "run", "--model", str(tiny_model), "--benchmarks", "aime24,humaneval", "--limit", "2",
            "--n", "2", "--max-tokens", "12", "--out", str(out), "--quiet", "--workers", "1"]
    assert main(args) == 0
    report = _check_report(out, {"aime24": 4, "humaneval": 4})
    assert report["backend"] == "engine"


def test_pcm_eval_run_takes_the_kernels_setting(tiny_model, tmp_path, capsys):
    args = ["eval", "run", "--model", str(tiny_model), "--benchmarks", "aime24", "--limit", "1", "--n", "1",
            "--max-tokens", "4", "--quiet", "--workers", "1"]
    assert main([*args, "--out", str(tmp_path / "a"), "--kernels", "ssd=recurrent,matvec=aten"]) == 0
    _check_report(tmp_path / "a", {"aime24": 1})
    assert main([*args, "--out", str(tmp_path / "b"), "--kernels", "matvec=mkl"]) == 2
    assert "matvec must be one of" in capsys.readouterr().err


def test_pcm_eval_run_quantize_is_recorded_and_refused_for_an_endpoint(tiny_model, tmp_path, capsys):
    args = ["eval", "run", "--benchmarks", "aime24", "--limit", "1", "--n", "1", "--max-tokens", "4", "--quiet",
            "--workers", "1", "--quantize", "int8"]
    assert main([*args, "--model", str(tiny_model), "--out", str(tmp_path / "q")]) == 0
    report = _check_report(tmp_path / "q", {"aime24": 1})
    assert report["engine"]["quantization"] == "int8" and report["engine"]["dtype"] == "float32", report["engine"]
    assert '"quantization": "int8"' in (tmp_path / "q" / "report.md").read_text()
    assert '"quantization": "int8"' in capsys.readouterr().err  # and said on the terminal
    # an endpoint's weights are its server's business: the flag is refused, not ignored
    assert main([*args, "--base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "e")]) == 2
    assert "--quantize int8 applies to --model" in capsys.readouterr().err


def test_pcm_eval_run_through_the_openai_server(tiny_model, tmp_path):
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "promptcot_mamba", "serve", "--model", str(tiny_model),
                             "--port", str(port), "--memory-budget", "0.3", "--threads", "1"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        import httpx

        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
            time.sleep(0.3)
        out = tmp_path / "run"
        assert main(["eval", "run", "--base-url", url + "/v1", "--benchmarks", "aime25", "--limit", "3", "--n", "2",
                     "--max-tokens", "12", "--concurrency", "4", "--out", str(out), "--quiet", "--workers", "1"]) == 0
        _check_report(out, {"aime25": 6})
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
