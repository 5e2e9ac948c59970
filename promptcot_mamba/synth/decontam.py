"""Decontamination of synthesized problems against every evaluation benchmark (n-gram overlap).

The PromptCoT reference pipeline has no decontamination step, and its released data was found to
contain near-copies of AIME 2024 problems with changed numbers
(https://github.com/inclusionAI/PromptCoT/issues/8). So the overlap is measured on normalised word
n-grams in which every run of numbers becomes one placeholder token: a copy with new numbers still
matches. A problem is contaminated when, for some benchmark item,

    |G(problem) ∩ G(item)| / |G(item)|  ≥  threshold      (default n=8, 0.5, and ≥ 3 shared n-grams)

i.e. half of the item's n-grams occur in the problem (see `Decontaminator` for short items).
Measured on this data (tests/synth): planted near-copies of AIME 24/25 and MATH-500 problems are
found, and ~3% of MATH *train* problems are flagged — mostly same-template siblings of MATH-500
problems ("How many vertical asymptotes does the graph of … have?"), which is the intent. Benchmarks are read from
`$PCM_BENCHMARK_DIR` (default: the shared data folder): every JSONL file except the seed sets, with
the problem text taken from the first present field of `problem`, `question`, `question_content`,
`prompt`.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from promptcot_mamba.common.files import iter_jsonl

TEXT_FIELDS = ("problem", "question", "question_content", "prompt")
_TOKEN = re.compile(r"[a-z]{2,}|\d+(?:\.\d+)?")
# LaTeX command names that carry no content (\frac, \left, ...): dropped so formulas do not make grams
_LATEX_NOISE = frozenset("frac dfrac tfrac left right text mathrm mathbf textbf mbox cdot cdots ldots dots times "
                         "qquad quad begin end array le ge leq geq sqrt displaystyle".split())


# Words that make "what is the value of <num>" look like a match; a short item needs 4 other words.
_FUNCTION_WORDS = frozenset("a an and are as at be by compute determine evaluate find for from how if in is it its "
                            "let many much of on or simplify solve such suppose that the then this to value was "
                            "what when where which with".split())


def default_benchmark_dir() -> Path:
    env = os.environ.get("PCM_BENCHMARK_DIR")
    if env:
        return Path(env)
    # repo checkout: <root>/promptcot_mamba/synth/decontam.py → <root>/../shared/data/benchmarks
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks").resolve()


def normalize_tokens(text: str) -> list[str]:
    """Lowercase words of ≥ 2 letters (single letters are variable names), LaTeX noise dropped, and
    every run of numbers collapsed into one `<num>`, so a copy with changed numbers still matches."""
    out: list[str] = []
    for t in _TOKEN.findall(text.lower()):
        if t[0].isdigit():
            if not out or out[-1] != "<num>":
                out.append("<num>")
        elif t not in _LATEX_NOISE:
            out.append(t)
    return out


def ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str  # e.g. "aime24/test"
    id: str
    text: str


def load_benchmarks(root: str | Path | None = None, *, exclude_dirs: Iterable[str] = ("seeds",)) -> list[BenchmarkItem]:
    root = Path(root) if root else default_benchmark_dir()
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark folder {root} not found; set PCM_BENCHMARK_DIR")
    items: list[BenchmarkItem] = []
    excl = set(exclude_dirs)
    for f in sorted(root.rglob("*.jsonl")):
        rel = f.relative_to(root)
        if rel.parts and rel.parts[0] in excl:
            continue
        name = str(rel.with_suffix(""))
        for k, rec in enumerate(iter_jsonl(f)):
            text = next((rec[k2] for k2 in TEXT_FIELDS if isinstance(rec.get(k2), str) and rec[k2].strip()), None)
            if text is None:
                continue
            rid = str(rec.get("id") or rec.get("task_id") or rec.get("question_id") or rec.get("unique_id") or k)
            items.append(BenchmarkItem(name, rid, text))
    if not items:
        raise ValueError(f"no benchmark problems found under {root}")
    return items


@dataclass
class Decontaminator:
    """n-gram overlap index over benchmark items.

    Items of at least `min_tokens` normalised tokens are matched by n-gram overlap, with shorter
    n-grams for shorter items (n_i = clamp(len/3, `min_n`, n)) so a one-line AIME problem with a
    changed word still matches; a match needs ≥ `min_shared` shared n-grams covering ≥ `threshold`
    of the item's n-grams. Shorter items (formula-only one-liners such as "Solve for x: …") would
    match every formula-heavy text by n-grams, so they are matched only by their whole normalised
    token sequence: equal to the text's, or (for ≥ 8 tokens) contained in it."""

    benchmarks: Sequence[BenchmarkItem]
    n: int = 8
    threshold: float = 0.5
    min_n: int = 5
    min_tokens: int = 15
    min_shared: int = 3
    _index: dict = field(default_factory=dict, init=False, repr=False)
    _sizes: list[int] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n < 3 or self.min_n < 3 or self.min_n > self.n:
            raise ValueError(f"decontamination n-gram lengths must satisfy 3 <= min_n <= n, got {self.min_n}, {self.n}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"decontamination threshold must be in (0, 1], got {self.threshold}")
        index: dict[tuple[int, tuple[str, ...]], list[int]] = defaultdict(list)
        self._short: dict[tuple[str, ...], int] = {}
        ns = set()
        for i, item in enumerate(self.benchmarks):
            toks = normalize_tokens(item.text)
            if len(toks) < self.min_tokens:
                self._sizes.append(0)
                if sum(t not in _FUNCTION_WORDS and t != "<num>" for t in toks) >= 4:
                    self._short.setdefault(tuple(toks), i)
                continue
            n_i = max(self.min_n, min(self.n, len(toks) // 3))
            g = ngrams(toks, n_i)
            ns.add(n_i)
            self._sizes.append(len(g))
            for gram in g:
                index[(n_i, gram)].append(i)
        self._index = dict(index)
        self._ns = sorted(ns)
        # containment is distinctive only for sequences of >= 8 tokens ("what is the value of <num>" is not)
        self._short_lengths = sorted({len(k) for k in self._short if len(k) >= 8})

    def check(self, text: str) -> dict | None:
        """The best-matching benchmark item if `text` is contaminated, else None."""
        toks = normalize_tokens(text)
        if not toks:
            return None
        best = None
        if tuple(toks) in self._short:
            best = (self._short[tuple(toks)], 1.0)
        for length in self._short_lengths:  # a short item's whole token sequence inside the text
            for gram in ngrams(toks, length) if len(toks) > length else ():
                if gram in self._short:
                    best = (self._short[gram], 1.0)
                    break
        for n in self._ns:
            hits: dict[int, int] = defaultdict(int)
            for gram in ngrams(toks, n):
                for i in self._index.get((n, gram), ()):
                    hits[i] += 1
            for i, shared in hits.items():
                score = shared / self._sizes[i]
                if shared >= self.min_shared and score >= self.threshold and (best is None or score > best[1]):
                    best = (i, score)
        if best is None:
            return None
        item = self.benchmarks[best[0]]
        return {"benchmark": item.benchmark, "benchmark_id": item.id, "overlap": round(best[1], 4),
                "benchmark_excerpt": item.text[:160]}
