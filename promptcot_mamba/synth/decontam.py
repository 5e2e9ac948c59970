"""Decontamination of synthesized problems against every evaluation benchmark (n-gram overlap).

The reference pipeline has none (notes §1.6, §3), and its released data was found to contain
near-copies of AIME 2024 problems with changed numbers (PromptCoT issue #8). So the overlap is
measured on normalised word n-grams in which every number becomes one placeholder token: a copy
with new numbers still matches. A problem is contaminated when, for some benchmark item,

    |G(problem) ∩ G(item)| / min(|G(problem)|, |G(item)|)  ≥  threshold      (default n=8, 0.5)

i.e. half of the shorter text's n-grams also occur in the other. Benchmarks are read from
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

from promptcot_mamba.synth.records import read_jsonl

TEXT_FIELDS = ("problem", "question", "question_content", "prompt")
_TOKEN = re.compile(r"[a-z]+|\d+(?:\.\d+)?")


def default_benchmark_dir() -> Path:
    env = os.environ.get("PCM_BENCHMARK_DIR")
    if env:
        return Path(env)
    # repo checkout: <root>/promptcot_mamba/synth/decontam.py → <root>/../shared/data/benchmarks
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks").resolve()


def normalize_tokens(text: str) -> list[str]:
    """Lowercase words and numbers; every number is one placeholder so changed numbers still match;
    LaTeX commands lose their backslash (\\frac → frac)."""
    return ["<num>" if t[0].isdigit() else t for t in _TOKEN.findall(text.lower())]


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
        for k, rec in enumerate(read_jsonl(f)):
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
    benchmarks: Sequence[BenchmarkItem]
    n: int = 8
    threshold: float = 0.5
    _index: dict = field(default_factory=dict, init=False, repr=False)
    _sizes: list[int] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n < 3:
            raise ValueError(f"decontamination n-gram length must be >= 3, got {self.n}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"decontamination threshold must be in (0, 1], got {self.threshold}")
        index: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, item in enumerate(self.benchmarks):
            g = ngrams(normalize_tokens(item.text), self.n)
            self._sizes.append(len(g))
            for gram in g:
                index[gram].append(i)
        self._index = dict(index)

    def check(self, text: str) -> dict | None:
        """The best-matching benchmark item if `text` is contaminated, else None."""
        g = ngrams(normalize_tokens(text), self.n)
        if not g:
            return None
        hits: dict[int, int] = defaultdict(int)
        for gram in g:
            for i in self._index.get(gram, ()):
                hits[i] += 1
        best = None
        for i, shared in hits.items():
            score = shared / max(1, min(len(g), self._sizes[i]))
            if score >= self.threshold and (best is None or score > best[1]):
                best = (i, score)
        if best is None:
            return None
        item = self.benchmarks[best[0]]
        return {"benchmark": item.benchmark, "benchmark_id": item.id, "overlap": round(best[1], 4),
                "benchmark_excerpt": item.text[:160]}
