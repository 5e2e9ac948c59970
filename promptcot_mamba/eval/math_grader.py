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
- OlympiadBench: items marked `is_multiple_answer` collect every box of the answer part, split both
  sides at top-level commas (a `\\pm` gives two answers) and match them as unordered multisets; a
  per-item absolute tolerance (`error` field) is honoured for numbers. These are the rules of the
  official judger (inference/code/math_judger.py in github.com/OpenBMB/OlympiadBench).

`grade_math(completion, gold)` grades one; `MathGrader.grade_many` grades many in parallel.
The paper-compatible lenient mode lives in paper_grader.py and runs in the same pool.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    """Split at commas outside (), [], {} — `(1,2), (3,4)` -> two items; `\\pm` doubles an item."""
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
    out = []
    for it in (x.strip() for x in items):
        if not it:
            continue
        if "\\pm" in it and it.count("\\pm") == 1:
            out += [it.replace("\\pm", "+"), it.replace("\\pm", "-")]
        else:
            out.append(it)
    return out


# ------------------------------------------------------------------------------ worker-side functions
def _parse(latex: str):
    from math_verify import parse

    return parse("\\boxed{" + latex + "}", parsing_timeout=None)


def _to_float(parsed) -> float | None:
    import sympy

    for v in parsed:
        if isinstance(v, sympy.Basic) and v.is_number:
            try:
                return float(v)
            except (TypeError, ValueError):
                return None
    return None


def equivalent(gold: str, pred: str, tolerance: float | None = None) -> bool:
    """math-verify `verify(gold, pred)` on boxed strings, plus an absolute numeric tolerance if given."""
    from math_verify import verify

    g, p = _parse(gold), _parse(pred)
    if not g or not p:
        return False
    if verify(g, p, timeout_seconds=None):
        return True
    if tolerance:
        a, b = _to_float(g), _to_float(p)
        if a is not None and b is not None and abs(a - b) <= tolerance:
            return True
    return False


def _multiset_match(golds: list[str], preds: list[str], tolerance: float | None) -> bool:
    if len(golds) != len(preds):
        return False
    used = [False] * len(preds)
    for g in golds:
        for j, p in enumerate(preds):
            if not used[j] and equivalent(g, p, tolerance):
                used[j] = True
                break
        else:
            return False
    return True


def strict_worker(completion: str, gold: str, multiple: bool = False,
                  tolerance: float | None = None) -> tuple[str, str | None, dict]:
    """(verdict, extracted answer, detail) — runs inside a pool worker."""
    answer = split_reasoning(completion).answer
    if answer is None:
        return NO_ANSWER, None, {"reason": "no </think>"}
    boxes = find_boxed(answer)
    if not boxes:
        return NO_ANSWER, None, {"reason": "no \\boxed{} after </think>"}
    if multiple:
        pred = ", ".join(boxes)
        golds, preds = split_top_level(gold), split_top_level(pred)
        ok = _multiset_match(golds, preds, tolerance) or equivalent(gold, pred, tolerance) \
            or equivalent(gold, boxes[-1], tolerance)
        return (CORRECT if ok else WRONG), pred, {"gold_items": len(golds), "pred_items": len(preds)}
    pred = boxes[-1]
    return (CORRECT if equivalent(gold, pred, tolerance) else WRONG), pred, {}


def warm_worker() -> bool:
    import math_verify  # noqa: F401
    import sympy  # noqa: F401

    return equivalent("1", "1")


# ------------------------------------------------------------------------------------ parent side
@dataclass(frozen=True)
class MathGradeConfig:
    timeout_s: float = 10.0  # per sample, parse + verify (math-verify's own default is 5 s each)
    workers: int | None = None  # default: all cores
    lenient: bool = True  # also compute the paper-compatible lenient verdict

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError("MathGradeConfig.timeout_s must be > 0")


@dataclass
class MathGrade:
    verdict: str
    extracted: str | None
    detail: dict[str, Any] = field(default_factory=dict)
    lenient: str | None = None  # paper-compatible verdict (correct / wrong / timeout), None if not run
    time_s: float = 0.0


def _unpack(out, timeout_s: float) -> tuple[str, str | None, dict]:
    if isinstance(out, TimedOut):
        return TIMEOUT, None, {"reason": f"verification ran past {timeout_s:g} s"}
    if isinstance(out, Failed):
        return INFRA_ERROR, None, {"error": out.error}
    return out


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
        """items: (completion, gold, options) with options {"multiple": bool, "tolerance": float|None}."""
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        args = [(c, g, bool(o.get("multiple")), o.get("tolerance")) for c, g, o in items]
        n = len(args) * (2 if self.config.lenient else 1)
        with tqdm(total=n, disable=not progress, desc=desc) as bar:
            strict = self.pool.map("promptcot_mamba.eval.math_grader:strict_worker", args, self.config.timeout_s,
                                   progress=bar.update)
            lenient = [None] * len(args)
            if self.config.lenient:
                lenient = self.pool.map("promptcot_mamba.eval.paper_grader:lenient_worker",
                                        [(c, g) for c, g, _, _ in args], self.config.timeout_s, progress=bar.update)
        per = (time.perf_counter() - t0) / max(1, len(args))
        out = []
        for s, le in zip(strict, lenient):
            verdict, extracted, detail = _unpack(s, self.config.timeout_s)
            lv = None
            if self.config.lenient:
                lv = TIMEOUT if isinstance(le, TimedOut) else INFRA_ERROR if isinstance(le, Failed) else \
                    (CORRECT if le else WRONG)
            out.append(MathGrade(verdict, extracted, detail, lv, per))
        return out

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
        _DEFAULT = MathGrader(MathGradeConfig(lenient=False))
    return _DEFAULT.grade(completion, gold, multiple=multiple, tolerance=tolerance).verdict
