"""Per-sample verdicts. An infrastructure failure (backend error, grader crash) is never a wrong answer:
it is `infra_error`, reported separately and excluded from nothing silently (STYLE.md §13)."""

from __future__ import annotations

CORRECT = "correct"
WRONG = "wrong"
NO_ANSWER = "no_answer"  # no `</think>`, no `\boxed{}`, or no code block after `</think>`
TIMEOUT = "timeout"  # model code (or a math verification) ran past its time limit
RUNTIME_ERROR = "runtime_error"  # model code raised, crashed, or flooded its output
INFRA_ERROR = "infra_error"  # generation failed after retries, or the grader itself failed

VERDICTS = (CORRECT, WRONG, NO_ANSWER, TIMEOUT, RUNTIME_ERROR, INFRA_ERROR)


def check_verdict(v: str) -> str:
    if v not in VERDICTS:
        raise ValueError(f"unknown verdict {v!r}; expected one of {VERDICTS}")
    return v
