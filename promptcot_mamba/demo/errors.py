"""Why a demo answer is wrong: the error analysis of the report (issue 15).

The demo's worked solutions are checkable line by line (demo/domain.py): a composed problem's
reasoning is a block per step, headed `step j a OP b`, ending with the line `a OP b = r`; a
foundational one is a single block, headed the same way with the preset's `data.restate` and
without a header otherwise (its operands are then read from the result line). A wrong sample is put in the first of these
classes that fits, reading its steps in order against the true ones:

    no answer           no `\\boxed{}` after `</think>` (a truncated or unfinished completion)
    step 1 operand      the first step works on numbers other than the statement's: recall from
                        the prompt
    step 1 arithmetic   the first step's operands are right, its result is not
    operand             step 1 right, then a later step works on a number that is not the one it
                        needs (the previous result or the statement's number): recall across the trace
    arithmetic          every operand right, but a later step's result is wrong
    other               every step right (or a step missing) yet the boxed answer is not the last result

The issue's "got step 1 wrong" is the first two together; they are apart because they fail for
different reasons (the sweep's Mamba-2 wrote `27+59` for `Compute 27 + 63.`: recall, not arithmetic).

`classify` takes the problem (its true steps) and the completion text; the report counts each class
per model, phase and held-out set, with one example each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from promptcot_mamba.demo.domain import CONCEPTS, Problem

NO_ANSWER, OPERAND, ARITHMETIC, OTHER = "no answer", "operand", "arithmetic", "other"
STEP1_OPERAND, STEP1_ARITHMETIC = "step 1 operand", "step 1 arithmetic"
STEP1 = (STEP1_OPERAND, STEP1_ARITHMETIC)  # the "got step 1 wrong", split by why
CLASSES = (STEP1_OPERAND, STEP1_ARITHMETIC, OPERAND, ARITHMETIC, NO_ANSWER, OTHER)
DESCRIPTIONS = {
    STEP1_OPERAND: "got step 1 wrong: worked on numbers other than the statement's",
    STEP1_ARITHMETIC: "got step 1 wrong: right operands, wrong result",
    OPERAND: "step 1 right, then copied a wrong operand into a later step",
    ARITHMETIC: "right operands, wrong arithmetic in a later step",
    NO_ANSWER: "gave no answer (no \\boxed{} after </think>)",
    OTHER: "steps right or missing, boxed answer differs",
}

_HEADER = re.compile(r"^step (\d+) (-?\d+)\s*([+\-*])\s*(-?\d+)\s*$")
_RESULT = re.compile(r"^(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True)
class ErrorClass:
    kind: str  # one of CLASSES
    detail: str  # what was expected and what the completion wrote, for the report's example


def _blocks(think: str, n_steps: int) -> list[list[str]]:
    """The reasoning's lines cut into one block per step (a one-step problem has no headers)."""
    lines = [ln.strip() for ln in think.splitlines() if ln.strip()]
    if n_steps == 1:
        return [lines]
    blocks: list[list[str]] = []
    for ln in lines:
        if _HEADER.match(ln):
            blocks.append([ln])
        elif blocks:
            blocks[-1].append(ln)
    return blocks


def _operands_and_result(block: list[str]) -> tuple[tuple[int, str, int] | None, int | None]:
    """(a, op, b) from the block's header (else its result line) and the result the block reaches."""
    head = _HEADER.match(block[0]) if block else None
    results = [m for m in map(_RESULT.match, block) if m]
    last = results[-1] if results else None
    ops = ((int(head[2]), head[3], int(head[4])) if head
           else (int(last[1]), last[2], int(last[3])) if last else None)
    return ops, (int(last[4]) if last else None)


def classify(problem: Problem, completion: str) -> ErrorClass:
    """The class of a wrong completion of `problem` (see the module docstring)."""
    think, sep, after = completion.partition("</think>")
    think = think.split("<think>")[-1]  # the think tag is in the completion unless the prompt prefilled it
    boxed = _BOXED.findall(after) if sep else []
    if not boxed:
        return ErrorClass(NO_ANSWER, "no \\boxed{} after </think>" if sep else "no </think>: unfinished")
    blocks = _blocks(think, len(problem.steps))
    for j, step in enumerate(problem.steps):
        sym = CONCEPTS[step.concept].symbol
        want = f"{step.a}{sym}{step.b}={step.result}"
        if j >= len(blocks):
            return ErrorClass(STEP1_OPERAND if j == 0 else OTHER, f"step {j + 1} missing (expected {want})")
        ops, result = _operands_and_result(blocks[j])
        wrote = (f"{ops[0]}{ops[1]}{ops[2]}" if ops else "?") + f"={'?' if result is None else result}"
        if j == 0 and ops != (step.a, sym, step.b):
            return ErrorClass(STEP1_OPERAND, f"step 1: expected {want}, wrote {wrote}")
        if j == 0 and result != step.result:
            return ErrorClass(STEP1_ARITHMETIC, f"step 1: expected {want}, wrote {wrote}")
        if ops != (step.a, sym, step.b):
            return ErrorClass(OPERAND, f"step {j + 1}: expected {step.a}{sym}{step.b}, wrote {wrote.split('=')[0]}")
        if result != step.result:
            return ErrorClass(ARITHMETIC, f"step {j + 1}: expected {want}, wrote {wrote}")
    return ErrorClass(OTHER, f"steps right, boxed {boxed[-1]!r} instead of {problem.answer}")


def error_counts(samples: list[tuple[Problem, str]]) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """({class: count}, {class: one example}) over wrong samples given as (problem, completion)."""
    counts = {c: 0 for c in CLASSES}
    examples: dict[str, dict[str, str]] = {}
    for problem, completion in samples:
        e = classify(problem, completion)
        counts[e.kind] += 1
        examples.setdefault(e.kind, {"problem": problem.problem, "detail": e.detail})
    return counts, examples
