"""Per-sample verdicts. An infrastructure failure (backend error, grader crash) is never a wrong answer:
it is `infra_error`. It still counts as not correct, but the report lists every such sample and marks the
benchmark incomplete, so a failure is never hidden in the score (and never dropped from it)."""

from __future__ import annotations

CORRECT = "correct"
WRONG = "wrong"
NO_ANSWER = "no_answer"  # no `</think>`, no `\boxed{}`, or no code block after `</think>`
TIMEOUT = "timeout"  # model code (or a math verification) ran past its time limit
RUNTIME_ERROR = "runtime_error"  # model code raised, crashed, or flooded its output
INFRA_ERROR = "infra_error"  # generation failed after retries, or the grader itself failed

VERDICTS = (CORRECT, WRONG, NO_ANSWER, TIMEOUT, RUNTIME_ERROR, INFRA_ERROR)
