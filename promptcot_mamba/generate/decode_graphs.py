"""Decode steps replayed from CUDA graphs, one graph per batch-size bucket (the engine's
`kernels.decode == "bucketed"`).

A Mamba-2 decode step is ~6 small launches per layer (~400 at Codestral's 64 layers): at batch 1 the
launch overhead, not the 14.6 GB weight read, sets the speed (measured on an H200 with the 7B shape
in plain PyTorch: 44 ms a step eager, 9.6 ms replayed from one CUDA graph). Graph replay needs fixed
addresses, which a continuous-batching engine has already: its `InferenceState` pool is allocated
once and the n active sequences sit in rows [0, n) (generate/engine.py). So `BucketedDecoder` captures, per bucket size r (1, 2, 4, …, the pool size),
one step over rows [0, r) of the pool; a call with n tokens replays the smallest bucket r ≥ n with the
tokens padded by zeros. Padded rows [n, r) are free slots: their states change, which is harmless
because a slot's state is written in full when a sequence is placed in it. Rows ≥ r are untouched.

`CUDAGraphStep` is the single-batch-size building block (used by the benchmarks). The step itself is
`model.step`, so the model's `kernels.step` decides whether the eager or the fused Triton step is
captured.

On a CPU (or with `use_graphs=False`) the same object runs the step eagerly on the same rows, so
callers and tests need no second code path. Capture happens once, in `__init__`, BEFORE any
sequence is placed in the pool: warm-up and capture write rows of every bucket.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from promptcot_mamba.model.state import InferenceState

StepFn = Callable[[Tensor, InferenceState], Tensor]  # model.step: tokens (b,), state → logits (b, vocab)


class CUDAGraphStep:
    """One decode step for a fixed batch size, captured once in a CUDA graph and replayed.

    The graph reads the token buffer and reads/writes `state` in place (its tensors must stay alive
    and at the same addresses); `__call__` copies the new tokens in, replays, and returns the static
    logits buffer (overwritten by the next call). Warm-up runs on a side stream, as torch's CUDA graph
    notes require; with `restore=True` the state is put back afterwards so capture leaves no trace."""

    def __init__(self, step: StepFn, state: InferenceState, tokens: Tensor, *, warmup: int = 2,
                 restore: bool = True, pool=None):
        if not tokens.is_cuda:
            raise RuntimeError("CUDAGraphStep needs CUDA tensors")
        self.tokens = tokens.clone()
        self.state = state
        snapshot = state.clone() if restore else None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(warmup):
                step(self.tokens, state)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool), torch.no_grad():
            self.logits = step(self.tokens, state)
        if snapshot is not None:
            state.conv.copy_(snapshot.conv)
            state.ssm.copy_(snapshot.ssm)

    def __call__(self, tokens: Tensor) -> Tensor:
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits


def default_buckets(max_rows: int) -> list[int]:
    out, r = [], 1
    while r < max_rows:
        out.append(r)
        r *= 2
    return out + [max_rows]


class BucketedDecoder:
    """`decoder(tokens (n,)) → logits (n, vocab)`: one decode step for the sequences in rows [0, n)
    of `pool`, replayed from the CUDA graph of the smallest bucket ≥ n."""

    def __init__(self, model, pool: InferenceState, *, buckets: Sequence[int] | None = None,
                 use_graphs: bool | None = None):
        self.model = model
        self.pool = pool
        self.max_rows = pool.batch_size
        self.buckets = sorted(set(buckets or default_buckets(self.max_rows)))
        if self.buckets[0] < 1 or self.buckets[-1] > self.max_rows:
            raise ValueError(f"BucketedDecoder: buckets {self.buckets} must lie in [1, {self.max_rows}]")
        if self.buckets[-1] != self.max_rows:
            self.buckets.append(self.max_rows)
        self.step: StepFn = model.step
        self.use_graphs = pool.ssm.is_cuda if use_graphs is None else use_graphs
        self.tokens = torch.zeros(self.max_rows, dtype=torch.long, device=pool.ssm.device)
        self.views = {r: InferenceState(pool.conv[:, :r], pool.ssm[:, :r]) for r in self.buckets}
        self.graphs: dict[int, CUDAGraphStep] = {}
        if self.use_graphs:
            # largest first, all sharing one memory pool: the smaller graphs reuse its blocks
            mempool = torch.cuda.graph_pool_handle()
            for r in reversed(self.buckets):
                self.graphs[r] = CUDAGraphStep(self.step, self.views[r], self.tokens[:r], restore=False,
                                               pool=mempool)

    def bucket(self, n: int) -> int:
        for r in self.buckets:
            if r >= n:
                return r
        raise ValueError(f"BucketedDecoder: {n} sequences exceed the pool's {self.max_rows} rows")

    @torch.no_grad()
    def __call__(self, tokens: Tensor) -> Tensor:
        n = tokens.shape[0]
        if n == 0:
            raise ValueError("BucketedDecoder: no tokens")
        r = self.bucket(n)
        if self.use_graphs:
            graph = self.graphs[r]
            graph.tokens[:n].copy_(tokens)
            graph.tokens[n:].zero_()
            graph.graph.replay()
            return graph.logits[:n]
        self.tokens[:n].copy_(tokens)
        self.tokens[n:r].zero_()
        return self.step(self.tokens[:r], self.views[r])[:n]
