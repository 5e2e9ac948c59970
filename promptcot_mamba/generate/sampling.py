"""Sampling parameters with vLLM's semantics, and the batched sampler of the decode loop.

Order of operations per row (vLLM's): penalties on the raw logits (repetition over prompt and output,
presence and frequency over the output), min_tokens masking of the stop tokens, then greedy argmax when
temperature is 0, else temperature → top_k → top_p → min_p → draw.

Reproducibility: every sequence owns its own random source, seeded from the request's seed, and draws
exactly one uniform number per step whatever the batch holds; the draw is an inverse-CDF lookup in
that row's (sorted) distribution. So the same seed gives the same tokens alone or batched with other
requests (up to batch-size-dependent float rounding of the model itself).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

MAX_LOGPROBS = 20  # top-k of logprobs and prompt_logprobs (vLLM's default --max-logprobs)


class SamplingError(ValueError):
    """Invalid sampling parameters; the message and `param` name the field."""

    def __init__(self, message: str, *, param: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 (or 0) = off
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # vLLM/HF: >1 discourages tokens seen in prompt or output
    presence_penalty: float = 0.0  # OpenAI: -2..2, on output tokens
    frequency_penalty: float = 0.0  # OpenAI: -2..2, on output tokens
    min_tokens: int = 0  # stop tokens (EOS, stop_token_ids) are masked before this many tokens
    n: int = 1
    seed: int | None = None  # sample i of a request uses seed + i
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None  # None = off; k >= 0: the chosen token's logprob and the top k
    # None = off; k >= 0: every prompt token's logprob (given the tokens before it) and the top k there.
    # The prefill then keeps every position's logits and bypasses the prefix cache (a cached prefix has
    # no logits).
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise SamplingError(f"{name} {what}, got {getattr(self, name)!r}", param=name)

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        # max_tokens 0: the prompt's prefill only (for its prompt_logprobs), no token is generated
        check(is_int(self.max_tokens) and self.max_tokens >= 0, "max_tokens", "must be an integer >= 0")
        check(is_num(self.temperature) and self.temperature >= 0, "temperature", "must be a number >= 0")
        check(is_num(self.top_p) and 0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(is_int(self.top_k) and (self.top_k == -1 or self.top_k >= 0), "top_k", "must be -1 (off) or >= 0")
        check(is_num(self.min_p) and 0 <= self.min_p <= 1, "min_p", "must be in [0, 1]")
        check(is_num(self.repetition_penalty) and self.repetition_penalty > 0, "repetition_penalty", "must be > 0")
        check(is_num(self.presence_penalty) and -2 <= self.presence_penalty <= 2, "presence_penalty",
              "must be in [-2, 2]")
        check(is_num(self.frequency_penalty) and -2 <= self.frequency_penalty <= 2, "frequency_penalty",
              "must be in [-2, 2]")
        check(is_int(self.min_tokens) and 0 <= self.min_tokens <= self.max_tokens, "min_tokens",
              f"must be an integer in [0, max_tokens={self.max_tokens}]")
        check(is_int(self.n) and self.n >= 1, "n", "must be an integer >= 1")
        check(self.seed is None or is_int(self.seed), "seed", "must be an integer or None")
        check(isinstance(self.stop, tuple) and all(isinstance(s, str) and s for s in self.stop), "stop",
              "must be a tuple of non-empty strings")
        check(isinstance(self.stop_token_ids, tuple) and all(is_int(t) and t >= 0 for t in self.stop_token_ids),
              "stop_token_ids", "must be a tuple of token ids >= 0")
        for name in ("logprobs", "prompt_logprobs"):
            v = getattr(self, name)
            check(v is None or (is_int(v) and 0 <= v <= MAX_LOGPROBS), name,
                  f"must be None or an integer in [0, {MAX_LOGPROBS}]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def has_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    def sample_seed(self, index: int) -> int:
        """The seed of sample `index`: seed + index, or a fresh random seed when none was given."""
        if self.seed is None:
            return random.SystemRandom().randrange(2**63)
        return self.seed + index


@dataclass
class RowSampler:
    """Per-sequence sampling state: its parameters and its own random source."""

    params: SamplingParams
    seed: int
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def uniform(self) -> float:
        return self.rng.random()


def apply_penalties(logits: Tensor, rows: Sequence[RowSampler], prompt_mask: Tensor, out_counts: Tensor) -> Tensor:
    """logits (b, V) fp32; prompt_mask (b, V) bool (token seen in the prompt); out_counts (b, V) int32
    (times generated). Returns new logits with vLLM's repetition, presence and frequency penalties."""
    dev = logits.device
    rep = torch.tensor([r.params.repetition_penalty for r in rows], device=dev)[:, None]
    pres = torch.tensor([r.params.presence_penalty for r in rows], device=dev)[:, None]
    freq = torch.tensor([r.params.frequency_penalty for r in rows], device=dev)[:, None]
    seen = prompt_mask | (out_counts > 0)
    penalised = torch.where(logits > 0, logits / rep, logits * rep)
    logits = torch.where(seen, penalised, logits)
    counts = out_counts.to(logits.dtype)
    return logits - freq * counts - pres * (counts > 0).to(logits.dtype)


def mask_stop_tokens(logits: Tensor, rows_mask: Tensor, stop_ids: Sequence[Sequence[int]]) -> Tensor:
    """Set the stop tokens of the rows in `rows_mask` (b,) bool to -inf (min_tokens not yet reached)."""
    logits = logits.clone()
    for i, ids in enumerate(stop_ids):
        if bool(rows_mask[i]) and ids:
            logits[i, list(ids)] = -math.inf
    return logits


def sample(logits: Tensor, rows: Sequence[RowSampler]) -> list[int]:
    """Draw one token per row from processed logits (b, V); greedy rows take the argmax."""
    b = logits.shape[0]
    greedy = [r.params.greedy for r in rows]
    out = logits.argmax(-1)
    if all(greedy):
        return out.tolist()
    idx = [i for i in range(b) if not greedy[i]]
    sub = logits[idx]
    dev = sub.device
    temp = torch.tensor([rows[i].params.temperature for i in idx], device=dev)[:, None]
    sub = sub / temp
    probs_sorted, order = torch.sort(torch.softmax(sub, dim=-1), dim=-1, descending=True)  # (s, V)
    V = sub.shape[-1]
    ranks = torch.arange(V, device=dev)[None, :]
    keep = torch.ones_like(probs_sorted, dtype=torch.bool)
    top_k = torch.tensor([rows[i].params.top_k if rows[i].params.top_k > 0 else V for i in idx], device=dev)
    keep &= ranks < top_k[:, None]
    top_p = torch.tensor([rows[i].params.top_p for i in idx], device=dev)[:, None]
    # keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is < top_p
    mass_before = torch.cumsum(probs_sorted, -1) - probs_sorted
    keep &= mass_before < top_p
    min_p = torch.tensor([rows[i].params.min_p for i in idx], device=dev)[:, None]
    keep &= probs_sorted >= min_p * probs_sorted[:, :1]
    keep[:, 0] = True  # the most likely token always survives
    p = torch.where(keep, probs_sorted, torch.zeros_like(probs_sorted))
    cdf = torch.cumsum(p, -1)
    u = torch.tensor([rows[i].uniform() for i in idx], device=dev, dtype=cdf.dtype)[:, None] * cdf[:, -1:]
    pos = torch.searchsorted(cdf, u, right=True).clamp_(max=V - 1)
    # a position past the kept prefix can only come from rounding at the top end: step back into it
    n_keep = keep.sum(-1, keepdim=True)
    pos = torch.minimum(pos, n_keep - 1)
    chosen = order.gather(-1, pos).squeeze(-1)
    out[idx] = chosen
    return out.tolist()


@dataclass
class TokenLogprob:
    """One position's logprobs: the token there (chosen, or the prompt's), its logprob and rank (1 = the
    most likely), and the top k (token id, logprob), most likely first."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]
    rank: int = 1


def logprobs_of(raw_logits: Tensor, tokens: Sequence[int], ks: Sequence[int], *,
                limit: int | None = None) -> list[TokenLogprob]:
    """Logprobs of `tokens` (one per row of `raw_logits` (b, V)) under the raw model distribution:
    log-softmax of the model's logits over its whole vocabulary, before penalties, temperature and
    truncation (vLLM's default logprobs mode). The top k and the ranks count ids below `limit` only
    (ids a checkpoint pads its vocabulary with are never sampled and cannot be decoded)."""
    lp = torch.log_softmax(raw_logits.float(), dim=-1)
    chosen = lp.gather(-1, torch.tensor(tokens, device=lp.device)[:, None])  # (b, 1)
    if limit is not None and limit < lp.shape[-1]:
        lp = lp[:, :limit]
    ranks = (1 + (lp > chosen).sum(-1)).tolist()
    chosen = chosen.squeeze(-1).tolist()
    kmax = max(ks, default=0)
    ids = vals = None
    if kmax > 0:
        v, i = lp.topk(kmax, dim=-1)
        vals, ids = v.tolist(), i.tolist()
    return [TokenLogprob(t, c, list(zip(ids[r][:k], vals[r][:k])) if k else [], rank)
            for r, (t, c, k, rank) in enumerate(zip(tokens, chosen, ks, ranks))]
