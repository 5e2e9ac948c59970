"""The lenient, paper-compatible math grader, reported beside the strict number.

The authors' `PromptCoT_Mamba/calc_acc_aime.py` (https://github.com/inclusionAI/PromptCoT) marks a
sample correct if EITHER
a Qwen2.5-Math-style check (answer extracted from the WHOLE completion — thinking included — with a
last-number fallback, normalised, compared as strings, as numbers within 1e-4 relative including the
percent variants, or symbolically) OR a Minerva-style check (last `\\boxed{}` of the whole completion,
normalised, compared as strings or symbolically) says so. This is our re-implementation of that logic,
not their code; the symbolic step uses math-verify. It over-credits truncated outputs on purpose: it
exists to compare with the paper's numbers, never as the headline metric.
"""

from __future__ import annotations

import math
import re

from promptcot_mamba.eval.math_grader import last_boxed

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_UNIT_WORDS = ("degrees", "degree", "units", "unit", "cm", "meters", "meter", "inches", "inch", "feet", "foot",
               "minutes", "minute", "hours", "hour", "seconds", "second", "dollars", "dollar", "cents", "mph",
               "km", "sq", "square")


def extract_answer(text: str) -> str | None:
    """Qwen2.5-Math-style: Minerva phrase, else last box, else 'the answer is', else the last number."""
    m = re.findall(r"final answer is \$(.+?)\$\. I hope", text, flags=re.DOTALL)
    if m:
        return m[-1]
    box = last_boxed(text)
    if box is not None:
        return box
    m = re.findall(r"(?:he answer is|final answer is)\s*:?\s*(.+)", text)
    if m:
        return m[-1].strip().rstrip(".").strip("$ ")
    nums = _NUM.findall(text)
    return nums[-1].replace(",", "") if nums else None


def strip_string(s: str) -> str:
    s = str(s).strip().replace("\n", "").rstrip(".")
    s = s.replace("\\!", "").replace("\\left", "").replace("\\right", "")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("\\displaystyle", "")
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\mbox\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\mathbf\{\s*([^{}]*)\}", r"\1", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    for w in _UNIT_WORDS:
        s = re.sub(rf"(?<=[\d}}\s]){w}\b", "", s)
    s = re.sub(r"^\s*[a-zA-Z]\s*=\s*", "", s)  # "x = 5" -> "5"
    s = s.replace(" ", "")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\d)", r"\\sqrt{\1}", s)
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    if s.startswith("0.") is False and s.startswith("."):
        s = "0" + s
    return s


def _to_number(s: str) -> float | None:
    s = s.replace(",", "")
    try:
        return float(s)
    except ValueError:
        m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
        if m and float(m.group(3)) != 0:
            return (-1 if m.group(1) else 1) * float(m.group(2)) / float(m.group(3))
    return None


def _symbolic_equal(a: str, b: str) -> bool:
    from promptcot_mamba.eval.math_grader import equivalent

    try:
        return equivalent(b, a)
    except Exception:
        return False


def math_equal(pred: str | None, gold: str) -> bool:
    """Qwen-style equivalence: strings, numbers (rel 1e-4, percent variants), then symbolic."""
    if pred is None:
        return False
    p, g = strip_string(pred), strip_string(gold)
    if p.lower() == g.lower():
        return True
    a, b = _to_number(p), _to_number(g)
    if a is not None and b is not None:
        return any(math.isclose(a, x, rel_tol=1e-4, abs_tol=1e-12) for x in (b, b / 100, b * 100))
    return _symbolic_equal(p, g)


def minerva_normalize(s: str) -> str:
    s = s.split("=")[-1]
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    s = re.sub(r"(\\textbf|\\overline|\\mathrm|\\mathbf)\{(.*?)\}", r"\2", s)
    for unit in _UNIT_WORDS:
        s = s.replace(unit, "")
    s = s.replace("$", "").replace("\\%", "").replace(" ", "").replace("\\!", "")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac")
    if s.replace(",", "").isdigit():
        s = s.replace(",", "")
    return s.strip()


def is_equiv_minerva(pred: str | None, gold: str) -> bool:
    if pred is None:
        return False
    a, b = minerva_normalize(pred), minerva_normalize(gold)
    return a == b or _symbolic_equal(a, b)


def lenient_worker(completion: str, gold: str) -> bool:
    """The paper's OR of the two graders, over the whole completion (runs in a pool worker)."""
    return math_equal(extract_answer(completion), gold) or is_equiv_minerva(last_boxed(completion), gold)
