"""The optional SSD backends, `triton` (our kernels, triton_scan.py) and `fla` (flash-linear-attention),
listed in `dispatch.py`'s table without importing either package: the library stays importable
without the `gpu` extra, and the heavy import happens on first use.

Who runs where:
- "auto" picks `triton` only for CUDA tensors with triton installed and the interpreter off — never the
  Triton interpreter on CPU, which is orders of magnitude slower than the torch backend.
- Named explicitly, `triton` also accepts CPU tensors when TRITON_INTERPRET=1 (how CI tests the kernels).
- `fla` maps SSD onto `chunk_simple_gla` (a gated linear attention with a scalar decay per head and
  token): q = C, k = B, v = Δ·x, g = Δ·A, scale = 1, its state (b, H, N, P) transposed to ours. fla
  cannot broadcast groups, so B and C are expanded to heads (R× their size), and it has no `seq_idx`;
  it ranks below `triton` under "auto" (fla 0.6's backward also refuses Triton < 3.7.1 on Hopper,
  measured on an H200 with Triton 3.6).
"""

from __future__ import annotations

from torch import Tensor

from promptcot_mamba.ssd.backend import Backend, importable, interpreting


def _triton_auto(x: Tensor) -> bool:
    return x.is_cuda and not interpreting() and importable("triton")


def _triton_forced(x: Tensor) -> bool:
    if not importable("triton"):
        raise RuntimeError("SSD backend 'triton' needs the triton package: pip install 'promptcot-mamba[gpu]'")
    if not (x.is_cuda or interpreting()):
        raise RuntimeError(f"SSD backend 'triton' needs CUDA tensors (got {x.device}); on a CPU it runs only "
                           "through the Triton interpreter (set TRITON_INTERPRET=1 before importing torch "
                           "code that uses it; slow, for tests)")
    return True


def _triton_fn(x, dt, A, B, C, D=None, initial_state=None, doc=None):
    from promptcot_mamba.ssd.triton_scan import ssd_triton

    return ssd_triton(x, dt, A, B, C, D, initial_state, doc)


def _fla_auto(x: Tensor) -> bool:
    return x.is_cuda and not interpreting() and importable("fla") and importable("triton")


def _fla_forced(x: Tensor) -> bool:
    if not (importable("fla") and importable("triton")):
        raise RuntimeError("SSD backend 'fla' needs flash-linear-attention: pip install fla-core triton")
    if not x.is_cuda:
        raise RuntimeError(f"SSD backend 'fla' needs CUDA tensors (got {x.device})")
    return True


def ssd_fla(x, dt, A, B, C, D=None, initial_state=None, doc=None):
    """SSD through fla's `chunk_simple_gla`; same arguments and results as `forms.ssd_chunked`."""
    from fla.ops.simple_gla import chunk_simple_gla

    if doc is not None:
        raise NotImplementedError("SSD backend 'fla' does not support seq_idx (packed documents); "
                                  "use backend='triton' or 'torch'")
    b, T, H, P = x.shape
    G = B.shape[2]
    R = H // G
    q = C.repeat_interleave(R, dim=2)  # (b, T, H, N): fla needs one q/k per head
    k = B.repeat_interleave(R, dim=2)
    v = x * dt[..., None].to(x.dtype)  # Δ·x
    g = dt.float() * A.float()  # (b, T, H) log-decay
    # fla's state is (b, H, K=N, V=P); ours is (b, H, P, N)
    h0 = initial_state.float().transpose(-1, -2).contiguous() if initial_state is not None else None
    o, final = chunk_simple_gla(q, k, v, g=g, scale=1.0, initial_state=h0, output_final_state=True)
    y = o.float()
    if D is not None:
        Df = D.float()
        y = y + x.float() * (Df[:, None] if Df.dim() == 1 else Df)
    return y.to(x.dtype), final.float().transpose(-1, -2).contiguous()


TRITON = Backend("triton", _triton_fn, _triton_auto, priority=10, forced_available=_triton_forced)
FLA = Backend("fla", ssd_fla, _fla_auto, priority=5, forced_available=_fla_forced)
