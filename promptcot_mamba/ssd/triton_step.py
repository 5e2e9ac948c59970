"""The SSD decode step as one Triton kernel: the GPU twin of `forms.ssd_step` (one token per sequence).

    Δ = clamp(softplus(dt + dt_bias)); H ← exp(Δ·A)·H + Δ·x ⊗ b; y = H·c + D·x

Groups are broadcast (head h reads group h // R of B and C), the state is fp32 and updated in place,
and the tile of a (sequence, head, block of P) program is read and written once: decode is
memory-bound (at Codestral's shape and batch 128 a step moves 34 GB of fp32 state). No host sync, so
the step can be captured in a CUDA graph. `model/fused_step.py` chains it with the conv and norm
kernels into the model's fused decode step.

Like triton_scan.py this module imports triton at import time: reach it lazily (tests set
TRITON_INTERPRET=1 first to run it on CPU tensors).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor


def _pow2(n: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(n))


@triton.jit
def _ssd_step_kernel(st_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dtb_ptr, y_ptr,
                     H, P, N, R, dt_lo, dt_hi,
                     ssb, ssh, ssp, ssn, sxb, sxh, sxp, sdb, sdh, sBb, sBg, sBn, sCb, sCg, sCn,
                     syb, syh, syp, sDh, sDp,
                     BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
                     HAS_D: tl.constexpr, DT_SOFTPLUS: tl.constexpr, A_IS_LOG: tl.constexpr):
    """Program per (sequence b, head h, block of P): the state tile (BLOCK_P × N) read and written once."""
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    g = h // R
    offs_p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    in_p = offs_p < P
    in_n = offs_n < N
    dt = tl.load(dt_ptr + b * sdb + h * sdh).to(tl.float32)
    if DT_SOFTPLUS:  # Δ = softplus(dt + dt_bias), torch's threshold of 20, then the model's dt_limit
        dt = dt + tl.load(dtb_ptr + h).to(tl.float32)
        dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(dt)))
        dt = tl.minimum(tl.maximum(dt, dt_lo), dt_hi)
    A = tl.load(A_ptr + h).to(tl.float32)
    if A_IS_LOG:  # the module's parameter A_log: A = −exp(A_log), computed here, not by 3 more launches
        A = -tl.exp(A)
    a = tl.exp(dt * A)
    x = tl.load(x_ptr + b * sxb + h * sxh + offs_p * sxp, mask=in_p, other=0.0).to(tl.float32)
    Bv = tl.load(B_ptr + b * sBb + g * sBg + offs_n * sBn, mask=in_n, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + b * sCb + g * sCg + offs_n * sCn, mask=in_n, other=0.0).to(tl.float32)
    ptrs = st_ptr + b * ssb + h * ssh + offs_p[:, None] * ssp + offs_n[None, :] * ssn
    tile_mask = in_p[:, None] & in_n[None, :]
    state = tl.load(ptrs, mask=tile_mask, other=0.0)
    state = state * a + (dt * x)[:, None] * Bv[None, :]
    tl.store(ptrs, state, mask=tile_mask)
    y = tl.sum(state * Cv[None, :], axis=1)
    if HAS_D:
        y += x * tl.load(D_ptr + h * sDh + offs_p * sDp, mask=in_p, other=0.0).to(tl.float32)
    tl.store(y_ptr + b * syb + h * syh + offs_p * syp, y.to(y_ptr.dtype.element_ty), mask=in_p)


def ssd_step_triton(state: Tensor, x: Tensor, dt: Tensor, A: Tensor | None, B: Tensor, C: Tensor,
                    D: Tensor | None = None, *, dt_bias: Tensor | None = None,
                    dt_limit: tuple[float, float] = (0.0, math.inf), A_log: Tensor | None = None) -> Tensor:
    """`forms.ssd_step` in one kernel. state (b, H, P, N) fp32 updated in place; x (b, H, P);
    dt (b, H) — Δ itself, or the raw projection when `dt_bias` is given (then softplus(dt + dt_bias)
    clamped to `dt_limit` is fused in); B and C (b, G, N); A (H,), or `A_log` (H,) with A = −exp(A_log)
    fused in; D (H,) or (H, P), read in place. Returns y (b, H, P) in x's dtype."""
    if state.dtype != torch.float32:
        raise ValueError(f"ssd_step_triton: the state must be fp32, got {state.dtype}")
    if (A is None) == (A_log is None):
        raise ValueError("ssd_step_triton: pass exactly one of A and A_log")
    b, H, P = x.shape
    G, N = B.shape[-2:]
    if H % G:
        raise ValueError(f"ssd_step_triton: heads H={H} must be a multiple of groups G={G}")
    y = torch.empty(b, H, P, device=x.device, dtype=x.dtype)
    Ap = A if A is not None else A_log
    sDh, sDp = ((D.stride(0), 0) if D.dim() == 1 else D.stride()) if D is not None else (0, 0)
    BLOCK_N = _pow2(N)
    BLOCK_P = min(_pow2(P), max(16, 8192 // BLOCK_N))  # tile of ≤ 8K fp32 values per program
    lo, hi = dt_limit
    _ssd_step_kernel[(b, H, triton.cdiv(P, BLOCK_P))](
        state, x, dt, Ap, B, C, D if D is not None else Ap, dt_bias if dt_bias is not None else Ap, y,
        H, P, N, H // G, float(lo), float(min(hi, 3.0e38)),
        *state.stride(), *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *y.stride(), sDh, sDp,
        BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N, HAS_D=D is not None, DT_SOFTPLUS=dt_bias is not None,
        A_IS_LOG=A is None)
    return y
