"""Both math graders against the labelled corpus, tests/eval/data/math_grading_corpus.jsonl: 577 crafted
completions on real MATH-500, AIME and OlympiadBench problems, each with a careful human's verdict
(`truth`) and the verdict of the authors' own `calc_acc_aime.py` run unmodified (`paper_verdict`); the
README beside it says how both were made.

- strict (`verdict`) must be right on >= 98% of the clear cases (truth not `ambiguous`), graded against the
  gold the loader gives (golds defective upstream are fixed by benchmarks.GOLD_ERRATA);
- `paper_verdict` must equal the authors' verdict on >= 99% of all cases, graded against the gold string
  their script was given (the row's `gold`, defects included).

Both run through the grading pool, as `pcm eval` runs them. The failure messages list every miss.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from promptcot_mamba.common.files import read_jsonl
from promptcot_mamba.eval.benchmarks import load_benchmark
from promptcot_mamba.eval.harness import math_options
from promptcot_mamba.eval.math_grader import MathGradeConfig, MathGrader

CORPUS = Path(__file__).parent / "data" / "math_grading_corpus.jsonl"

pytestmark = pytest.mark.slow  # ~1,150 verifications: about 20-30 s on two cores


@pytest.fixture(scope="module")
def graded():
    rows = read_jsonl(CORPUS)
    problems = {b: load_benchmark(b).by_id() for b in {r["benchmark"] for r in rows}}
    strict_items = []
    for r in rows:
        p = problems[r["benchmark"]][r["problem_id"]]
        strict_items.append((r["completion"], p.gold, math_options(p)))
    grader = MathGrader(MathGradeConfig(paper=False, timeout_s=60.0))
    try:
        workers = grader.pool.n  # workers started and warm before the clock starts
        t0 = time.perf_counter()
        strict = grader.grade_many(strict_items)
        # the paper's grader sees the gold string the authors' script saw
        paper = grader.pool.map("promptcot_mamba.eval.math_grader:run_job",
                                [("paper", r["completion"], r["gold"]) for r in rows], 60.0)
        seconds = time.perf_counter() - t0
    finally:
        grader.close()
    print(f"\nmath grading: {2 * len(rows)} verifications (strict + paper) in {seconds:.1f} s on "
          f"{workers} workers = {1000 * seconds / (2 * len(rows)):.1f} s per 1,000")
    return rows, [g.verdict for g in strict], ["correct" if v is True else "wrong" for v in paper]


def test_strict_is_right_on_the_clear_cases(graded):
    rows, strict, _ = graded
    clear = [(r, v) for r, v in zip(rows, strict) if r["truth"] != "ambiguous"]
    misses = [(r["id"], r["truth"], v) for r, v in clear if (v == "correct") != (r["truth"] == "correct")]
    right = 1 - len(misses) / len(clear)
    assert len(clear) == 536 and right >= 0.98, f"strict right on {right:.1%} of {len(clear)}; misses: {misses}"


def test_paper_verdict_reproduces_the_authors_grader(graded):
    rows, _, paper = graded
    misses = [(r["id"], r["paper_verdict"], v) for r, v in zip(rows, paper) if v != r["paper_verdict"]]
    agree = 1 - len(misses) / len(rows)
    assert len(rows) == 577 and agree >= 0.99, f"paper_verdict equals the authors' on {agree:.1%}; misses: {misses}"
