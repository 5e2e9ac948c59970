"""Near-duplicate removal among synthesized problems: MinHash LSH candidates (datasketch), confirmed by
exact word-set Jaccard (as PromptCoT 2.0's `deduplicate_problems.py` does).

The first occurrence (input order) is kept; a later problem whose word-set Jaccard with an already
kept one exceeds `threshold` is removed, with the id it duplicates and the score. Exact duplicates
(after whitespace/case normalisation) are removed first without hashing.

Settings: `min_word_len`/`drop_numeric` reproduce the reference's word filter (words of ≥ 4
characters, no numbers, threshold 0.2) when the shipped paper configs ask for it; the defaults keep
numbers and short words so that problems that differ only in their numbers are not merged (the
demo's arithmetic problems). The reference's growing stop-word list (words seen > 1000 times) is
not reproduced: it makes a problem's signature depend on the order of the stream.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_WORD = re.compile(r"[a-z0-9]+")


def word_set(text: str, *, min_word_len: int = 1, drop_numeric: bool = False) -> frozenset[str]:
    words = _WORD.findall(text.lower())
    return frozenset(w for w in words if len(w) >= min_word_len and not (drop_numeric and w.isdigit()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _identity(x: int) -> int:
    return x


@dataclass
class DedupResult:
    kept: list[str]
    removed: list[dict] = field(default_factory=list)  # {"id", "duplicate_of", "jaccard", "kind"}

    @property
    def removed_ids(self) -> dict[str, dict]:
        return {r["id"]: r for r in self.removed}


@dataclass
class Deduplicator:
    threshold: float = 0.7
    num_perm: int = 128
    min_word_len: int = 1
    drop_numeric: bool = False
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"dedup threshold must be in (0, 1), got {self.threshold}")
        if self.num_perm < 16:
            raise ValueError(f"dedup num_perm must be >= 16, got {self.num_perm}")

    def run(self, items: Sequence[tuple[str, str]], progress: bool = False) -> DedupResult:
        """`items`: (id, text) in priority order."""
        try:
            from datasketch import MinHash, MinHashLSH
            from datasketch.hashfunc import sha1_hash32
        except ImportError as err:  # pragma: no cover
            raise ImportError("dedup needs datasketch: pip install 'promptcot-mamba[synth]'") from err

        res = DedupResult(kept=[])
        exact: dict[str, str] = {}
        sets: dict[str, frozenset[str]] = {}
        todo: list[tuple[str, frozenset[str]]] = []
        for rid, text in items:
            key = " ".join(text.lower().split())
            if key in exact:
                res.removed.append({"id": rid, "duplicate_of": exact[key], "jaccard": 1.0, "kind": "exact"})
                continue
            exact[key] = rid
            todo.append((rid, word_set(text, min_word_len=self.min_word_len, drop_numeric=self.drop_numeric)))

        # One shared permutation table for all signatures (MinHash.bulk), words hashed once each.
        # Each distinct word is hashed once (sha1, datasketch's own 32-bit hash) and the signatures
        # are built with one shared permutation table (MinHash.bulk): ~3x faster than per-item MinHash.
        cache: dict[str, int] = {}

        def h(w: str) -> int:
            v = cache.get(w)
            if v is None:
                v = cache[w] = sha1_hash32(w.encode())
            return v

        sigs = MinHash.bulk([[h(w) for w in ws] for _, ws in todo], num_perm=self.num_perm, seed=self.seed,
                            hashfunc=_identity)
        lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        it = zip(todo, sigs)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(todo), desc="dedup", unit="problem")
        for (rid, ws), sig in it:
            best, best_j = None, -1.0
            for cand in lsh.query(sig):
                j = jaccard(ws, sets[cand])
                if j > best_j:
                    best, best_j = cand, j
            if best is not None and best_j > self.threshold:
                res.removed.append({"id": rid, "duplicate_of": best, "jaccard": round(best_j, 4),
                                    "kind": "near"})
                continue
            sets[rid] = ws
            lsh.insert(rid, sig)
            res.kept.append(rid)
        # kept must follow input order; exact duplicates never entered `todo`
        return res
