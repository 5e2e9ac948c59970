"""Inference efficiency at toy scale: decode throughput and memory against generated length (Figure 2).

Figure 2 of the paper compares tokens/s of PromptCoT-Mamba-7B and a Transformer across generation
lengths; the mechanism is the paper's §2.1 "Inference": a Mamba model carries a fixed-size state per sequence,
a Transformer a key/value cache that grows with every token. This module measures both sides in one
process, with the same decode loop shape (one token per sequence per call, greedy) so the only
difference is the architecture:

- Mamba-2: `model.prefill(prompt)` then `model.step(tokens, state)`; memory = `state.nbytes`, read at
  every checkpoint (it must not change).
- Transformer (transformers causal LM): one forward per token with its `DynamicCache`; memory = the
  bytes of every key/value tensor in the cache at that length.

Memory is measured as the bytes of the tensors that carry the sequence's context (exact and
deterministic), not process RSS, which on CPU is dominated by the allocator. Throughput is the rate
over the window since the previous checkpoint (what Figure 2 plots against length) and is noisy on a
shared CPU; the report says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class EfficiencyPoint:
    model: str  # label, e.g. "Mamba-2" / "Transformer"
    generated: int  # tokens generated per sequence so far
    tokens_per_s: float  # batch * window tokens / window seconds
    context_bytes: int  # state (Mamba) or KV cache (Transformer) bytes for the whole batch
    batch: int

    def to_dict(self) -> dict:
        return asdict(self)


def _checkpoints(lengths: Sequence[int]) -> list[int]:
    out = sorted(set(int(x) for x in lengths))
    if not out or out[0] < 1:
        raise ValueError(f"efficiency: lengths must be positive integers, got {list(lengths)}")
    return out


@torch.no_grad()
def measure_mamba(model, prompt_ids: Sequence[int], lengths: Sequence[int], *, batch: int = 4,
                  label: str = "Mamba-2") -> list[EfficiencyPoint]:
    """Decode up to max(lengths) tokens per sequence from a Mamba2LM; a point at every length."""
    marks = _checkpoints(lengths)
    model.eval()
    ids = torch.tensor([list(prompt_ids)] * batch, dtype=torch.long, device=model.device)  # (b, T0)
    logits, state = model.prefill(ids)  # logits (b, V); state fixed-size
    points: list[EfficiencyPoint] = []
    done, t_prev, n_prev = 0, time.perf_counter(), 0
    for mark in marks:
        while done < mark:
            tok = logits.argmax(-1)  # (b,)
            logits = model.step(tok, state)
            done += 1
        now = time.perf_counter()
        points.append(EfficiencyPoint(label, mark, batch * (mark - n_prev) / max(now - t_prev, 1e-9),
                                      int(state.nbytes), batch))
        t_prev, n_prev = now, mark
    return points


def kv_cache_nbytes(cache) -> int:
    """Bytes of every key/value tensor held by a transformers cache (DynamicCache of any version,
    or the legacy tuple of (k, v) pairs)."""
    total = 0
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total
    for name in ("key_cache", "value_cache"):  # transformers 4.x DynamicCache
        for t in getattr(cache, name, []) or []:
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    if total:
        return total
    if isinstance(cache, (tuple, list)):
        for item in cache:
            total += kv_cache_nbytes(item) if not isinstance(item, torch.Tensor) else item.numel() * item.element_size()
    return total


@torch.no_grad()
def measure_transformer(model, prompt_ids: Sequence[int], lengths: Sequence[int], *, batch: int = 4,
                        label: str = "Transformer") -> list[EfficiencyPoint]:
    """Decode up to max(lengths) tokens per sequence from a transformers causal LM with its KV cache."""
    from transformers import DynamicCache

    marks = _checkpoints(lengths)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and len(prompt_ids) + marks[-1] > limit:
        raise ValueError(f"measure_transformer: prompt ({len(prompt_ids)}) + {marks[-1]} tokens exceeds the "
                         f"model's max_position_embeddings ({limit})")
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)] * batch, dtype=torch.long, device=device)
    cache = DynamicCache()
    out = model(input_ids=ids, past_key_values=cache, use_cache=True)
    cache = out.past_key_values
    logits = out.logits[:, -1]
    points: list[EfficiencyPoint] = []
    done, t_prev, n_prev = 0, time.perf_counter(), 0
    for mark in marks:
        while done < mark:
            tok = logits.argmax(-1, keepdim=True)  # (b, 1)
            out = model(input_ids=tok, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1]
            done += 1
        now = time.perf_counter()
        points.append(EfficiencyPoint(label, mark, batch * (mark - n_prev) / max(now - t_prev, 1e-9),
                                      kv_cache_nbytes(cache), batch))
        t_prev, n_prev = now, mark
    return points


def memory_is_flat(points: Sequence[EfficiencyPoint]) -> bool:
    return len({p.context_bytes for p in points}) == 1


def memory_grows(points: Sequence[EfficiencyPoint]) -> bool:
    b = [p.context_bytes for p in points]
    return all(y > x for x, y in zip(b, b[1:]))


def findings(points: Sequence[EfficiencyPoint], *, ssm: str, transformer: str) -> list[str]:
    """Plain statements of what the measured points of the `ssm` and `transformer` models show
    (stated whatever they show)."""
    m = [p for p in points if p.model == ssm]
    t = [p for p in points if p.model == transformer]
    lines = []
    if m:
        lines.append(f"{ssm} context memory is {'constant' if memory_is_flat(m) else 'NOT constant'} across "
                     f"lengths: {m[0].context_bytes / 1024:.1f} KiB at {m[0].generated} tokens, "
                     f"{m[-1].context_bytes / 1024:.1f} KiB at {m[-1].generated}.")
    if t:
        lines.append(f"{transformer} KV cache {'grows' if memory_grows(t) else 'does NOT grow'} with length: "
                     f"{t[0].context_bytes / 1024:.1f} KiB at {t[0].generated} tokens, "
                     f"{t[-1].context_bytes / 1024:.1f} KiB at {t[-1].generated}.")
    if m and t:
        lines.append(f"At {m[-1].generated} generated tokens: {ssm} {m[-1].tokens_per_s:.0f} tokens/s vs "
                     f"{transformer} {t[-1].tokens_per_s:.0f} tokens/s "
                     f"(ratio {m[-1].tokens_per_s / max(t[-1].tokens_per_s, 1e-9):.2f}×).")
    return lines
