"""The fused decode step: the twin of `Mamba2LM.step` as Triton kernels around the two GEMMs per layer.

`Mamba2LM.step` runs it when the model's kernels say `step="fused"` (model/kernels.py). Per layer:

    in_proj (GEMM) → `conv_step`   roll the conv window, insert the new raw xBC, depthwise conv + bias + SiLU
                                   (twin: the first lines of `Mamba2Mixer.step`)
                   → `ssd_step_triton` (ssd/triton_step.py) the state update, softplus and A = −exp(A_log) fused in
                   → `gated_norm`  rmsnorm_per_group(y · silu(z)) · w (twin: `model.norm.GatedRMSNorm`)
                   → out_proj (GEMM) → `add_rms_norm` the residual add and the next pre-norm in one kernel

Six launches a layer, each reading and writing its operands once; none syncs with the host, so the
step can be captured in a CUDA graph (generate/decode_graphs.py). A step at batch 1 is ~6 small
launches per layer (~400 at Codestral's 64 layers), so launch overhead, not the weight read, sets
its eager speed; that is why the graphs exist.

This module imports triton at import time: `Mamba2LM.step` reaches it lazily (tests set
TRITON_INTERPRET=1 first to run it on CPU tensors).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from promptcot_mamba.ssd.triton_step import ssd_step_triton


def _pow2(n: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(n))


@triton.jit
def _conv_step_kernel(win_ptr, x_ptr, w_ptr, bias_ptr, out_ptr, Cdim, K,
                      swb, swc, swk, sxb, sxc, swc_w, swk_w, sob, soc,
                      BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Program per (sequence b, block of channels): window ← [window[1:], x]; out = silu(Σ w·window + b)."""
    b = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_k = tl.arange(0, BLOCK_K)
    in_c = offs_c < Cdim
    shifted = tl.load(win_ptr + b * swb + offs_c[:, None] * swc + (offs_k[None, :] + 1) * swk,
                      mask=in_c[:, None] & (offs_k[None, :] + 1 < K), other=0.0)
    xn = tl.load(x_ptr + b * sxb + offs_c * sxc, mask=in_c, other=0.0)
    win = tl.where(offs_k[None, :] == K - 1, xn[:, None].to(shifted.dtype), shifted)
    tl.store(win_ptr + b * swb + offs_c[:, None] * swc + offs_k[None, :] * swk, win,
             mask=in_c[:, None] & (offs_k[None, :] < K))
    w = tl.load(w_ptr + offs_c[:, None] * swc_w + offs_k[None, :] * swk_w,
                mask=in_c[:, None] & (offs_k[None, :] < K), other=0.0).to(tl.float32)
    acc = tl.sum(win.to(tl.float32) * w, axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c, mask=in_c, other=0.0).to(tl.float32)
    acc = acc / (1.0 + tl.exp(-acc))  # SiLU
    tl.store(out_ptr + b * sob + offs_c * soc, acc.to(out_ptr.dtype.element_ty), mask=in_c)


@triton.jit
def _gated_norm_kernel(y_ptr, z_ptr, w_ptr, out_ptr, S, eps, syb, szb, sob,
                       BLOCK: tl.constexpr):
    """Program per (sequence b, group g of S channels): rmsnorm(y · silu(z)) · w over the group."""
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * S + tl.arange(0, BLOCK)
    m = tl.arange(0, BLOCK) < S
    y = tl.load(y_ptr + b * syb + offs, mask=m, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + b * szb + offs, mask=m, other=0.0).to(tl.float32)
    v = y * z / (1.0 + tl.exp(-z))
    inv = 1.0 / tl.sqrt(tl.sum(v * v, axis=0) / S + eps)
    w = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + b * sob + offs, (v * inv * w).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _add_rms_norm_kernel(res_ptr, add_ptr, w_ptr, out_ptr, d, eps, srb, sab, sob,
                         BLOCK: tl.constexpr, HAS_ADD: tl.constexpr):
    """Program per sequence: residual += add (in place, fp32 math); out = rmsnorm(residual) · w."""
    b = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    m = offs < d
    r = tl.load(res_ptr + b * srb + offs, mask=m, other=0.0).to(tl.float32)
    if HAS_ADD:
        r += tl.load(add_ptr + b * sab + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(res_ptr + b * srb + offs, r.to(res_ptr.dtype.element_ty), mask=m)
    inv = 1.0 / tl.sqrt(tl.sum(r * r, axis=0) / d + eps)
    w = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + b * sob + offs, (r * inv * w).to(out_ptr.dtype.element_ty), mask=m)


def conv_step(conv_state: Tensor, xBC: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """conv_state (b, C, K) updated in place; xBC (b, C) the new raw inputs; weight (C, 1, K) or (C, K).
    Returns silu(conv) (b, C) in xBC's dtype."""
    b, Cdim, K = conv_state.shape
    w = weight.reshape(Cdim, K)
    out = torch.empty(b, Cdim, device=xBC.device, dtype=xBC.dtype)
    BLOCK_C = min(256, _pow2(Cdim))
    _conv_step_kernel[(b, triton.cdiv(Cdim, BLOCK_C))](
        conv_state, xBC, w, bias if bias is not None else w, out, Cdim, K,
        *conv_state.stride(), *xBC.stride(), *w.stride(), *out.stride(),
        BLOCK_C=BLOCK_C, BLOCK_K=_pow2(K, 2), HAS_BIAS=bias is not None)
    return out


def gated_norm(y: Tensor, z: Tensor, weight: Tensor, n_groups: int, eps: float) -> Tensor:
    """rmsnorm_per_group(y · silu(z)) · weight for y, z (b, d); returns y's dtype."""
    b, d = y.shape
    S = d // n_groups
    out = torch.empty_like(y)
    _gated_norm_kernel[(b, n_groups)](y, z, weight, out, S, float(eps), y.stride(0), z.stride(0), out.stride(0),
                                      BLOCK=_pow2(S))
    return out


def mixer_step_fused(mixer, h: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
    """Drop-in twin of `Mamba2Mixer.step` (h (b, d) → (b, d); both states updated in place) with the
    conv, the SSM update and the gated norm each one kernel; the two projections stay cuBLAS GEMMs."""
    c = mixer.config
    b = h.shape[0]
    z, xBC, dt = mixer.split(mixer.in_proj(h))
    xBC = conv_step(conv_state, xBC, mixer.conv1d.weight, mixer.conv1d.bias)
    x, B, C = torch.split(xBC, [c.d_inner, c.n_groups * c.state_size, c.n_groups * c.state_size], dim=-1)
    y = ssd_step_triton(ssm_state, x.reshape(b, c.num_heads, c.head_dim), dt, None,
                        B.reshape(b, c.n_groups, c.state_size), C.reshape(b, c.n_groups, c.state_size),
                        mixer.D, dt_bias=mixer.dt_bias, dt_limit=c.time_step_limit, A_log=mixer.A_log)
    y = gated_norm(y.reshape(b, c.d_inner), z, mixer.norm.weight, c.n_groups, mixer.norm.eps)
    return mixer.out_proj(y)


def add_rms_norm(residual: Tensor, add: Tensor | None, weight: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
    """residual (b, d) += add, in place (skipped when add is None); returns rmsnorm(residual)·weight
    in out_dtype. The pre-norm of the next block (or the final norm) fused with the residual add."""
    b, d = residual.shape
    out = torch.empty(b, d, device=residual.device, dtype=out_dtype)
    _add_rms_norm_kernel[(b,)](residual, add if add is not None else residual, weight, out, d, float(eps),
                               residual.stride(0), add.stride(0) if add is not None else 0, out.stride(0),
                               BLOCK=_pow2(d), HAS_ADD=add is not None)
    return out


@torch.no_grad()
def model_step_fused(model, tokens: Tensor, state) -> Tensor:
    """Twin of `Mamba2LM.step` (tokens (b,) → logits (b, vocab) fp32, `state` updated in place): per
    layer in_proj GEMM, conv kernel, SSM kernel, gated-norm kernel, out_proj GEMM, and one kernel for the
    residual add + the next pre-norm — six launches. No host syncs: capturable in a CUDA graph.
    (The reference rounds the residual to the norm's dtype before normalising; this keeps it fp32.)"""
    if getattr(model, "quantization", None):
        from promptcot_mamba.model.quantize import QuantizationError

        raise QuantizationError(f"the fused Triton step (kernels step=fused) reads full-precision weights and this "
                                f"model is quantized ({model.quantization}); use kernels step=eager")
    layers = model.backbone.layers
    h = model.backbone.embeddings(tokens)
    residual = h.float() if layers[0].residual_in_fp32 else h.clone()
    norms = [blk.norm for blk in layers] + [model.backbone.norm_f]
    x = add_rms_norm(residual, None, norms[0].weight, norms[0].eps, norms[0].weight.dtype)
    for i, block in enumerate(layers):
        out = mixer_step_fused(block.mixer, x, state.conv[i], state.ssm[i])
        nxt = norms[i + 1]
        x = add_rms_norm(residual, out, nxt.weight, nxt.eps, nxt.weight.dtype)
    return model.lm_head(x.to(model.lm_head.weight.dtype)).float()
