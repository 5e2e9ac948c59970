"""The harness with a scripted LLMClient: protocol defaults, exact n with distinct seeds, resume, failures as
infra_error, the report and custom problem sets (the demo's API). Grading files made elsewhere:
test_eval_grade.py."""

from __future__ import annotations

import json

import pytest

from promptcot_mamba.eval.benchmarks import load_benchmark
from promptcot_mamba.eval.harness import EvalConfig, SamplingConfig, evaluate, evaluate_problems
from promptcot_mamba.eval.report import ShortfallError
from promptcot_mamba.llm.base import Generation
from promptcot_mamba.text.prompts import MATH_SUFFIX


class ScriptedClient:
    """Math: correct on even seeds. Code: the canonical solution. Optionally fails some calls."""

    name = "scripted"

    def __init__(self, fail_seeds=(), canonical=None, drop=False):
        self.requests = []
        self.fail_seeds = set(fail_seeds)
        self.canonical = canonical or {}
        self.drop = drop

    def generate(self, requests):
        out = []
        for r in requests:
            self.requests.append(r)
            md = r.metadata
            if r.seed in self.fail_seeds:
                out.append([Generation(text="", error="backend exploded")])
                continue
            if md["problem_id"] in self.canonical:
                text = f"plan</think>\n```python\n{self.canonical[md['problem_id']]}\n```"
            else:
                ans = md["answer"] if r.seed % 2 == 0 else "123456789"
                text = f"thinking...\n</think>\n\nSo \\boxed{{{ans}}}."
            out.append([Generation(text=text, finish_reason="stop" if r.seed != 3 else "length",
                                   completion_tokens=20, seed=r.seed, latency_s=0.01)])
        return out[:-1] if self.drop else out


def test_protocol_defaults():
    s = SamplingConfig()
    assert (s.temperature, s.top_p, s.repetition_penalty, s.max_tokens) == (0.8, 0.95, 1.1, 65536)
    assert [s.n_for(b) for b in ("aime24", "aime25", "livecodebench", "math500", "humanevalplus")] == [16, 16, 8, 1, 1]
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0)


def test_run_writes_exact_n_rows_with_distinct_seeds_and_a_report(tmp_path):
    client = ScriptedClient()
    cfg = EvalConfig(out_dir=str(tmp_path), benchmarks=("aime24",), sampling=SamplingConfig(n=4), limit=3,
                     progress=False, model_name="scripted-model", workers=1)
    report = evaluate(client, cfg)
    assert len(client.requests) == 12
    r0 = client.requests[0]
    assert r0.prompt.endswith("<|im_start|>assistant\n<think>\n") and MATH_SUFFIX in r0.prompt
    assert (r0.temperature, r0.top_p, r0.repetition_penalty, r0.max_tokens, r0.n) == (0.8, 0.95, 1.1, 65536, 1)
    rows = [json.loads(x) for x in (tmp_path / "aime24" / "verdicts.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    by_problem = {}
    for r in rows:
        by_problem.setdefault(r["problem_id"], []).append(r["seed"])
        for k in ("problem_id", "sample_index", "seed", "completion", "extracted", "verdict", "grade_time_s",
                  "gen_time_s", "paper_verdict"):
            assert k in r
    assert all(sorted(s) == [0, 1, 2, 3] for s in by_problem.values())
    s = report["benchmarks"][0]
    assert s["score"] == pytest.approx(50.0) and s["n"] == 4 and s["metric"] == "avg@4" and s["complete"]
    assert (s["n_min"], s["n_max"]) == (4, 4) and s["n_per_problem"] == {pid: 4 for pid in by_problem}
    assert s["truncation_rate"] == pytest.approx(0.25) and s["paper_score"] == pytest.approx(50.0)
    assert s["dataset"]["sha256"].startswith("a49911aa") and s["dataset"]["limit"] == 3
    assert s["sampling"]["temperature"] == 0.8
    md = (tmp_path / "report.md").read_text()
    assert "| Model | AIME 24 |" in md and "scripted-model" in md and "50.0 ± 0.0" in md


def test_the_report_shows_strict_and_paper_side_by_side(tmp_path, capsys):
    """Samples the two graders judge differently: an unfinished thought (the paper's grader reads it), an
    answer within 1e-4 of the gold (the paper's grader accepts it), and a space before i (ours accepts)."""
    from promptcot_mamba.cli import main

    bench = load_benchmark("math500")
    complex_pid = next(p.problem_id for p in bench.problems if p.gold == "1+274i")
    big = next(p for p in bench.problems if p.gold == "13535")
    answers = {complex_pid: "</think>\\boxed{1+274 i}", big.problem_id: "</think>\\boxed{13536}"}
    first = bench.problems[0]
    answers[first.problem_id] = f"so the answer is \\boxed{{{first.gold}}}"  # never closes its thought
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"benchmark": "math500", "problem_id": pid, "completion": c}) + "\n"
                               for pid, c in answers.items()))
    assert main(["eval", "grade", str(samples), "--out", str(tmp_path / "out"), "--allow-partial", "--workers", "1",
                 "--quiet"]) == 0
    rows = {r["problem_id"]: r for r in map(json.loads, (tmp_path / "out" / "verdicts.jsonl").read_text().splitlines())}
    assert (rows[complex_pid]["verdict"], rows[complex_pid]["paper_verdict"]) == ("correct", "correct")
    assert (rows[big.problem_id]["verdict"], rows[big.problem_id]["paper_verdict"]) == ("wrong", "correct")
    assert (rows[first.problem_id]["verdict"], rows[first.problem_id]["paper_verdict"]) == ("no_answer", "correct")
    s = json.loads((tmp_path / "out" / "report.json").read_text())["benchmarks"][0]
    assert s["score"] == pytest.approx(100 / 3) and s["paper_score"] == pytest.approx(100.0)
    assert s["paper_minus_strict"] == pytest.approx(200 / 3)
    assert s["disagreements"]["paper_only"] == 2 and s["disagreements"]["strict_only"] == 0
    assert {e["problem_id"] for e in s["disagreements"]["examples"]["paper_only"]} == {big.problem_id, first.problem_id}
    capsys.readouterr()
    assert main(["eval", "report", str(tmp_path / "out")]) == 0
    md = capsys.readouterr().out
    assert "(strict) | 33.3 ± 33.3" in md and "(paper) | 100.0" in md and "+66.67" in md
    assert "Where strict and paper disagree" in md and big.problem_id in md and "wrong → correct" in md
    assert "**Paper**" in md and "Table 1" in md


def test_resume_skips_finished_and_retries_failed_samples(tmp_path):
    cfg = EvalConfig(out_dir=str(tmp_path), benchmarks=("aime24",), sampling=SamplingConfig(n=2), limit=2,
                     progress=False, workers=1)
    report = evaluate(ScriptedClient(fail_seeds={1}), cfg)
    s = report["benchmarks"][0]
    assert s["verdicts"]["infra_error"] == 2 and not s["complete"] and s["samples"] == 4
    again = ScriptedClient()
    report = evaluate(again, cfg)
    assert len(again.requests) == 2 and all(r.seed == 1 for r in again.requests)  # only the failed ones
    assert report["benchmarks"][0]["complete"] and report["benchmarks"][0]["score"] == pytest.approx(50.0)
    third = ScriptedClient()
    evaluate(third, cfg)
    assert third.requests == []


def test_a_client_returning_too_few_results_is_an_error(tmp_path):
    cfg = EvalConfig(out_dir=str(tmp_path), benchmarks=("aime25",), sampling=SamplingConfig(n=2), limit=2,
                     progress=False, workers=1)
    with pytest.raises(RuntimeError, match="returned"):
        evaluate(ScriptedClient(drop=True), cfg)


def test_code_benchmark_through_the_harness(tmp_path):
    bench = load_benchmark("humaneval", limit=3)
    canonical = {p.problem_id: p.data["prompt"] + p.data["canonical_solution"] for p in bench.problems}
    cfg = EvalConfig(out_dir=str(tmp_path), benchmarks=("humaneval",), limit=3, progress=False, workers=1)
    report = evaluate(ScriptedClient(canonical=canonical), cfg)
    s = report["benchmarks"][0]
    assert s["score"] == 100.0 and s["metric"] == "pass@1" and s["sandbox_isolation"]
    assert report["graders"]["sandbox_isolation"] in ("bwrap", "rlimits")


def test_evaluate_problems_custom_set_for_the_demo(tmp_path):
    problems = [("p1", "What is 1+1?", "2"), {"id": "p2", "problem": "What is 2+2?", "answer": "4"}]
    report = evaluate_problems(ScriptedClient(), problems, tmp_path, name="toy", n=2, model_name="toy-model",
                               workers=1)
    s = report["benchmarks"][0]
    assert s["benchmark"] == "toy" and s["score"] == pytest.approx(50.0) and s["samples"] == 4
    assert s["dataset"]["source"] == "custom"
    assert (tmp_path / "toy" / "verdicts.jsonl").exists() and (tmp_path / "report.md").exists()


def test_hub_fallback_normalises_rows(tmp_path, monkeypatch):
    """No local copy: rows come from `datasets.load_dataset` (stubbed here: no network in tests)."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(repo, config=None, split=None):
        calls.append((repo, config, split))
        return [{"id": 60 + i, "problem": f"P{i}", "answer": f"{i:03d}", "url": "u", "year": "2024"} for i in range(30)]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    bench = load_benchmark("aime24", benchmark_dir=tmp_path)
    assert calls == [("HuggingFaceH4/aime_2024", None, "train")]
    assert bench.source == "hub:HuggingFaceH4/aime_2024" and len(bench.sha256) == 64
    assert [p.gold for p in bench.problems[:3]] == ["0", "1", "2"]
    with pytest.raises(FileNotFoundError, match="Hub is disabled"):
        load_benchmark("aime24", benchmark_dir=tmp_path, allow_hub=False)


def test_summarize_refuses_a_shortfall():
    from promptcot_mamba.eval.benchmarks import custom_benchmark
    from promptcot_mamba.eval.report import summarize

    bench = custom_benchmark("toy", [("a", "q", "1"), ("b", "q", "2")])
    rows = [{"problem_id": "a", "sample_index": 0, "verdict": "correct"},
            {"problem_id": "a", "sample_index": 1, "verdict": "correct"},
            {"problem_id": "b", "sample_index": 0, "verdict": "wrong"}]
    with pytest.raises(ShortfallError, match="exactly n=2"):
        summarize(bench, rows, n=2, sampling=None)


def test_local_files_are_pinned_by_sha256(tmp_path):
    (tmp_path / "aime24").mkdir()
    (tmp_path / "aime24" / "test.jsonl").write_text('{"id": "x", "problem": "p", "answer": "1"}\n')
    with pytest.raises(ValueError, match="sha256"):
        load_benchmark("aime24", benchmark_dir=tmp_path)
