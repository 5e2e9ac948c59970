"""The one entry point to the SSD layer: validates shapes, then runs the chosen backend.

`BACKENDS` is the table of every implementation, written out here: the three forms of forms.py and
the optional GPU kernels of optional_backends.py. `auto` picks the fastest one available for the
input's device and logs its choice once. A faster kernel is added by adding its row to the table;
nothing above this file changes (the model passes the name through its `Kernels` setting).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from promptcot_mamba.ssd.backend import Backend
from promptcot_mamba.ssd.forms import normalise_doc_ids, ssd_chunked, ssd_quadratic, ssd_recurrent
from promptcot_mamba.ssd.optional_backends import FLA, TRITON

log = logging.getLogger(__name__)


def _anywhere(x: Tensor) -> bool:
    return True


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", ssd_chunked, _anywhere, priority=0, chunked=True),  # the chunked scan (training, prefill)
    Backend("quadratic", ssd_quadratic, _anywhere, priority=-1),  # Eq. 2, O(T²): short sequences, tests
    Backend("recurrent", ssd_recurrent, _anywhere, priority=-2),  # Eq. 1 token by token: the reference
    TRITON,
    FLA,
)}
NAMES = ("auto", *BACKENDS)
_announced: set[tuple[str, str]] = set()


def select_backend(name: str, x: Tensor) -> Backend:
    if name == "auto":
        usable = [b for b in BACKENDS.values() if b.available(x)]
        best = max(usable, key=lambda b: b.priority)
        key = (x.device.type, best.name)
        if key not in _announced:
            _announced.add(key)
            log.info("ssd backend 'auto' chose '%s' on %s", best.name, x.device.type)
        return best
    if name not in BACKENDS:
        raise ValueError(f"unknown SSD backend {name!r}; known: {sorted(BACKENDS)} or 'auto'")
    backend = BACKENDS[name]
    if not (backend.forced_available or backend.available)(x):
        raise RuntimeError(f"SSD backend {name!r} is not available for tensors on {x.device}")
    return backend


def _check(x, dt, A, B, C, D, initial_state, doc) -> None:
    if x.dim() != 4:
        raise ValueError(f"ssd: x must be (batch, T, H, P), got shape {tuple(x.shape)}")
    b, T, H, P = x.shape
    if dt.shape != (b, T, H):
        raise ValueError(f"ssd: dt must be (batch, T, H) = {(b, T, H)}, got {tuple(dt.shape)}")
    if A.shape != (H,):
        raise ValueError(f"ssd: A must be (H,) = ({H},), got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (b, T) or B.shape != C.shape:
        raise ValueError(f"ssd: B and C must both be (batch, T, G, N) with batch, T = {b}, {T}; "
                         f"got B {tuple(B.shape)}, C {tuple(C.shape)}")
    G = B.shape[2]
    if G == 0 or H % G:
        raise ValueError(f"ssd: heads H={H} must be a multiple of groups G={G}")
    if D is not None and D.shape not in {(H,), (H, P)}:
        raise ValueError(f"ssd: D must be (H,) or (H, P), got {tuple(D.shape)}")
    N = B.shape[3]
    if initial_state is not None and initial_state.shape != (b, H, P, N):
        raise ValueError(f"ssd: initial_state must be (batch, H, P, N) = {(b, H, P, N)}, "
                         f"got {tuple(initial_state.shape)}")
    if doc is not None and doc.shape != (b, T):
        raise ValueError(f"ssd: seq_idx must be (batch, T) = {(b, T)}, got {tuple(doc.shape)}")


def ssd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None, *,
        initial_state: Tensor | None = None, seq_idx: Tensor | None = None, chunk_size: int = 256,
        backend: str = "auto") -> tuple[Tensor, Tensor]:
    """SSD over a sequence; returns (y like x, final_state (batch, H, P, N) fp32).

    Accepts unbatched inputs too (x (T, H, P), dt (T, H), B/C (T, G, N), seq_idx (T,)).
    `seq_idx` marks the document of each token in packed rows: the state resets where it changes.
    """
    unbatched = x.dim() == 3
    if unbatched:
        x, dt, B, C = x[None], dt[None], B[None], C[None]
        initial_state = initial_state[None] if initial_state is not None else None
        seq_idx = seq_idx[None] if seq_idx is not None else None
    _check(x, dt, A, B, C, D, initial_state, seq_idx)
    if chunk_size < 1:
        raise ValueError(f"ssd: chunk_size must be >= 1, got {chunk_size}")
    doc = normalise_doc_ids(seq_idx) if seq_idx is not None else None
    chosen = select_backend(backend, x)
    kwargs = {"chunk_size": chunk_size} if chosen.chunked else {}
    y, state = chosen.fn(x, dt, A, B, C, D, initial_state, doc, **kwargs)
    if unbatched:
        return y[0], state[0]
    return y, state



def available_backends(device: str | torch.device = "cpu") -> list[str]:
    probe = torch.empty(0, device=device)
    return [name for name, b in BACKENDS.items() if b.available(probe)]
