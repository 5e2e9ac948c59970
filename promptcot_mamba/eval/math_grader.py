"""Strict math grading: the last `\\boxed{}` after the last `</think>`, checked with math-verify.

Rules:
- The answer part is the text after the last `</think>` (text.reasoning.split_reasoning). No `</think>`
  (a truncated or unfinished thought) or no `\\boxed{}` in the answer part is `no_answer`: grading text
  inside an unfinished thought inflates MATH-500 by ~10 points (PrimeIntellect-ai/verifiers PR #213).
- The gold answer is wrapped in `\\boxed{}` before parsing (math-verify finds answers only inside a LaTeX
  environment, so a bare gold parses to nothing: huggingface/Math-Verify issue #70) and
  `verify(gold, pred)` is called in that order (math-verify is asymmetric by design: a gold interval
  does not accept an inequality, a gold inequality accepts the interval).
- math-verify's own signal-based timeouts are off; `worker_pool.TimeoutPool` kills a verification that
  runs past `timeout_s` in its worker process (verdict `timeout`).
- Before parsing, forms math-verify misreads are rewritten (`normalise`): a space before `i`, e-notation,
  thin-space thousands separators, `\\sqrt13`, repeating decimals, `°`; numbers must then agree to 1e-9
  relative (math-verify rounds to 6 decimals), and an inequality answers a gold interval.
- Lists: both sides are split at top-level commas, each `\\pm` written out, and matched as multisets;
  values spread over several boxes (`\\boxed{3}, \\boxed{5}`) count together when the gold lists more
  values than the last box. A multiple-choice gold (`\\text{(C)}`) is matched by its letter.
- What the problem asks decides three cases (option `question`, `unit`): an answer that restates the
  expression the problem asks to convert or factor is wrong; values the problem names in order ("the
  values of $b$ and $c$") are compared in that order (labels such as `c=0, b=-3` are read); `4.2\\%`
  answers 4.2 when the problem's unit is %.
- OlympiadBench: items marked `is_multiple_answer` collect every box of the answer part and match as
  unordered multisets (unless named in order, above); a per-item absolute tolerance (`error` field) is
  honoured for numbers. These are the rules of the official judger (inference/code/math_judger.py in
  github.com/OpenBMB/OlympiadBench).

`grade_math(completion, gold)` grades one; `MathGrader.grade_many` grades many in parallel, and with
`paper=True` also gives each sample the paper's verdict (paper_grader.py), run as separate jobs of the same
pool, each under the same timeout.
"""

from __future__ import annotations

import functools
import itertools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from promptcot_mamba.eval.verdict import CORRECT, INFRA_ERROR, NO_ANSWER, TIMEOUT, WRONG
from promptcot_mamba.eval.worker_pool import Failed, TimedOut, TimeoutPool
from promptcot_mamba.text.reasoning import split_reasoning

_PRELOAD = ("math_verify", "sympy", "promptcot_mamba.eval.math_grader", "promptcot_mamba.eval.paper_grader")
_BOX = re.compile(r"\\(?:boxed|fbox)\s*")


def find_boxed(text: str) -> list[str]:
    """Contents of every brace-matched `\\boxed{...}` / `\\fbox{...}` (and `\\boxed 5`), in order."""
    out = []
    for m in _BOX.finditer(text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                c = text[j]
                if c == "{" and text[j - 1] != "\\":
                    depth += 1
                elif c == "}" and text[j - 1] != "\\":
                    depth -= 1
                    if depth == 0:
                        out.append(text[i + 1:j])
                        break
                j += 1
        elif m.group(0).endswith(" ") and i < len(text):  # `\boxed 5`
            tok = re.match(r"[^\s$]+", text[i:])
            if tok:
                out.append(tok.group(0))
    return out


def last_boxed(text: str) -> str | None:
    boxes = find_boxed(text)
    return boxes[-1] if boxes else None


def split_top_level(s: str) -> list[str]:
    """Split at commas outside (), [], {} and `\\{ \\}`: `(1,2), (3,4)` -> two items."""
    items, depth, cur = [], 0, []
    i = 0
    while i < len(s):
        c = s[i]
        if s.startswith("\\{", i) or s.startswith("\\}", i):
            depth += 1 if s[i + 1] == "{" else -1
            cur.append(s[i:i + 2])
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    items.append("".join(cur))
    return [it for it in (x.strip() for x in items) if it]


def expand_pm(item: str) -> list[str]:
    """`1 \\pm \\sqrt{19}` -> ["1 + \\sqrt{19}", "1 - \\sqrt{19}"]; `(\\pm 3, \\pm 2)` -> the four sign
    choices. `\\mp` takes the opposite sign of `\\pm` when both appear; over three signs are left alone."""
    parts = re.split(r"(\\pm|\\mp)(?![A-Za-z])", item)  # text, sign, text, sign, ..., text
    signs = parts[1::2]
    if not signs or len(signs) > 3:
        return [item]
    tied = "\\pm" in signs and "\\mp" in signs
    out = []
    for choice in itertools.product("+-", repeat=1 if tied else len(signs)):
        if tied:
            flip = "-" if choice[0] == "+" else "+"
            choice = [choice[0] if sg == "\\pm" else flip for sg in signs]
        out.append("".join(t + c for t, c in zip(parts[::2], [*choice, ""])))
    return list(dict.fromkeys(out))


def answer_items(s: str) -> list[str]:
    """The values an answer lists: top-level items, each `\\pm` written out. A number with thousands
    separators (`10,080`) is one item."""
    if re.fullmatch(r"\s*-?\d{1,3}(?:,(?:\\!)?\s*\d{3})+(?:\.\d+)?\s*", s):
        return [s]
    return [v for it in split_top_level(s) for v in expand_pm(it)]


# --------------------------------------------------------------------- forms math-verify misreads
# Each rewrite below turns a form math-verify 0.9.0 parses to the wrong value (or not at all) into one it
# reads as written; test_eval_math_grader.py has a case for each. They apply to gold and answer alike.
_THOUSANDS = re.compile(r"(?<=\d)(?:\\[,;:! ]|\{,\})(?=\d{3}(?!\d))")  # 10\,080: a thin space is a separator
_SPACE_I = re.compile(r"(\d|\})(?:\s|\\[,;:! ])+i(?![A-Za-z])")  # 1+274 i: read as 274*i, not 274 and i
# 6.72e-5, not 6.72e - 5 (unless the gold has Euler's e: then `2e-1` may be 2e - 1; no benchmark gold has it)
_E_NOTATION = re.compile(r"(?<![\w\\.])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?!\w)")
_EULER = re.compile(r"(?<![A-Za-z\\])e(?![A-Za-z])")
_SQRT_DIGITS = re.compile(r"\\sqrt\s*(\d+)")  # \sqrt13 as written means sqrt(13), not sqrt(1)*3
_REPEATING = re.compile(r"(-?)(\d*)\.(\d*)\\(?:overline|bar|dot)\s*\{(\d+)\}")  # 0.8\overline{6} = 13/15
_TEXT_ONLY = re.compile(r"\s*\\(?:text|textbf|mathrm)\{\s*(?:(?:an?|the)\s+)?([^{}]*?)\s*\}\s*")


def _repeating_to_fraction(m: re.Match) -> str:
    sign, whole, fixed, period = m.groups()
    scale = 10 ** len(fixed)
    value = Fraction(int(whole or 0)) + Fraction(int(fixed or 0), scale) \
        + Fraction(int(period), scale * (10 ** len(period) - 1))
    return f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}"


def normalise(s: str, e_notation: bool = True) -> str:
    """Rewrite the forms math-verify misreads (see above); a pure text answer loses a leading article."""
    s = s.replace("°", "^\\circ")
    s = _THOUSANDS.sub("", s)
    s = _SPACE_I.sub(r"\1i", s)
    if e_notation:
        s = _E_NOTATION.sub(r"\1\\times10^{\2}", s)
    s = _SQRT_DIGITS.sub(r"\\sqrt{\1}", s)
    s = _REPEATING.sub(_repeating_to_fraction, s)
    m = _TEXT_ONLY.fullmatch(s)
    return f"\\text{{{m.group(1)}}}" if m else s


def choice_letter(s: str) -> str | None:
    """`(C)`, `\\text{(C)}`, `c`, `\\text{(C) Plane}` -> "C": the option letter an answer names, if any."""
    m = re.fullmatch(r"\s*(?:\\text(?:bf)?\{\s*)?\(?([A-Za-z])\)?(?:[\s.:]+[^{}]*)?\}?\s*", s)
    return m.group(1).upper() if m else None


# ------------------------------------------------------------------------------ worker-side functions
@functools.lru_cache(maxsize=4096)  # a worker sees each gold once per sample: parse it once
def _parse(latex: str):
    from math_verify import parse

    return parse("\\boxed{" + latex + "}", parsing_timeout=None)


def _to_float(parsed) -> float | None:
    import sympy

    for v in parsed:
        if isinstance(v, sympy.Basic) and v.is_number:
            try:
                return float(v)
            except (TypeError, ValueError, OverflowError):
                return None
    return None


def _close(g, p) -> bool:
    """Numbers must agree to 1e-9 relative: math-verify rounds to 6 decimals, which makes
    `6.7\\times10^{-5}` equal 0.0000672 and 0.333333 equal 1/3."""
    a, b = _to_float(g), _to_float(p)
    return a is None or b is None or a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def _as_set(parsed):
    """An inequality (or several joined by "or") in one unknown, as the set of its solutions: `x>2` ->
    (2, oo), `3<\\lambda\\le4` -> (3, 4]. None when the answer is not such a condition."""
    import sympy
    from sympy.core.function import AppliedUndef

    conds = [v for v in parsed if isinstance(v, sympy.Basic)][:1]
    if conds and isinstance(conds[0], sympy.FiniteSet):
        conds = list(conds[0].args)
    if not conds or not all(isinstance(c, sympy.Rel | sympy.And | sympy.Or) for c in conds):
        return None
    unknowns = set().union(*(c.atoms(sympy.Symbol, AppliedUndef) for c in conds))
    if len(unknowns) != 1:
        return None
    u, x = unknowns.pop(), sympy.Symbol("x", real=True)
    try:
        return sympy.Or(*(c.subs(u, x) for c in conds)).as_set()
    except Exception:
        return None


def equivalent(gold: str, pred: str, tolerance: float | None = None) -> bool:
    """math-verify `verify(gold, pred)` on normalised, boxed strings, numbers to 1e-9 relative; an
    inequality answers a gold interval; an absolute numeric tolerance if given."""
    from math_verify import verify

    e_notation = not _EULER.search(gold)
    g, p = _parse(normalise(gold, e_notation)), _parse(normalise(pred, e_notation))
    if not g or not p:
        return False
    if verify(g, p, timeout_seconds=None) and _close(g, p):
        return True
    import sympy

    if any(isinstance(v, sympy.Set) for v in g):
        solutions = _as_set(p)
        if solutions is not None and verify(g, [solutions], timeout_seconds=None):
            return True
    if tolerance:
        a, b = _to_float(g), _to_float(p)
        if a is not None and b is not None and abs(a - b) <= tolerance:
            return True
    return False


def _same_items(golds: list[str], preds: list[str], tolerance: float | None, ordered: bool) -> bool:
    if len(golds) != len(preds):
        return False
    if ordered:
        return all(equivalent(g, p, tolerance) for g, p in zip(golds, preds))
    used = [False] * len(preds)
    for g in golds:
        for j, p in enumerate(preds):
            if not used[j] and equivalent(g, p, tolerance):
                used[j] = True
                break
        else:
            return False
    return True


# What a problem statement asks for, read from its text.
_CONVERT = re.compile(r"(?i)\b(?:write|express|convert|factor|expand|simplify|rationalize|rewrite)\b"
                      r"[^$.?]{0,30}?\$([^$]+)\$"  # "Write $\frac{3}{20}$ as a decimal", "Factor the expression $..$"
                      r"|\$([^$]+)\$\s*(?:expressed\s+)?as\s+an?\s+"  # "What is $\frac92$ expressed as a decimal?"
                      r"(?:decimal|fraction|common fraction|mixed number|percent)")
_NAMED = re.compile(r"values? of ((?:\$[^$]{1,30}\$\s*,?\s*)+)and\s*\$([^$]{1,12})\$")


def _latex_key(s: str) -> str:
    """A spelling-insensitive key for comparing two LaTeX strings as written."""
    s = re.sub(r"\\left|\\right|\\[,;:! ]|\s", "", s).replace("dfrac", "frac").replace("tfrac", "frac")
    return re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)


def restates_input(pred: str, question: str) -> bool:
    """The answer is, as written, the expression the problem asks to convert, factor, simplify..."""
    key = _latex_key(pred)
    return any(key == _latex_key(a or b) for a, b in _CONVERT.findall(question))


def named_values(question: str, count: int) -> list[str] | None:
    """The quantities a problem asks for in order ("the values of $b$ and $c$"), when there are `count`."""
    m = _NAMED.search(question)
    if not m:
        return None
    names = [n.strip() for part in re.findall(r"\$([^$]*)\$", m.group(1)) for n in part.split(",")]
    names = [n for n in names if n] + [m.group(2).strip()]
    return names if len(names) == count else None


def _in_named_order(preds: list[str], names: list[str]) -> list[str]:
    """Labelled values (`c=0, b=-3`) put in the order the problem names them; a tuple `(-3, 0)` split."""
    if len(preds) == 1 and re.fullmatch(r"\(.*\)", preds[0]):
        preds = split_top_level(preds[0][1:-1])
    labels = [re.match(r"\s*([^=]+?)\s*=\s*(.+)$", p) for p in preds]
    if all(labels):
        by_label = {_latex_key(m.group(1)): m.group(2) for m in labels}
        keys = [_latex_key(n) for n in names]
        if set(keys) == set(by_label):
            return [by_label[k] for k in keys]
    return preds


def strict_worker(completion: str, gold: str, options: dict | None = None) -> tuple[str, str | None, dict]:
    """(verdict, extracted answer, detail) — runs inside a pool worker. options: `multiple`, `tolerance`
    (see the module docstring), `unit` (the problem's unit; `%` lets `4.2\\%` answer 4.2) and `question`
    (the problem text, for the checks that depend on what it asks)."""
    o = options or {}
    tolerance, question = o.get("tolerance"), o.get("question") or ""
    answer = split_reasoning(completion).answer
    if answer is None:
        return NO_ANSWER, None, {"reason": "no </think>"}
    boxes = find_boxed(answer)
    if not boxes:
        return NO_ANSWER, None, {"reason": "no \\boxed{} after </think>"}
    if (o.get("unit") or "").strip() in ("%", "\\%"):
        boxes = [re.sub(r"\s*\\?%\s*$", "", b) for b in boxes]
    pred = boxes[-1]
    if restates_input(pred, question):
        return WRONG, pred, {"reason": "restates the problem's input"}
    letter = choice_letter(gold)
    if letter and "(" in gold:  # a multiple-choice gold such as \text{(C)}
        return (CORRECT if choice_letter(pred) == letter else WRONG), pred, {}
    golds = answer_items(gold)
    # several values in several boxes (`\boxed{3}, \boxed{5}, \boxed{7}`) are one answer, unless the last
    # box already holds them all
    if o.get("multiple") or (len(golds) > 1 and len(boxes) > 1 and len(answer_items(pred)) < len(golds)):
        pred = ", ".join(boxes)
    preds = answer_items(pred)
    names = named_values(question, len(golds)) if o.get("multiple") else None
    if names:  # values the problem names in order: compared in that order
        ok = _same_items(golds, _in_named_order(preds, names), tolerance, ordered=True)
        return (CORRECT if ok else WRONG), pred, {"gold_items": len(golds), "ordered": names}
    ok = (max(len(golds), len(preds)) > 1 and _same_items(golds, preds, tolerance, ordered=False)) \
        or equivalent(gold, pred, tolerance) \
        or (bool(o.get("multiple")) and equivalent(gold, boxes[-1], tolerance))
    return (CORRECT if ok else WRONG), pred, {"gold_items": len(golds), "pred_items": len(preds)}


def run_job(kind: str, *args):
    """One pool job: "strict" -> strict_worker(...), "paper" -> paper_grader.paper_worker(...)."""
    if kind == "paper":
        from promptcot_mamba.eval.paper_grader import paper_worker

        return paper_worker(*args)
    return strict_worker(*args)


def warm_worker() -> bool:
    import math_verify  # noqa: F401
    import sympy  # noqa: F401

    from promptcot_mamba.eval.paper_grader import paper_worker

    return equivalent("1", "1") and paper_worker("\\boxed{1}", "1")


# ------------------------------------------------------------------------------------ parent side
@dataclass(frozen=True)
class MathGradeConfig:
    timeout_s: float = 10.0  # per sample and verdict: parse + verify (math-verify's own default: 5 s each)
    workers: int | None = None  # default: all cores
    paper: bool = True  # also compute `paper_verdict` (paper_grader.py)
    lenient: bool | None = None  # the old name of `paper`, kept for one release

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError("MathGradeConfig.timeout_s must be > 0")
        if self.lenient is not None:
            object.__setattr__(self, "paper", self.lenient)


@dataclass
class MathGrade:
    verdict: str
    extracted: str | None
    detail: dict[str, Any] = field(default_factory=dict)
    paper_verdict: str | None = None  # the paper's grader: correct/wrong/timeout/infra_error; None if off
    time_s: float = 0.0

    @property
    def lenient(self) -> str | None:  # the old name of paper_verdict, kept for one release
        return self.paper_verdict


def _unpack(out, timeout_s: float) -> tuple[str, str | None, dict]:
    if isinstance(out, TimedOut):
        return TIMEOUT, None, {"reason": f"verification ran past {timeout_s:g} s"}
    if isinstance(out, Failed):
        return INFRA_ERROR, None, {"error": out.error}
    return out


def _paper(out) -> str:
    if isinstance(out, TimedOut):
        return TIMEOUT
    if isinstance(out, Failed):
        return INFRA_ERROR
    return CORRECT if out else WRONG


class MathGrader:
    def __init__(self, config: MathGradeConfig | None = None, pool: TimeoutPool | None = None):
        self.config = config or MathGradeConfig()
        self._pool = pool
        self._own_pool = pool is None

    @property
    def pool(self) -> TimeoutPool:
        if self._pool is None:
            self._pool = TimeoutPool(self.config.workers, preload=_PRELOAD)
            self._pool.warm("promptcot_mamba.eval.math_grader:warm_worker", ())
        return self._pool

    def grade_many(self, items: Sequence[tuple[str, str, dict]], *, progress: bool = False,
                   desc: str = "grading math") -> list[MathGrade]:
        """items: (completion, gold, options); options as `strict_worker` takes them ({"multiple": bool,
        "tolerance": float | None, "unit": str | None, "question": str}). Strict and paper verdicts are
        separate jobs in one pool, each with the timeout."""
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        jobs = [("strict", c, g, dict(o)) for c, g, o in items]
        if self.config.paper:
            jobs += [("paper", c, g) for c, g, _ in items]
        with tqdm(total=len(jobs), disable=not progress, desc=desc) as bar:
            outs = self.pool.map("promptcot_mamba.eval.math_grader:run_job", jobs, self.config.timeout_s,
                                 progress=bar.update)
        per = (time.perf_counter() - t0) / max(1, len(items))
        paper = outs[len(items):] if self.config.paper else [None] * len(items)
        return [MathGrade(*_unpack(s, self.config.timeout_s), None if pv is None else _paper(pv), per)
                for s, pv in zip(outs[:len(items)], paper)]

    def grade(self, completion: str, gold: str, **options) -> MathGrade:
        return self.grade_many([(completion, gold, options)])[0]

    def close(self) -> None:
        if self._own_pool and self._pool is not None:
            self._pool.close()
            self._pool = None


_DEFAULT: MathGrader | None = None


def grade_math(completion: str, gold: str, *, multiple: bool = False, tolerance: float | None = None) -> str:
    """The strict verdict of one completion against one gold answer (a shared grader pool is reused)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = MathGrader(MathGradeConfig(paper=False))
    return _DEFAULT.grade(completion, gold, multiple=multiple, tolerance=tolerance).verdict
