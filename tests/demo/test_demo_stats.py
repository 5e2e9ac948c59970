"""The demo's intervals against textbook cases, and the error classifier on hand-made samples."""

from __future__ import annotations

import math
import random

import pytest

from promptcot_mamba.demo import errors, stats
from promptcot_mamba.demo.domain import parse_problem


@pytest.mark.parametrize("df,table", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045), (120, 1.980)])
def test_t_quantile_matches_the_printed_table(df, table):
    # t_{0.975, df} from any statistics textbook's table (three decimals printed)
    assert stats.t_quantile(0.975, df) == pytest.approx(table, abs=6e-4)


def test_t_interval_textbook_example():
    # n = 10 values with mean 5.0 and sample sd 1.0 exactly → 5 ± 2.2622 · 1 / √10 = [4.2846, 5.7154]
    xs = [5 + d for d in (-1, 1, -1, 1, -1, 1, -1, 1, 0, 0)]
    sd = math.sqrt(sum((x - 5) ** 2 for x in xs) / 9)
    xs = [5 + (x - 5) / sd for x in xs]  # rescale to sd 1 exactly
    lo, hi = stats.t_interval(xs)
    assert (lo, hi) == pytest.approx((4.2846, 5.7154), abs=1e-4)


def test_one_seed_interval_is_the_wald_interval_over_problems():
    # 100 problems, half solved, one seed: the textbook normal interval p ± 1.96·s/√n with s the
    # sample sd (ddof 1) of 0/1 values: 0.5 ± 1.96 · 0.50252 / 10
    acc = [[1.0] * 50 + [0.0] * 50]
    iv = stats.seed_problem_interval(acc)
    assert iv.mean == 0.5 and iv.h_seed == 0.0
    assert iv.half == pytest.approx(1.959964 * 0.502519 / 10, rel=1e-5)


def test_seed_term_uses_t_over_seed_means():
    # three seeds, every problem the same within a seed: the problem term is 0 and the half-width is
    # t_{0.975,2} · sd(0.2, 0.4, 0.6) / √3 = 4.3027 · 0.2 / 1.7321
    acc = [[m] * 40 for m in (0.2, 0.4, 0.6)]
    iv = stats.seed_problem_interval(acc)
    assert iv.mean == pytest.approx(0.4) and iv.h_prob == pytest.approx(0.0, abs=1e-12)  # float sums
    assert iv.half == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-5)
    assert iv.seeds == pytest.approx((0.2, 0.4, 0.6))


def test_interval_covers_the_truth_at_about_its_level():
    # simulate: seeds shift a true accuracy, problems are Bernoulli; 95% intervals should cover the
    # true mean in roughly 95% of 400 repetitions (conservative by construction, so ≥ 90%)
    rng = random.Random(0)
    covered = 0
    for _ in range(400):
        p_problem = [rng.random() for _ in range(60)]
        shift = [rng.gauss(0, 0.05) for _ in range(3)]
        acc = [[float(rng.random() < min(1, max(0, p + s))) for p in p_problem] for s in shift]
        iv = stats.seed_problem_interval(acc)
        covered += iv.lo <= 0.5 <= iv.hi
    assert covered / 400 >= 0.90


def test_paired_difference_pairs_by_seed_and_problem_and_rejects_mismatches():
    a = [[1.0, 1.0, 0.0, 1.0]] * 3
    b = [[0.0, 1.0, 0.0, 0.0]] * 3
    d = stats.paired_difference(a, b)
    assert d.mean == pytest.approx(0.5) and d.h_seed == 0.0
    assert not stats.paired_difference(a, a).excludes_zero()
    with pytest.raises(ValueError, match="shapes differ"):
        stats.paired_difference(a, b[:2])
    with pytest.raises(ValueError, match="same problems"):
        stats.seed_problem_interval([[1.0, 0.0], [1.0]])


# ----------------------------------------------------------------------------- error classifier

def _solution(problem_text: str) -> str:
    return parse_problem(problem_text).solution()


COMPOSED = "Compute (5 * 99) + 53."  # step 1: 5*99=495, step 2: 495+53=548


def test_a_correct_solution_has_no_error_to_find():
    p = parse_problem(COMPOSED)
    assert errors.classify(p, p.solution()).kind == errors.OTHER  # only called on wrong ones; nothing wrong


def test_classifier_no_answer():
    p = parse_problem(COMPOSED)
    assert errors.classify(p, "<think>\nstep 1 5*99\nones 5*9+0=45 carry 4").kind == errors.NO_ANSWER
    assert errors.classify(p, p.solution().split("The answer")[0]).kind == errors.NO_ANSWER


def test_classifier_step_one_wrong():
    p = parse_problem(COMPOSED)
    wrong_result = p.solution().replace("5*99=495", "5*99=485")
    e = errors.classify(p, wrong_result)
    assert e.kind == errors.STEP1_ARITHMETIC and "expected 5*99=495" in e.detail and "485" in e.detail
    wrong_operand = p.solution().replace("step 1 5*99", "step 1 5*98")
    assert errors.classify(p, wrong_operand).kind == errors.STEP1_OPERAND
    # a foundational problem has one step: its wrong answers are step-1 errors; the sample below is
    # what a Mamba-2 of the sweep wrote for `Compute 27 + 63.` (the 6 recalled as 5)
    f = parse_problem("Compute 47 + 38.")
    assert errors.classify(f, f.solution().replace("47+38=85", "47+38=75").replace("{85}", "{75}")).kind \
        == errors.STEP1_ARITHMETIC
    g = parse_problem("Compute 27 + 63.")
    seen = "ones 7+3+0=10 carry 1\ntens 2+5+1=8 carry 0\n27+59=87\n</think>\n\nThe answer is \\boxed{87}."
    assert errors.classify(g, seen).kind == errors.STEP1_OPERAND
    # with data.restate a one-step solution is headed too: the header names the operands it read
    restated = g.solution(restate=True)
    assert errors.classify(g, restated.replace("step 1 27+63", "step 1 27+59")).kind == errors.STEP1_OPERAND
    misread = restated.replace("tens 2+6+1=9", "tens 2+5+1=8").replace("27+63=90", "27+63=80")
    assert errors.classify(g, misread.replace("{90}", "{80}")).kind == errors.STEP1_ARITHMETIC


def test_classifier_copied_wrong_operand_as_in_the_issue():
    # the issue's sample: step 1 right, then "step 2 2*395"
    p = parse_problem(COMPOSED)
    text = ("<think>\nstep 1 5*99\nones 5*9+0=45 carry 4\ntens 5*9+4=49 carry 4\nhundreds carry 4\n5*99=495\n"
            "step 2 2*395\nones 2*5+0=10 carry 1\n2*395=790\n</think>\n\nThe answer is \\boxed{790}.")
    e = errors.classify(p, text)
    assert e.kind == errors.OPERAND and "expected 495+53" in e.detail and "2*395" in e.detail


def test_classifier_later_arithmetic_and_other():
    p = parse_problem(COMPOSED)
    arith = p.solution().replace("495+53=548", "495+53=558").replace("{548}", "{558}")
    e = errors.classify(p, arith)
    assert e.kind == errors.ARITHMETIC and "558" in e.detail
    boxed_off = p.solution().replace("{548}", "{549}")
    assert errors.classify(p, boxed_off).kind == errors.OTHER


def test_error_counts_keep_one_example_per_class():
    p = parse_problem(COMPOSED)
    counts, examples = errors.error_counts([(p, "no think"), (p, "again none"),
                                            (p, p.solution().replace("5*99=495", "5*99=1"))])
    assert counts[errors.NO_ANSWER] == 2 and counts[errors.STEP1_ARITHMETIC] == 1 and sum(counts.values()) == 3
    assert set(examples) == {errors.NO_ANSWER, errors.STEP1_ARITHMETIC}
    assert examples[errors.STEP1_ARITHMETIC]["problem"] == COMPOSED


def test_classifier_on_a_three_step_problem_with_the_value_second():
    # 500 - (3 * (41 + 9)): step 1 41+9=50, step 2 3*50=150, step 3 500-150=350
    p = parse_problem("Compute 500 - (3 * (41 + 9)).")
    assert errors.classify(p, p.solution().replace("{350}", "{360}")).kind == errors.OTHER
    # step 3 with the operands swapped (the recalled number put in the wrong place) is an operand error
    swapped = p.solution().replace("step 3 500-150", "step 3 150-500")
    e = errors.classify(p, swapped)
    assert e.kind == errors.OPERAND and "step 3: expected 500-150" in e.detail
    wrong2 = p.solution().replace("3*50=150", "3*50=160")
    assert errors.classify(p, wrong2).kind == errors.ARITHMETIC
