"""The demo's built-in task domain: procedurally generated, exactly checkable arithmetic reasoning.

PromptCoT (paper §2.2) builds problems from *foundational concepts* composed by a *rationale*. Here the
foundational concepts are three column algorithms a tiny model can learn on a laptop CPU:

    addition        a + b        (two-digit operands)          column sum with carries
    subtraction     a - b        (a >= b, two-digit a)         column difference with borrows
    multiplication  a * b        (one-digit a, two-digit b)    column product with carries

A *foundational* problem exercises one concept on its home range (phase 1, the initialization
phase). A *composed* problem chains two concepts: the result of the first becomes an operand of the
second (phase 2, the advanced phase), so intermediate values leave the home range (three digits) —
the model must generalise the algorithms it learned, which is the curriculum's point.

Every worked solution is written in the paper's layout: the reasoning inside `<think> … </think>`,
then the final answer in `\\boxed{}`. The steps are digit-level so each token depends on a handful
of earlier ones — what a few-hundred-thousand-parameter model can learn in minutes.

Everything is a pure function of a seed (`random.Random(seed)`): the same seed gives the same
problems, solutions and splits, and held-out sets are disjoint from the training sets by problem
text (`make_splits`).
"""

from __future__ import annotations

import random
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

    def reasoning(self) -> str:
        """The text inside `<think> … </think>`."""
        if len(self.steps) == 1:
            s = self.steps[0]
            return "\n".join(column_steps(CONCEPTS[s.concept].symbol, s.a, s.b))
        out = []
        for i, s in enumerate(self.steps, 1):
            out.append(f"step {i} {s.a}{CONCEPTS[s.concept].symbol}{s.b}")
            out.extend(column_steps(CONCEPTS[s.concept].symbol, s.a, s.b))
        return "\n".join(out)

    def solution(self) -> str:
        """The assistant turn in the paper's layout (docs/formats.md, "SFT records"): think block,
        then the boxed answer."""
        return f"<think>\n{self.reasoning()}\n</think>\n\nThe answer is \\boxed{{{self.answer}}}."


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


# How the first result feeds the second operation (the composition's "rationale"). Keys are
# (first concept, second concept). The intermediate value x is placed where the second concept's
# column algorithm accepts it (the one-digit factor of a product is never x).
_COMPOSITIONS = [
    ("addition", "subtraction"),
    ("addition", "multiplication"),
    ("subtraction", "addition"),
    ("subtraction", "multiplication"),
    ("multiplication", "addition"),
    ("multiplication", "subtraction"),
    ("addition", "addition"),
]


def composed_problem(rng: random.Random, first: str, second: str) -> Problem:
    """Two concepts chained: x = a OP1 b, then x OP2 c (or c OP2 x where that keeps it whole)."""
    c1, c2 = CONCEPTS[first], CONCEPTS[second]
    for _ in range(1000):
        a, b = _operands(rng, c1)
        x = c1.apply(a, b)
        if c2.symbol == "*":
            k = rng.randint(*c2.a_range)
            if x < 1 or k * x > 999:
                continue
            steps = (Step(first, a, b, x), Step(second, k, x, k * x))
            text = f"Compute {k} * ({a} {c1.symbol} {b})."
        elif c2.symbol == "-":
            c = rng.randint(*c2.b_range)
            if c > x:
                continue
            steps = (Step(first, a, b, x), Step(second, x, c, x - c))
            text = f"Compute ({a} {c1.symbol} {b}) - {c}."
        else:
            c = rng.randint(*c2.b_range)
            if x + c > 999:
                continue
            steps = (Step(first, a, b, x), Step(second, x, c, x + c))
            text = f"Compute ({a} {c1.symbol} {b}) + {c}."
        rationale = (f"The result of {c1.description.lower()} becomes an operand of "
                     f"{c2.description.lower()}, so the solver must carry an intermediate value "
                     f"outside the two-digit range into a second column algorithm.")
        return Problem(problem=text, answer=steps[-1].result, concepts=(first, second), steps=steps,
                       kind="composed", rationale=rationale)
    raise RuntimeError(f"composed_problem: could not draw operands for {first} then {second}")


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
        first, second = rng.choice(_COMPOSITIONS)
        return composed_problem(rng, first, second)
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
    that check every worked solution reaches the true value.
    """
    import re

    t = text.strip()
    m = re.fullmatch(r"Compute (\d+) ([+\-*]) (\d+)\.", t)
    if m:
        a, op, b = int(m[1]), m[2], int(m[3])
        name = _concept_of(op)
        r = CONCEPTS[name].apply(a, b)
        return Problem(t, r, (name,), (Step(name, a, b, r),), "foundational")
    m = re.fullmatch(r"Compute (\d) \* \((\d+) ([+\-*]) (\d+)\)\.", t)
    if m:
        k, a, op, b = int(m[1]), int(m[2]), m[3], int(m[4])
        n1 = _concept_of(op)
        x = CONCEPTS[n1].apply(a, b)
        return Problem(t, k * x, (n1, "multiplication"),
                       (Step(n1, a, b, x), Step("multiplication", k, x, k * x)), "composed")
    m = re.fullmatch(r"Compute \((\d+) ([+\-*]) (\d+)\) ([+\-]) (\d+)\.", t)
    if m:
        a, op, b, op2, c = int(m[1]), m[2], int(m[3]), m[4], int(m[5])
        n1, n2 = _concept_of(op), _concept_of(op2)
        x = CONCEPTS[n1].apply(a, b)
        y = CONCEPTS[n2].apply(x, c)
        return Problem(t, y, (n1, n2), (Step(n1, a, b, x), Step(n2, x, c, y)), "composed")
    raise ValueError(f"parse_problem: not a statement of the demo domain: {text!r}")


def _concept_of(symbol: str) -> str:
    for name, c in CONCEPTS.items():
        if c.symbol == symbol:
            return name
    raise ValueError(f"no concept uses operator {symbol!r}")
