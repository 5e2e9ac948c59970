"""The paper's math grader (`paper_verdict`), quirks included: each case below is the verdict the authors'
`calc_acc_aime.py` gives (checked by running it unmodified, as for the corpus in tests/eval/data/). The
agreement on the whole corpus is in test_eval_grading_corpus.py."""

from __future__ import annotations

import re

import pytest

from promptcot_mamba.eval.paper_grader import (
    _parse_any,
    minerva_last_box,
    minerva_normalise,
    paper_worker,
    qwen_extract,
    qwen_normalise,
    sympy_latex,
)


def _paper(answer: str, gold: str) -> bool:
    return paper_worker(f"thinking</think>\n\n{answer}", gold)


@pytest.mark.parametrize("answer,gold,verdict", [
    ("\\boxed{[3,4]}", "(3,4]", True),  # interval ends are not told apart
    ("\\boxed{(3,4)}", "(3,4]", True),
    ("\\boxed{13536}", "13535", True),  # numbers within 1e-4 relative
    ("\\boxed{13537}", "13535", False),
    ("\\boxed{50}", "0.5", True),  # gold x 100 (and / 100) accepted
    ("\\boxed{68.5}", "137 \\frac{1}{2}", True),  # a mixed number is read as a product
    ("\\boxed{137.5}", "137 \\frac{1}{2}", False),
    ("\\boxed{\\text{west}}", "\\text{east}", True),  # unit words are stripped on both sides
    ("\\boxed{1}", "1,-2", True),  # a partial list: the LaTeX parser reads only the first element
    ("\\boxed{(3,\\infty)\\cup(-\\infty,2)}", "(-\\infty,2)\\cup(3,\\infty)", False),  # unions compared in order
    ("\\boxed{\\{2,1\\}}", "\\{1,2\\}", True),  # ... but a set of numbers is a Python set
    ("\\boxed{1+\\sqrt{19}, 1-\\sqrt{19}}", "1 \\pm \\sqrt{19}", False),  # a written-out ± is rejected
    ("\\fbox{\\frac{3}{4}}", "\\frac{3}{4}", False),  # \fbox is not a box to it: the last number is 4
    ("\\boxed{33\\%}", "\\dfrac{33}{100}", False),
    ("The roots are $\\boxed{3}$, $\\boxed{5}$, and $\\boxed{7}$.", "3, 5, 7", False),  # split over boxes
    ("\\boxed{x^2+2x+1}", "(x+1)^2", True),  # symbolic equality
    ("\\boxed{007}", "7", True),
    ("\\boxed{five}", "5", True),  # number words
    ("\\boxed{\\text{(C) Plane}}", "\\text{(C)}", True),
    ("\\boxed{3\\sqrt{13}}", "\\sqrt{117}", True),
])
def test_the_authors_verdicts(answer, gold, verdict):
    assert _paper(answer, gold) is verdict


def test_it_reads_the_whole_completion():
    assert paper_worker("Let me think... so the answer is \\boxed{42} but wait", "42")  # no </think>: credited
    assert paper_worker("</think> I am not sure, maybe 42", "42")  # no box at all: the last number
    assert not paper_worker("draft \\boxed{42} </think> so 41", "41")  # ... unless a box is anywhere
    assert not paper_worker("the answer is \\boxed{41}</think> so \\boxed{43}", "42")


def test_the_pieces():
    assert qwen_extract("so \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert qwen_extract("the final answer is $\\dfrac12$. I hope it is correct") == "\\frac{1}{2}"
    assert qwen_normalise("\\text{5 cm}") == "5" and qwen_normalise("t(0,4]") == "(0,4]"
    assert qwen_normalise("x = \\left( 3, \\frac{\\pi}{2} \\right)") == "(3,\\frac{\\pi}{2})"
    assert qwen_normalise("two hundred") == "200" and qwen_normalise("0.50") == "0.50"
    assert minerva_last_box("a \\boxed{1} b \\boxed{\\frac{2}{3}} c") == "\\frac{2}{3}"
    assert minerva_last_box("\\fbox{2}") is None
    assert minerva_normalise("\\left(1,2\\right)") == "\\le(1,2\\right)"  # "ft" is a removed unit word
    assert str(sympy_latex("1,-2")) == "1"  # the longest prefix that parses


def test_model_text_never_reaches_python_eval(monkeypatch):
    # sympy's parse_expr (the Qwen check's second parser, and what sympify runs on a string) evaluates
    # Python: only plain expressions may get there. Their grader also hands any string no parser read to
    # `N()` and `.equals()`, i.e. to sympify; ours compares such strings as text.
    import sympy.parsing.sympy_parser as sp

    _parse_any.cache_clear()  # parsed by earlier tests otherwise
    seen, real = [], sp.parse_expr
    monkeypatch.setattr(sp, "parse_expr", lambda s, *a, **k: seen.append(s) or real(s, *a, **k))
    attacks = ("__import__('os').system('echo pwned')", "open(0)", "().__class__", "plot(x)", "exec(1)",
               "x.__class__", "preview(x)", "[c for c in ().__class__.__base__.__subclasses__()]")
    for text in attacks:
        assert paper_worker(f"</think>\\boxed{{{text}}}", "1") is False
        paper_worker(f"</think>\\boxed{{{text}}}", "x")
    assert not [s for s in seen if re.search(r"__|open|exec|plot|preview|class", s)], seen
    assert _paper("\\boxed{\\{2,1\\}}", "\\{1,2\\}") and "{2,1}" in seen  # plain sets still get there
