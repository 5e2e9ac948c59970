"""Concept statistics and concept-combination sampling (PromptCoT, paper §2.2).

Statistics over the extracted concept lists of the seed problems: the frequency f(c) of each concept
and the symmetric co-occurrence count C[a, b] (how many seed lists contain both a and b; diagonal 0).

Sampling a combination of `size` concepts (the reference's intended procedure):
  c1 ~ f(c) / Σ f
  for k ≥ 2, over the candidates j not yet chosen:
      s_j = Σ_{c ∈ chosen} C[c, j] + cos(e_j, ê),   ê = normalise(mean_{c ∈ chosen} e_c)
      c_k ~ softmax(s / τ),  τ = 0.2
Two reference bugs are not copied: the similarity term is indexed by candidate id (the reference
added a rank-sorted FAISS result vector to an id-indexed vector), and the softmax subtracts the
maximum first (the reference's exp(s/0.2) overflows once a pair co-occurs ~140 times).
Deterministic for a given seed (numpy PCG64).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


def normalize_concept(c: str) -> str:
    """The key under which two spellings of a concept count as one (case and spacing)."""
    return " ".join(c.lower().split()).rstrip(".")


@dataclass
class ConceptStats:
    concepts: list[str]  # display strings, index = concept id
    frequency: np.ndarray  # (C,) int64
    cooc_rows: list[tuple[np.ndarray, np.ndarray]]  # per concept: (neighbour ids int64, counts float64)

    @classmethod
    def from_lists(cls, lists: Iterable[Sequence[str]]) -> ConceptStats:
        index: dict[str, int] = {}
        names: list[str] = []
        freq: list[int] = []
        pairs: dict[int, dict[int, int]] = {}
        for lst in lists:
            ids = []
            for c in lst:
                key = normalize_concept(c)
                if not key:
                    continue
                if key not in index:
                    index[key] = len(names)
                    names.append(c.strip())
                    freq.append(0)
                i = index[key]
                if i not in ids:
                    ids.append(i)
            for i in ids:
                freq[i] += 1
                row = pairs.setdefault(i, {})
                for j in ids:
                    if j != i:
                        row[j] = row.get(j, 0) + 1
        rows = []
        for i in range(len(names)):
            r = pairs.get(i, {})
            js = np.fromiter(sorted(r), dtype=np.int64, count=len(r))
            rows.append((js, np.array([r[j] for j in js], dtype=np.float64)))
        return cls(names, np.asarray(freq, dtype=np.int64), rows)

    @classmethod
    def from_rows(cls, rows: Sequence[dict]) -> ConceptStats:
        """From the `concept_stats` stage's records (`index`, `concept`, `frequency`, `cooccurrence`)."""
        rows = sorted(rows, key=lambda r: r["index"])
        if [r["index"] for r in rows] != list(range(len(rows))):
            raise ValueError("concept rows must have indices 0..C-1 without gaps")
        cooc = []
        for r in rows:
            pairs = r.get("cooccurrence") or []
            cooc.append((np.asarray([p[0] for p in pairs], dtype=np.int64),
                         np.asarray([p[1] for p in pairs], dtype=np.float64)))
        return cls([r["concept"] for r in rows], np.asarray([r["frequency"] for r in rows], dtype=np.int64), cooc)

    def __len__(self) -> int:
        return len(self.concepts)

    def cooc_dense(self) -> np.ndarray:
        m = np.zeros((len(self), len(self)))
        for i, (js, cs) in enumerate(self.cooc_rows):
            m[i, js] = cs
        return m


def stable_softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(s/τ) with the maximum subtracted; -inf entries get probability 0."""
    z = scores / temperature
    finite = np.isfinite(z)
    if not finite.any():
        raise ValueError("no candidate left to sample")
    z = np.where(finite, z - z[finite].max(), -np.inf)
    p = np.exp(z)
    return p / p.sum()


class ConceptSampler:
    """Draws concept combinations from `ConceptStats` and unit-norm embeddings `E` (C, d)."""

    def __init__(self, stats: ConceptStats, embeddings: np.ndarray, *, temperature: float = 0.2,
                 size: int = 5, levels: Sequence[str] = (), seed: int = 0):
        if embeddings.shape[0] != len(stats):
            raise ValueError(f"{embeddings.shape[0]} embeddings for {len(stats)} concepts")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if size < 1 or size > len(stats):
            raise ValueError(f"combination size {size} must be in 1..{len(stats)} (the number of concepts)")
        if stats.frequency.sum() <= 0:
            raise ValueError("concept frequencies are all zero")
        self.stats = stats
        e = np.asarray(embeddings, dtype=np.float64)
        self.E = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)  # (C, d)
        self.temperature = float(temperature)
        self.size = int(size)
        self.levels = tuple(levels)
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self._p_first = stats.frequency / stats.frequency.sum()

    def next_scores(self, chosen: Sequence[int]) -> np.ndarray:
        """s_j for every concept j given the chosen ids (chosen ones are -inf)."""
        s = np.zeros(len(self.stats))
        for c in chosen:
            js, cs = self.stats.cooc_rows[c]
            np.add.at(s, js, cs)
        mean = self.E[list(chosen)].mean(axis=0)
        mean /= max(np.linalg.norm(mean), 1e-12)
        s += self.E @ mean  # cosine similarity of each candidate, indexed by candidate id
        s[list(chosen)] = -np.inf
        return s

    def sample_ids(self) -> list[int]:
        chosen = [int(self.rng.choice(len(self.stats), p=self._p_first))]
        while len(chosen) < self.size:
            p = stable_softmax(self.next_scores(chosen), self.temperature)
            chosen.append(int(self.rng.choice(len(p), p=p)))
        return chosen

    def sample(self) -> tuple[list[str], str | None]:
        ids = self.sample_ids()
        level = self.levels[int(self.rng.integers(len(self.levels)))] if self.levels else None
        return [self.stats.concepts[i] for i in ids], level

    def sample_unique(self, count: int, max_tries_factor: int = 20) -> list[tuple[list[str], str | None]]:
        """`count` combinations whose concept sets are pairwise different (the reference skips exact
        repeats too); stops early, with what it has, if the space is exhausted."""
        out, seen = [], set()
        tries = 0
        while len(out) < count and tries < count * max_tries_factor:
            tries += 1
            concepts, level = self.sample()
            key = frozenset(normalize_concept(c) for c in concepts)
            if key in seen:
                continue
            seen.add(key)
            out.append((concepts, level))
        return out
