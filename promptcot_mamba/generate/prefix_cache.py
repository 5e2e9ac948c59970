"""A bounded LRU cache of states after shared prompt prefixes (system prompt, few-shot header).

A Mamba state summarises a whole prefix in fixed memory, so caching it costs one state per prefix
instead of a KV block per token. What makes reuse *exact*: the engine prefills every prompt in
segments that end at the same positions whatever the request (`split_points`: the geometric
positions `block·2^k` and multiples of the prefill chunk), so the state cached at position p by one
request is bit for bit the state any later request computes at p. Entries are cached at the geometric
positions only, so a prompt of T tokens adds at most log2(T/block) states; a shared prefix of S tokens
is reused up to the largest such position ≤ S (at least S/2 of it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from promptcot_mamba.model.state import InferenceState


def cache_points(length: int, block: int) -> list[int]:
    """Positions p = block·2^k with p < length (at least one token is left to produce logits)."""
    out, p = [], block
    while p < length:
        out.append(p)
        p *= 2
    return out


def split_points(length: int, block: int, chunk: int) -> list[int]:
    """Segment ends of a prefill of `length` tokens: cache points, chunk multiples, and the end."""
    pts = set(cache_points(length, block)) | set(range(chunk, length, chunk)) | {length}
    return sorted(pts)


@dataclass
class PrefixHit:
    length: int  # tokens covered
    state: InferenceState  # a copy the caller may modify


class PrefixCache:
    """LRU map from a token prefix to the (b=1) state after it, bounded by `max_bytes`."""

    def __init__(self, max_bytes: int, block: int = 64):
        if max_bytes < 0:
            raise ValueError(f"PrefixCache: max_bytes must be >= 0, got {max_bytes}")
        if block < 1:
            raise ValueError(f"PrefixCache: block must be >= 1, got {block}")
        self.max_bytes = max_bytes
        self.block = block
        self._entries: OrderedDict[tuple[int, ...], InferenceState] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def lookup(self, prompt: Sequence[int]) -> PrefixHit | None:
        """The longest cached prefix of `prompt` (a strict prefix), as a private copy of its state."""
        if not self.enabled or not self._entries:
            return None
        for p in reversed(cache_points(len(prompt), self.block)):
            key = tuple(prompt[:p])
            state = self._entries.get(key)
            if state is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return PrefixHit(p, state.clone())
        return None

    def insert(self, prefix: Sequence[int], state: InferenceState) -> None:
        """Keep a copy of `state` (one sequence) as the state after `prefix`; evict LRU to fit."""
        if not self.enabled:
            return
        key = tuple(prefix)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        size = state.nbytes
        if size > self.max_bytes:
            return
        while self.nbytes + size > self.max_bytes and self._entries:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes
            self.evictions += 1
        self._entries[key] = state.clone()
        self.nbytes += size
