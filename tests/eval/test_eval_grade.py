"""`pcm eval grade` on files made elsewhere: the whole file is checked before any grading, problems may have
different numbers of samples (the report gives n per problem and the mean of per-problem means), failed
generations are infra_error, and verdicts already graded survive a later benchmark's failure."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest

import promptcot_mamba.eval.harness as harness
from promptcot_mamba.cli import main
from promptcot_mamba.eval.benchmarks import custom_benchmark, load_benchmark
from promptcot_mamba.eval.report import summarize


def _write(path: Path, rows) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    return path


def _right(p) -> str:
    return f"thinking</think>\\boxed{{{p.gold}}}"


def _code(p) -> str:
    return f"</think>```python\n{p.data['prompt']}{p.data['canonical_solution']}```"


@pytest.fixture
def grading_calls(monkeypatch):
    """The benchmarks `grade_rows` was called for (it still grades: this only records)."""
    calls, real = [], harness.grade_rows

    def recording(bench, rows, graders, **kw):
        calls.append(bench.name)
        return real(bench, rows, graders, **kw)

    monkeypatch.setattr(harness, "grade_rows", recording)
    return calls


def test_pcm_eval_grade_external_samples(tmp_path, capsys):
    aime = load_benchmark("aime25").problems
    he = load_benchmark("humaneval", limit=2).problems
    rows = [{"benchmark": "aime25", "problem_id": p.problem_id, "completion": f"</think>\\boxed{{{p.gold}}}"}
            for p in aime]
    rows += [{"benchmark": "aime25", "problem_id": p.problem_id, "completion": "no think \\boxed{1}"} for p in aime]
    rows += [{"benchmark": "humaneval", "problem_id": p.problem_id, "sample_index": 0, "completion": _code(p)}
             for p in he]
    src = _write(tmp_path / "samples.jsonl", rows)
    out = tmp_path / "graded"
    assert main(["eval", "grade", str(src), "--out", str(out), "--allow-partial", "--quiet", "--workers", "1"]) == 0
    verdicts = [json.loads(x) for x in (out / "verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == len(rows) and all("verdict" in v for v in verdicts)
    report = json.loads((out / "report.json").read_text())
    by = {s["benchmark"]: s for s in report["benchmarks"]}
    assert by["aime25"]["n"] == 2 and by["aime25"]["score"] == pytest.approx(50.0)
    assert (by["aime25"]["n_min"], by["aime25"]["n_max"], by["aime25"]["metric"]) == (2, 2, "avg@2")
    assert by["aime25"]["verdicts"]["no_answer"] == 30 and by["humaneval"]["score"] == 100.0
    assert by["humaneval"]["dataset"]["partial"] == "2/164" and report["samples_sha256"]
    assert "AIME 25" in capsys.readouterr().out
    assert "samples per problem vary" not in (out / "report.md").read_text()
    assert main(["eval", "report", str(out)]) == 0 and "HumanEval" in capsys.readouterr().out


def test_mixed_sample_counts_and_a_subset(tmp_path, capsys):
    """Four AIME problems with 3, 1, 2 and 2 samples; one failed generation (an `error`, null completion)
    and one empty completion; two HumanEval problems with 1 and 2 samples."""
    a = load_benchmark("aime24").problems[:4]
    he = load_benchmark("humaneval", limit=2).problems
    rows = [{"benchmark": "aime24", "problem_id": a[0].problem_id, "sample_index": i, "completion": c}
            for i, c in ((0, _right(a[0])), (1, "</think>\\boxed{123456789}"), (2, _right(a[0])))]
    rows += [{"benchmark": "humaneval", "problem_id": he[0].problem_id, "completion": _code(he[0])}]
    rows += [{"benchmark": "aime24", "problem_id": a[1].problem_id, "completion": _right(a[1])},
             {"benchmark": "aime24", "problem_id": a[2].problem_id, "completion": None, "error": "HTTP 500"},
             {"benchmark": "aime24", "problem_id": a[2].problem_id, "completion": _right(a[2])},
             {"benchmark": "aime24", "problem_id": a[3].problem_id, "completion": ""},
             {"benchmark": "aime24", "problem_id": a[3].problem_id, "completion": "</think>\\boxed{123456789}"}]
    rows += [{"benchmark": "humaneval", "problem_id": he[1].problem_id, "completion": _code(he[1])}] * 2
    src = _write(tmp_path / "samples.jsonl", rows)
    out = tmp_path / "graded"
    assert main(["eval", "grade", str(src), "--out", str(out), "--allow-partial", "--quiet", "--workers", "1"]) == 0

    verdicts = [json.loads(x) for x in (out / "verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == len(rows)
    v = {(r["problem_id"], r["sample_index"]): r["verdict"] for r in verdicts}
    assert [v[(a[0].problem_id, i)] for i in range(3)] == ["correct", "wrong", "correct"]
    assert v[(a[2].problem_id, 0)] == "infra_error" and v[(a[2].problem_id, 1)] == "correct"
    assert v[(a[3].problem_id, 0)] == "no_answer" and v[(he[1].problem_id, 1)] == "correct"

    report = json.loads((out / "report.json").read_text())
    s = {b["benchmark"]: b for b in report["benchmarks"]}["aime24"]
    assert s["n_per_problem"] == {a[0].problem_id: 3, a[1].problem_id: 1, a[2].problem_id: 2, a[3].problem_id: 2}
    assert (s["n"], s["n_min"], s["n_max"], s["metric"]) == (None, 1, 3, "avg@1-3")
    means = [2 / 3, 1.0, 0.5, 0.0]  # the failed generation counts as not correct (eval/verdict.py)
    assert s["score"] == pytest.approx(100 * statistics.mean(means))  # 54.2; pooled over samples would be 50
    assert s["stderr"] == pytest.approx(100 * statistics.stdev(means) / 2)
    assert s["std_across_runs"] is None and not s["complete"] and s["infra_errors"] == [[a[2].problem_id, 0]]
    assert s["problems"] == 4 and s["samples"] == 8 and s["dataset"]["partial"] == "4/30"
    h = {b["benchmark"]: b for b in report["benchmarks"]}["humaneval"]
    assert h["n_per_problem"] == {he[0].problem_id: 1, he[1].problem_id: 2} and h["score"] == 100.0
    md = (out / "report.md").read_text()
    assert "AIME 24: samples per problem vary, n = 1–3 (problems with n=3: 1, n=2: 2, n=1: 1); " in md
    assert "HumanEval: samples per problem vary, n = 1–2" in md and "avg@1-3" in capsys.readouterr().out


def _good_rows():
    """A whole, valid AIME 24 file: what an early-grading implementation would grade before the bad row."""
    return [{"benchmark": "aime24", "problem_id": p.problem_id, "completion": _right(p)}
            for p in load_benchmark("aime24").problems]


HE0 = "HumanEval/0"
BAD = {  # name: (last lines of the file, the field the message names)
    "missing_field": ([{"benchmark": "humaneval", "problem_id": HE0}], "completion: missing"),
    "unknown_benchmark": ([{"benchmark": "aime26", "problem_id": "1", "completion": ""}], "benchmark: unknown 'aime26'"),
    "unknown_problem": ([{"benchmark": "humaneval", "problem_id": "nope", "completion": ""}],
                        "problem_id: 'nope' is not in the benchmark humaneval"),
    "bad_index": ([{"benchmark": "humaneval", "problem_id": HE0, "sample_index": "0", "completion": ""}],
                  "sample_index: expected an integer >= 0"),
    "null_completion": ([{"benchmark": "humaneval", "problem_id": HE0, "completion": None}], "completion: expected"),
    "bad_id_type": ([{"benchmark": "humaneval", "problem_id": [0], "completion": ""}], "problem_id: expected"),
    "not_json": (['{"benchmark": "humaneval", "problem_id": \n'], "not valid JSON"),
    "duplicate": ([{"benchmark": "humaneval", "problem_id": HE0, "sample_index": 0, "completion": ""}] * 2,
                  "sample_index: problem 'HumanEval/0' of humaneval already has sample 0 (line 32)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_row_is_refused_before_any_grading(case, tmp_path, capsys, grading_calls):
    tail, message = BAD[case]
    src = _write(tmp_path / "samples.jsonl", [*_good_rows(), "\n", *tail])  # line 31 is blank
    out = tmp_path / "graded"
    assert main(["eval", "grade", str(src), "--out", str(out), "--allow-partial", "--quiet", "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pcm eval grade: {src}:{31 + len(tail)}: ") and message in err, err
    assert len(err.splitlines()) == 1
    assert grading_calls == [] and not out.exists()


def test_a_subset_needs_allow_partial_and_is_refused_before_grading(tmp_path, capsys, grading_calls):
    rows = [*_good_rows(), {"benchmark": "humaneval", "problem_id": HE0, "completion": ""}]
    src = _write(tmp_path / "samples.jsonl", rows)
    out = tmp_path / "graded"
    assert main(["eval", "grade", str(src), "--out", str(out), "--quiet", "--workers", "1"]) == 2
    assert "humaneval: 1 of 164 problems present; pass --allow-partial" in capsys.readouterr().err
    assert grading_calls == [] and not out.exists()
    assert main(["eval", "report", str(tmp_path / "nothing")]) == 2


def test_verdicts_survive_a_later_benchmark_failure(tmp_path, monkeypatch, grading_calls):
    from promptcot_mamba.eval.code_grader import CodeGrader

    def broken(self, *args, **kwargs):  # a grader failure after AIME 24 was graded (fault injection)
        raise RuntimeError("sandbox broke")

    monkeypatch.setattr(CodeGrader, "grade_many", broken)
    rows = [*_good_rows(), {"benchmark": "humaneval", "problem_id": HE0, "completion": ""}]
    src = _write(tmp_path / "samples.jsonl", rows)
    out = tmp_path / "graded"
    out.mkdir()
    (out / "report.json").write_text('{"from": "an earlier grading"}')
    with pytest.raises(RuntimeError, match="sandbox broke"):
        harness.grade_file(src, out, allow_partial=True, progress=False, workers=1)
    assert grading_calls == ["aime24", "humaneval"]
    verdicts = [json.loads(x) for x in (out / "verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == 30 and {v["verdict"] for v in verdicts} == {"correct"}
    assert not (out / "report.json").exists()  # a stale report never sits beside these verdicts


def test_stderr_is_calibrated_when_n_varies():
    """Simulated benchmarks: 20 problems of random difficulty, 1-8 samples each (independent of difficulty).
    The reported squared standard error must match the score's actual variance over repetitions; the
    pooled binomial one, sqrt(p(1-p)/samples), is about 1/3 of it here and fails this test."""
    rng = random.Random(0)
    bench = custom_benchmark("sim", [(str(i), "q", "1") for i in range(20)])
    scores, variances = [], []
    for _ in range(600):
        rows = []
        for p in bench.problems:
            q = rng.betavariate(0.5, 0.5)
            rows += [{"problem_id": p.problem_id, "sample_index": i,
                      "verdict": "correct" if rng.random() < q else "wrong"} for i in range(rng.randint(1, 8))]
        s = summarize(bench, rows, n=None, sampling=None)
        scores.append(s["score"])
        variances.append(s["stderr"] ** 2)
    ratio = statistics.mean(variances) / statistics.variance(scores)
    assert 0.8 < ratio < 1.25, ratio
