"""Examples → rows → global batches → micro-batches, as a pure function of (seed, step).

A row is one example, or with packing several examples laid end to end with document ids
(`seq_idx`) so the Mamba-2 layers reset their SSM state and conv window at each document start. Because the batch of step s depends only on the seed and s, the data position of a
run is just its step count: resume needs nothing else, and every rank computes the same global
batch and takes its own slice.

Labels are pre-shifted: position t of a row predicts `labels[t]` (the next token when that token
carries loss, else -100). The last token of each document predicts nothing, so packed rows never
train across a document boundary, and a packed row gives exactly the per-document losses of its
unpacked examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from promptcot_mamba.train.examples import Example

IGNORE = -100


@dataclass
class MicroBatch:
    input_ids: Tensor  # (b, T) long
    labels: Tensor  # (b, T) long, -100 where no loss
    seq_idx: Tensor | None  # (b, T) int32 document ids, packed rows only
    n_tokens: int  # real (non-pad) positions
    n_loss: int  # labelled positions
    label_index: Tensor | None = None  # (n_loss,) flat indices b·T of the labelled positions


def example_arrays(ex: Example) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (L-1,), shifted labels (L-1,)) of one example."""
    ids = np.asarray(ex.ids, dtype=np.int64)
    labels = ids[1:].copy()
    labels[: max(ex.n_prompt - 1, 0)] = IGNORE  # targets that are prompt tokens
    return ids[:-1], labels


class BatchStream:
    """Deterministic global batches over repeated epochs.

    Epoch e visits the examples in the order of a permutation seeded by (seed, e); with packing,
    consecutive examples of that order fill rows of `max_length` positions greedily.
    """

    def __init__(self, examples: list[Example], *, max_length: int, global_batch: int, seed: int,
                 packing: bool = False):
        if not examples:
            raise ValueError("BatchStream: no examples to train on (every record was filtered out?)")
        self.examples = examples
        self.max_length = max_length
        self.global_batch = global_batch
        self.seed = seed
        self.packing = packing
        self._epochs: dict[int, list[list[int]]] = {}

    def rows_of_epoch(self, epoch: int) -> list[list[int]]:
        """Each row as the list of example indices it holds."""
        if epoch not in self._epochs:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.examples)).tolist()
            if not self.packing:
                rows = [[i] for i in order]
            else:
                rows, cur, used = [], [], 0
                for i in order:
                    n = len(self.examples[i].ids) - 1
                    if cur and used + n > self.max_length:
                        rows.append(cur)
                        cur, used = [], 0
                    cur.append(i)
                    used += n
                if cur:
                    rows.append(cur)
            self._epochs = {epoch: rows}  # keep one epoch in memory
        return self._epochs[epoch]

    @property
    def rows_per_epoch(self) -> int:
        return len(self.rows_of_epoch(0))

    def global_batch_rows(self, step: int) -> list[list[int]]:
        """The `global_batch` rows of optimizer step `step` (0-based), wrapping into later epochs."""
        out: list[list[int]] = []
        start = step * self.global_batch
        while len(out) < self.global_batch:
            # epochs may differ in row count when packing; walk them in order
            epoch, offset = self._locate(start + len(out))
            rows = self.rows_of_epoch(epoch)
            take = min(self.global_batch - len(out), len(rows) - offset)
            out.extend(rows[offset: offset + take])
        return out

    def _locate(self, index: int) -> tuple[int, int]:
        if not self.packing:
            n = len(self.examples)
            return divmod(index, n)
        # packed epochs have nearly equal row counts; walk from the cached estimate
        epoch, remaining = 0, index
        while True:
            n = len(self.rows_of_epoch(epoch))
            if remaining < n:
                return epoch, remaining
            remaining -= n
            epoch += 1

    def row_length(self, row: list[int]) -> int:
        return sum(len(self.examples[i].ids) - 1 for i in row)

    def micro_batches(self, rows: list[list[int]], rank: int, world: int, micro_batch: int) -> list[list[list[int]]]:
        """This rank's micro-batches of a global batch: rows rank, rank+world, …, grouped by length
        (less padding, the same sum of losses) and chunked by micro_batch. Every rank gets the same
        number of micro-batches when world divides the global batch."""
        mine = sorted(rows[rank::world], key=self.row_length)
        return [mine[i: i + micro_batch] for i in range(0, len(mine), micro_batch)]

    def loss_tokens(self, rows: list[list[int]]) -> int:
        return sum(max(len(self.examples[i].ids) - max(self.examples[i].n_prompt, 1), 0) for r in rows for i in r)

    def collate(self, rows: list[list[int]], *, pad_id: int = 0, pad_to_multiple: int = 1) -> MicroBatch:
        parts = [[example_arrays(self.examples[i]) for i in row] for row in rows]
        lengths = [sum(len(a) for a, _ in p) for p in parts]
        T = max(lengths)
        T = -(-T // pad_to_multiple) * pad_to_multiple
        b = len(rows)
        ids = np.full((b, T), pad_id, dtype=np.int64)
        labels = np.full((b, T), IGNORE, dtype=np.int64)
        doc = np.zeros((b, T), dtype=np.int32) if self.packing else None
        for r, p in enumerate(parts):
            pos = 0
            for d, (a, lab) in enumerate(p):
                ids[r, pos: pos + len(a)] = a
                labels[r, pos: pos + len(a)] = lab
                if doc is not None:
                    doc[r, pos: pos + len(a)] = d
                pos += len(a)
            if doc is not None:
                doc[r, pos:] = len(p)  # padding is its own document
        label_index = np.flatnonzero(labels.reshape(-1) != IGNORE)
        return MicroBatch(torch.from_numpy(ids), torch.from_numpy(labels),
                          torch.from_numpy(doc) if doc is not None else None, sum(lengths), len(label_index),
                          torch.from_numpy(label_index))
