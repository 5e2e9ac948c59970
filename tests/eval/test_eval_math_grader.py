"""Strict math grading on every gold answer of the four math benchmarks, perturbations, no-answer cases,
OlympiadBench multi-answer/tolerance rules, the timeout pool, and the paper-compatible lenient mode."""

from __future__ import annotations

import re
import time

import pytest

from promptcot_mamba.eval.benchmarks import load_benchmark
from promptcot_mamba.eval.math_grader import (
    MathGradeConfig,
    MathGrader,
    find_boxed,
    grade_math,
    split_top_level,
)
from promptcot_mamba.eval.paper_grader import extract_answer, lenient_worker
from promptcot_mamba.eval.worker_pool import Failed, TimedOut, TimeoutPool


@pytest.fixture(scope="module")
def grader():
    g = MathGrader(MathGradeConfig(lenient=False, timeout_s=20))
    yield g
    g.close()


def _opts(p):
    tol = p.data.get("error")
    return {"multiple": bool(p.data.get("multiple")), "tolerance": float(tol) if tol else None}


def _perturb(gold: str) -> str:
    """Change the value: bump the first digit, or add 1 when there is none."""
    m = re.search(r"\d", gold)
    if m:
        return gold[:m.start()] + str((int(m.group()) + 1) % 10) + gold[m.end():]
    return gold + "+1"


# math-verify lowercases symbols, so OlympiadBench 2212's gold `N=n` parses to the tautology Eq(n, n) and
# accepts any `N=n+c`: a known false positive of the strict grader (listed in the report's errata).
KNOWN_FALSE_POSITIVES = {"2212"}
SIZES = [("math500", 500), ("aime24", 30), ("aime25", 30), ("olympiadbench", 675)]


@pytest.mark.parametrize("name,count", SIZES)
def test_every_gold_answer_grades_correct(grader, name, count):
    bench = load_benchmark(name)
    assert len(bench.problems) == count
    gold_items = [(f"Some thinking.\n</think>\n\n\\boxed{{{p.gold}}}", p.gold, _opts(p)) for p in bench.problems]
    grades = grader.grade_many(gold_items)
    bad = [(p.problem_id, p.gold, g.verdict) for p, g in zip(bench.problems, grades) if g.verdict != "correct"]
    assert not bad, bad[:10]


def _check_perturbed(grader, problems):
    wrong_items = [(f"</think>\\boxed{{{_perturb(p.gold)}}}", p.gold, _opts(p)) for p in problems]
    grades = grader.grade_many(wrong_items)
    bad = {p.problem_id for p, g in zip(problems, grades) if g.verdict != "wrong"}
    assert bad <= KNOWN_FALSE_POSITIVES, sorted(bad)[:10]


@pytest.mark.parametrize("name,count", SIZES)
def test_perturbed_answers_grade_wrong_subset(grader, name, count):
    problems = load_benchmark(name).problems
    _check_perturbed(grader, problems[:: max(1, len(problems) // 40)])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["math500", "olympiadbench"])
def test_perturbed_answers_grade_wrong_all(grader, name):
    _check_perturbed(grader, load_benchmark(name).problems)


def test_no_think_close_or_no_box_is_no_answer(grader):
    assert grader.grade("I think the answer is \\boxed{5}", "5").verdict == "no_answer"
    assert grader.grade("\\boxed{5} in thought</think> so it is five", "5").verdict == "no_answer"
    g = grader.grade("draft \\boxed{4}</think> final \\boxed{5}", "5")
    assert g.verdict == "correct" and g.extracted == "5"
    assert grader.grade("</think>\\boxed{4} then \\boxed{6}", "6").verdict == "correct"  # the last box counts


def test_equivalent_forms(grader):
    cases = [("\\frac{1}{2}", "0.5"), ("\\frac12", "\\dfrac{1}{2}"), ("50\\%", "0.5"), ("(3, \\frac{\\pi}{2})", "(3,\\pi/2)"),
             ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}")]
    for gold, pred in cases:
        assert grader.grade(f"</think>\\boxed{{{pred}}}", gold).verdict == "correct", (gold, pred)
    assert grader.grade("</think>\\boxed{3.14159}", "\\pi").verdict == "wrong"


def test_olympiad_multiple_answers_are_unordered_multisets(grader):
    gold = "(1,8,19), (2,7,13), (4,5,7)"
    ok = "</think>The triples are \\boxed{(4,5,7)}, \\boxed{(2,7,13)} and \\boxed{(1,8,19)}."
    assert grader.grade(ok, gold, multiple=True).verdict == "correct"
    assert grader.grade("</think>\\boxed{(4,5,7), (2,7,13)}", gold, multiple=True).verdict == "wrong"
    assert grader.grade("</think>\\boxed{x = \\pm 2}", "-2, 2", multiple=True).verdict == "correct"
    assert split_top_level("(1,2), [3,4), \\{5,6\\}") == ["(1,2)", "[3,4)", "\\{5,6\\}"]


def test_tolerance_field(grader):
    assert grader.grade("</think>\\boxed{4.25}", "4.2", tolerance=0.1).verdict == "correct"
    assert grader.grade("</think>\\boxed{4.25}", "4.2").verdict == "wrong"


def test_find_boxed_is_brace_matched():
    assert find_boxed("a \\boxed{\\frac{1}{2}} b \\fbox{x^{2}} c \\boxed 7.") == ["\\frac{1}{2}", "x^{2}", "7."]


def test_grade_math_entry_point():
    assert grade_math("</think>\\boxed{204}", "204") == "correct"
    assert grade_math("no think \\boxed{204}", "204") == "no_answer"


def test_timeout_pool_kills_a_stuck_job_and_recovers():
    pool = TimeoutPool(1)
    try:
        t0 = time.monotonic()
        out = pool.map("time:sleep", [(30,), (0,)], timeout_s=1.0)
        assert isinstance(out[0], TimedOut) and out[1] is None and time.monotonic() - t0 < 15
    finally:
        pool.close()


def test_a_job_that_raises_comes_back_as_failed():
    pool = TimeoutPool(1)
    try:
        out = pool.map("builtins:int", [("x",), ("5",)], timeout_s=30.0)
        assert isinstance(out[0], Failed) and "ValueError" in out[0].error and out[1] == 5
    finally:
        pool.close()


def test_a_worker_imports_the_graders_without_torch():
    # Workers import the package the ordinary way; its lazy __init__ keeps torch out, so no worker start
    # (one per core, and one after every killed job) pays for importing torch. `builtins:eval` runs the
    # check inside the worker.
    pool = TimeoutPool(1, preload=("promptcot_mamba.eval.math_grader", "promptcot_mamba.eval.paper_grader"))
    try:
        check = "'torch' in __import__('sys').modules"
        assert pool.map("builtins:eval", [(check,)], timeout_s=60.0) == [False]
    finally:
        pool.close()


def test_lenient_paper_mode_grades_the_whole_completion(grader):
    truncated = "Let me think... so the answer is \\boxed{42} but wait"
    assert lenient_worker(truncated, "42") is True  # the paper's grader credits unfinished thoughts
    assert grader.grade(truncated, "42").verdict == "no_answer"
    assert extract_answer("blah 3 then 17 apples") == "17"  # last-number fallback (lenient only)
    assert lenient_worker("the final answer is $50$. I hope it is correct", "0.5") is True  # percent leniency
    g = MathGrader(MathGradeConfig(lenient=True, workers=1))
    try:
        r = g.grade("</think>\\boxed{7}", "7")
        assert r.verdict == "correct" and r.lenient == "correct"
    finally:
        g.close()
