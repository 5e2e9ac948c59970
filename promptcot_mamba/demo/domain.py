"""The demo's built-in task domain: procedurally generated, exactly checkable arithmetic reasoning.

PromptCoT (paper §2.2) builds problems from *foundational concepts* composed by a *rationale*. Here the
foundational concepts are three column algorithms a tiny model can learn on a laptop CPU:

    addition        a + b        (two-digit operands)          column sum with carries
    subtraction     a - b        (a >= b, two-digit a)         column difference with borrows
    multiplication  a * b        (one-digit a, two-digit b)    column product with carries

A *foundational* problem exercises one concept on its home range (phase 1, the initialization
phase). A *composed* problem chains two or three concepts: each result becomes an operand of the
next operation (phase 2, the advanced phase), as its first operand (`(12 + 35) - 9`) or its second
(`500 - (12 + 35)`; a product's one-digit factor is never the intermediate value, so it is always
`k * (…)`). Intermediate values leave the home range (three digits), so the model must generalise
the algorithms it learned, and it must recall the statement's other numbers after its own reasoning
about the inner steps: the recall across a reasoning trace that issue 15's error analysis measures.

Every worked solution is written in the paper's layout: the reasoning inside `<think> … </think>`,
then the final answer in `\\boxed{}`. The steps are digit-level so each token depends on a handful
of earlier ones — what a few-hundred-thousand-parameter model can learn in minutes. Each step's
block opens with `step j a OP b`; a one-step solution does too when the preset asks for it
(`data.restate`). Restating the statement's numbers before reading their digits cut the wrong
samples that misread the statement (validation, same steps): Mamba-2 after phase 1 from 64 to 5 of
200, the Llama after both phases from 150 to 9 (demo/recipes/sweeps/restate.md).

Everything is a pure function of a seed (`random.Random(seed)`): the same seed gives the same
problems, solutions and splits, and held-out sets are disjoint from the training sets by problem
text (`make_splits`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# ------------------------------------------------------------------------------------ concepts


@dataclass(frozen=True)
class Concept:
    """A foundational concept: its name, its description (what PromptCoT's concept extraction would
    return), its operator and the home range of its operands."""

    name: str
    description: str
    symbol: str
    a_range: tuple[int, int]  # inclusive
    b_range: tuple[int, int]  # inclusive

    def apply(self, a: int, b: int) -> int:
        if self.symbol == "+":
            return a + b
        if self.symbol == "-":
            return a - b
        if self.symbol == "*":
            return a * b
        raise ValueError(f"concept {self.name!r}: unknown operator {self.symbol!r}")


CONCEPTS: dict[str, Concept] = {
    "addition": Concept("addition", "Column addition of whole numbers with carries", "+", (10, 99), (10, 99)),
    "subtraction": Concept("subtraction", "Column subtraction of whole numbers with borrows", "-",
                           (10, 99), (1, 99)),
    "multiplication": Concept("multiplication", "Multiplying a whole number by a one-digit number, column by column",
                              "*", (2, 9), (10, 99)),
}


# ------------------------------------------------------------------------------ column steps


def _digits(n: int) -> list[int]:
    """Least-significant digit first."""
    return [int(c) for c in reversed(str(n))]


_PLACES = ["ones", "tens", "hundreds", "thousands"]


def column_steps(symbol: str, a: int, b: int) -> list[str]:
    """The digit-level steps of one operation, ending with the line `a OP b = result`.

    Each line carries the digits it combines and the carry/borrow it passes on, so every output
    digit is a single-digit fact of values written a few tokens earlier.
    """
    if a < 0 or b < 0:
        raise ValueError(f"column_steps: operands must be whole numbers, got {a}, {b}")
    lines: list[str] = []
    if symbol == "+":
        da, db = _digits(a), _digits(b)
        carry = 0
        for i in range(max(len(da), len(db))):
            x = da[i] if i < len(da) else 0
            y = db[i] if i < len(db) else 0
            s = x + y + carry
            lines.append(f"{_PLACES[i]} {x}+{y}+{carry}={s} carry {s // 10}")
            carry = s // 10
        if carry:
            lines.append(f"{_PLACES[len(lines)]} carry {carry}")
        lines.append(f"{a}+{b}={a + b}")
    elif symbol == "-":
        if b > a:
            raise ValueError(f"column_steps: subtraction needs a >= b, got {a} - {b}")
        da, db = _digits(a), _digits(b)
        borrow = 0
        for i in range(len(da)):
            x = da[i]
            y = db[i] if i < len(db) else 0
            d = x - borrow - y
            if d < 0:
                lines.append(f"{_PLACES[i]} {x}-{borrow}-{y}={d}+10={d + 10} borrow 1")
                borrow = 1
            else:
                lines.append(f"{_PLACES[i]} {x}-{borrow}-{y}={d} borrow 0")
                borrow = 0
        lines.append(f"{a}-{b}={a - b}")
    elif symbol == "*":
        if not 0 <= a <= 9:
            raise ValueError(f"column_steps: multiplication needs a one-digit first factor, got {a}")
        db = _digits(b)
        carry = 0
        for i, y in enumerate(db):
            p = a * y + carry
            lines.append(f"{_PLACES[i]} {a}*{y}+{carry}={p} carry {p // 10}")
            carry = p // 10
        if carry:
            lines.append(f"{_PLACES[len(db)]} carry {carry}")
        lines.append(f"{a}*{b}={a * b}")
    else:
        raise ValueError(f"column_steps: unknown operator {symbol!r}")
    return lines


# ------------------------------------------------------------------------------------ problems


@dataclass(frozen=True)
class Step:
    concept: str
    a: int
    b: int
    result: int
    x_second: bool = False  # a later step that takes the previous result as its second operand


@dataclass(frozen=True)
class Problem:
    """One problem with its exact answer and the worked steps that reach it."""

    problem: str  # the user-visible statement
    answer: int
    concepts: tuple[str, ...]  # the foundational concepts it uses, in order
    steps: tuple[Step, ...]
    kind: str  # "foundational" | "composed"
    rationale: str = ""  # how the concepts are composed (PromptCoT's rationale)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def gold(self) -> str:
        return str(self.answer)

    def reasoning(self, *, restate: bool = False) -> str:
        """The text inside `<think> … </think>`. A composed problem heads each step's block with
        `step j a OP b`; with `restate` a one-step problem does too, so the solver restates the
        statement's numbers before reading their digits, and phase 1 writes the layout phase 2 extends."""
        if len(self.steps) == 1 and not restate:
            s = self.steps[0]
            return "\n".join(column_steps(CONCEPTS[s.concept].symbol, s.a, s.b))
        out = []
        for i, s in enumerate(self.steps, 1):
            out.append(f"step {i} {s.a}{CONCEPTS[s.concept].symbol}{s.b}")
            out.extend(column_steps(CONCEPTS[s.concept].symbol, s.a, s.b))
        return "\n".join(out)

    def solution(self, *, restate: bool = False) -> str:
        """The assistant turn in the paper's layout (docs/formats.md, "SFT records"): think block,
        then the boxed answer."""
        return f"<think>\n{self.reasoning(restate=restate)}\n</think>\n\nThe answer is \\boxed{{{self.answer}}}."


def _operands(rng: random.Random, c: Concept) -> tuple[int, int]:
    a = rng.randint(*c.a_range)
    b = rng.randint(*c.b_range)
    if c.symbol == "-" and b > a:
        a, b = b, a
    return a, b


def foundational_problem(rng: random.Random, concept: str) -> Problem:
    c = CONCEPTS[concept]
    a, b = _operands(rng, c)
    r = c.apply(a, b)
    return Problem(problem=f"Compute {a} {c.symbol} {b}.", answer=r, concepts=(concept,),
                   steps=(Step(concept, a, b, r),), kind="foundational",
                   rationale=f"A single application of {c.description.lower()}.")


# The operation pairs of two-step problems, as (inner concept, outer concept); three-step problems
# draw their operations freely. THREE_STEP_SHARE of composed problems have three steps, and an
# addition or subtraction takes the intermediate value as its second operand half the time.
_COMPOSITIONS = [
    ("addition", "subtraction"),
    ("addition", "multiplication"),
    ("subtraction", "addition"),
    ("subtraction", "multiplication"),
    ("multiplication", "addition"),
    ("multiplication", "subtraction"),
    ("addition", "addition"),
]
THREE_STEP_SHARE = 0.4
MAX_VALUE = 999  # every intermediate and final value stays within three digits


def render(steps: Sequence[Step]) -> str:
    """The statement of a chain of steps: the first step innermost, each later one wrapping it."""
    s0 = steps[0]
    expr = f"{s0.a} {CONCEPTS[s0.concept].symbol} {s0.b}"
    for st in steps[1:]:
        sym = CONCEPTS[st.concept].symbol
        expr = f"{st.a} {sym} ({expr})" if st.x_second else f"({expr}) {sym} {st.b}"
    return f"Compute {expr}."


def _next_step(rng: random.Random, concept: str, x: int, x_second: bool) -> Step | None:
    """One more operation on the intermediate value x, or None when no operand keeps the values whole
    and within MAX_VALUE (the caller draws again)."""
    c = CONCEPTS[concept]
    if c.symbol == "*":
        k = rng.randint(*c.a_range)
        return Step(concept, k, x, k * x, True) if x >= 1 and k * x <= MAX_VALUE else None
    if c.symbol == "+":
        other = rng.randint(*c.b_range)
        if x + other > MAX_VALUE:
            return None
        return Step(concept, other, x, other + x, True) if x_second else Step(concept, x, other, x + other)
    # subtraction: x - c needs c <= x; c - x needs c >= x (c at most 99 above x)
    if x_second:
        other = x + rng.randint(0, min(99, MAX_VALUE - x))
        return Step(concept, other, x, other - x, True)
    other = rng.randint(*c.b_range)
    return Step(concept, x, other, x - other) if other <= x else None


def composed_problem(rng: random.Random, concepts: Sequence[str],
                     x_second: Sequence[bool] | None = None) -> Problem:
    """A chain of len(concepts) operations (2 or more): x1 = a OP1 b, then x2 = x1 OP2 c or c OP2 x1,
    and so on. x_second[j] (j >= 1) puts the previous result second in step j (default: first;
    a product always puts it second)."""
    if len(concepts) < 2:
        raise ValueError(f"composed_problem: needs at least two concepts, got {list(concepts)}")
    second = list(x_second) if x_second is not None else [False] * len(concepts)
    first = CONCEPTS[concepts[0]]
    for _ in range(1000):
        a, b = _operands(rng, first)
        steps = [Step(concepts[0], a, b, first.apply(a, b))]
        for j, name in enumerate(concepts[1:], 1):
            st = _next_step(rng, name, steps[-1].result, second[j])
            if st is None:
                break
            steps.append(st)
        if len(steps) < len(concepts):
            continue
        descs = [CONCEPTS[n].description.lower() for n in concepts]
        rationale = (f"The result of {descs[0]} becomes an operand of {', then of '.join(descs[1:])}, so the "
                     f"solver must carry each intermediate value, outside the two-digit range, into the next "
                     f"column algorithm and recall the statement's other numbers after its own working.")
        return Problem(problem=render(steps), answer=steps[-1].result, concepts=tuple(concepts),
                       steps=tuple(steps), kind="composed", rationale=rationale)
    raise RuntimeError(f"composed_problem: could not draw operands for {list(concepts)}")


def random_composition(rng: random.Random) -> tuple[list[str], list[bool]]:
    """The operations and operand positions of a random composed problem (held-out and seed sets)."""
    if rng.random() < THREE_STEP_SHARE:
        names = [rng.choice(sorted(CONCEPTS)) for _ in range(3)]
    else:
        names = list(rng.choice(_COMPOSITIONS))
    return names, [False] + [rng.random() < 0.5 for _ in names[1:]]


# Training draws multiplication twice as often: its single-digit product facts are memorised, not
# derived, and were the only errors left after phase 1 in our measurements (addition and subtraction
# were exact); held-out sets stay uniform over the concepts.
TRAIN_CONCEPT_WEIGHTS = {"addition": 1, "subtraction": 1, "multiplication": 2}


def sample_problem(rng: random.Random, kind: str, weights: dict[str, int] | None = None) -> Problem:
    if kind == "foundational":
        names = sorted(CONCEPTS)
        if weights:
            names = [n for n in names for _ in range(weights.get(n, 1))]
        return foundational_problem(rng, rng.choice(names))
    if kind == "composed":
        names, x_second = random_composition(rng)
        return composed_problem(rng, names, x_second)
    raise ValueError(f"unknown problem kind {kind!r}; expected 'foundational' or 'composed'")


def sample_problems(seed: int, kind: str, n: int, *, exclude: set[str] | None = None,
                    weights: dict[str, int] | None = None) -> list[Problem]:
    """n distinct problems (by statement) of one kind, none of whose statements is in `exclude`."""
    if n < 0:
        raise ValueError(f"sample_problems: n must be >= 0, got {n}")
    rng = random.Random(f"{seed}:{kind}")
    seen = set(exclude or ())
    out: list[Problem] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise RuntimeError(f"sample_problems: only {len(out)} distinct {kind} problems found, asked for {n}")
        p = sample_problem(rng, kind, weights)
        if p.problem in seen:
            continue
        seen.add(p.problem)
        out.append(p)
    return out


@dataclass(frozen=True)
class Splits:
    """The demo's four problem sets. Held-out sets are drawn first (their own seed stream) and the
    training sets exclude their statements, so evaluation never sees a training problem."""

    train_foundational: list[Problem]
    train_composed: list[Problem]
    test_foundational: list[Problem]
    test_composed: list[Problem]


def make_splits(seed: int, *, n_train_foundational: int, n_train_composed: int, n_test_foundational: int,
                n_test_composed: int) -> Splits:
    test_f = sample_problems(seed * 1000 + 1, "foundational", n_test_foundational)
    test_c = sample_problems(seed * 1000 + 2, "composed", n_test_composed)
    held = {p.problem for p in test_f} | {p.problem for p in test_c}
    train_f = sample_problems(seed * 1000 + 3, "foundational", n_train_foundational, exclude=held,
                              weights=TRAIN_CONCEPT_WEIGHTS)
    train_c = sample_problems(seed * 1000 + 4, "composed", n_train_composed, exclude=held)
    return Splits(train_f, train_c, test_f, test_c)


# ------------------------------------------------------------------------------------- checking


def parse_problem(text: str) -> Problem:
    """Recover the Problem (and so its exact answer) from a statement this module wrote.

    Used by the procedural client, which answers a stage from the problem text alone, and by tests
    that check every worked solution reaches the true value. A statement outside the domain (not an
    expression of this module's shape, a negative value, a product whose first factor is not one
    digit) raises ValueError.
    """
    import re

    t = text.strip()
    m = re.fullmatch(r"Compute (.+)\.", t)
    if not m:
        raise ValueError(f"parse_problem: not a statement of the demo domain: {text!r}")
    try:
        steps = _parse_chain(m[1].strip())
        for st in steps:
            column_steps(CONCEPTS[st.concept].symbol, st.a, st.b)  # the column algorithm accepts it
    except ValueError:
        raise ValueError(f"parse_problem: not a statement of the demo domain: {text!r}") from None
    if any(st.result > MAX_VALUE for st in steps[1:]):
        raise ValueError(f"parse_problem: a value above {MAX_VALUE} in {text!r}")
    kind = "foundational" if len(steps) == 1 else "composed"
    return Problem(t, steps[-1].result, tuple(st.concept for st in steps), tuple(steps), kind)


def _parse_chain(expr: str) -> list[Step]:
    """`a OP b`, `(E) OP c` or `c OP (E)` → the steps, innermost first."""
    import re

    m = re.fullmatch(r"(\d+) ([+\-*]) (\d+)", expr)
    if m:
        name = _concept_of(m[2])
        a, b = int(m[1]), int(m[3])
        return [Step(name, a, b, CONCEPTS[name].apply(a, b))]
    m = re.fullmatch(r"\((.+)\) ([+\-*]) (\d+)", expr)
    if m:
        inner = _parse_chain(m[1])
        name, x, c = _concept_of(m[2]), inner[-1].result, int(m[3])
        if CONCEPTS[name].symbol == "*":
            raise ValueError("a product takes the intermediate value second")
        return inner + [Step(name, x, c, CONCEPTS[name].apply(x, c))]
    m = re.fullmatch(r"(\d+) ([+\-*]) \((.+)\)", expr)
    if m:
        inner = _parse_chain(m[3])
        name, c, x = _concept_of(m[2]), int(m[1]), inner[-1].result
        return inner + [Step(name, c, x, CONCEPTS[name].apply(c, x), True)]
    raise ValueError(f"not an expression of the demo domain: {expr!r}")


def _concept_of(symbol: str) -> str:
    for name, c in CONCEPTS.items():
        if c.symbol == symbol:
            return name
    raise ValueError(f"no concept uses operator {symbol!r}")
