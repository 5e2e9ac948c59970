"""Every gold of the seven benchmarks can be graded as it stands: math golds parse, with the strict grader's
parser, to what they say (never to 0, an empty set, a lone letter or a tautology unless that is the
answer), code problems carry non-empty tests. Golds defective upstream are fixed in
benchmarks.GOLD_ERRATA, each with its reason, and the scan finds every one of them without the fix."""

from __future__ import annotations

import dataclasses

import pytest

from promptcot_mamba.eval.benchmarks import (
    ALL_BENCHMARKS,
    GOLD_ERRATA,
    custom_benchmark,
    load_benchmark,
    scan_golds,
)


@pytest.mark.parametrize("name", ALL_BENCHMARKS)
def test_every_gold_can_be_graded(name):
    bench = load_benchmark(name, lcb_tests="samples")
    assert bench.problems and scan_golds(bench) == []


def test_the_errata_fix_exactly_what_the_scan_finds_upstream():
    bench = load_benchmark("olympiadbench")
    fixed = {p.problem_id: p for p in bench.problems if "gold_erratum" in p.data}
    assert set(fixed) == set(GOLD_ERRATA["olympiadbench"])
    upstream = [dataclasses.replace(p, gold=p.data["gold_erratum"]["upstream"]) for p in fixed.values()]
    found = dict(scan_golds(dataclasses.replace(bench, problems=upstream)))
    assert set(found) == set(fixed), found
    assert "trivial value 0" in found["1970"] and "sentence" in found["1965"]  # both gave 0 a free point
    assert "does not parse" in found["2045"] and "does not parse" in found["1782"]
    assert "tautology" in found["2212"]
    for pid, p in fixed.items():
        assert p.gold == GOLD_ERRATA["olympiadbench"][pid][0] and p.data["gold_erratum"]["reason"]


def test_trivial_golds_are_flagged_unless_they_say_so():
    bench = custom_benchmark("toy", [("zero", "q", "0"), ("letter", "q", "\\text{(C)}"), ("word", "q", "\\text{east}"),
                                     ("sentence", "q", "all n, where n is even and n=0"), ("junk", "q", "t(0,4]"),
                                     ("empty", "q", " ")])
    assert [pid for pid, _ in scan_golds(bench)] == ["sentence", "junk", "empty"]


def test_code_problems_without_tests_are_flagged():
    bench = load_benchmark("humaneval", limit=2)
    bench.problems[1].data["test"] = ""
    assert scan_golds(bench) == [(bench.problems[1].problem_id, "test is missing or empty")]


def test_the_report_lists_the_gold_errata():
    from promptcot_mamba.eval.report import summarize

    bench = load_benchmark("olympiadbench")
    rows = [{"problem_id": p.problem_id, "sample_index": 0, "verdict": "wrong"} for p in bench.problems]
    errata = summarize(bench, rows, n=1, sampling=None)["errata"]
    assert any(e.startswith("1970: gold `(-\\infty, 0) \\cup\\{1\\}` used;") for e in errata)
