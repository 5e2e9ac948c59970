"""The Mamba-2 mixer's depthwise causal conv over time: a reference and a hand-differentiated twin.

    xBC (b, T, C) raw inputs; weight (C, 1, K); bias (C,) | None; prev (b, C, K) the last K raw
    inputs before this call (zeros when None); doc (b, T) document ids of packed rows.
    out_t = Σ_k w_k · in_{t-K+1+k} + bias, where inputs of another document count as zero — the conv
    half of "packed documents are independent" (the SSD scan resets its state at the same boundaries;
    mamba_ssm's torch fallback and transformers' PyTorch path refuse packed sequences).

`causal_conv_ref` is the obvious shift-and-sum under autograd. Its backward is slow on CPU: every
`ext[:, k:k+T]` slice gets a zero-filled gradient of the whole extended input, and every tap's
product saves its own temporaries (profiling of the 130M train step, benchmarks/bench_model.py).
`causal_conv` computes the same with `_ShiftConv`, whose backward is written out:

    ∂L/∂in_s  = Σ_k w_k · m_k(s-k) · g_{s-k}      (the conv with the flipped kernel)
    ∂L/∂w_k   = Σ_{b,t} g_t · m_k(t) · in_{t+k}    (a per-channel correlation)
    ∂L/∂bias  = Σ_{b,t} g_t

with m_k(t) = [doc of in_{t+k} == doc of out_t] (1 without documents), accumulated in place into one
buffer. tests/model/test_model_conv.py checks values and gradients against the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _window(xBC: Tensor, prev: Tensor | None, doc: Tensor | None, K: int) -> Tensor:
    """The last K raw inputs (b, C, K) for the next call: only the last document's count."""
    b, T, C = xBC.shape
    if T >= K:
        window = xBC[:, T - K:]  # (b, K, C)
    else:
        before = prev.transpose(1, 2).to(xBC.dtype) if prev is not None else xBC.new_zeros(b, K, C)
        window = torch.cat([before[:, T:], xBC], dim=1)  # (b, K, C)
    if doc is not None:
        wdoc = torch.cat([doc[:, :1].expand(b, K), doc], dim=1)[:, -K:]
        window = window * (wdoc == doc[:, -1:]).unsqueeze(-1).to(window.dtype)
    return window.transpose(1, 2).contiguous()


def _head(xBC: Tensor, prev: Tensor | None, K: int) -> Tensor:
    b, _, C = xBC.shape
    if prev is not None:
        return prev[:, :, 1:].transpose(1, 2).to(xBC.dtype)  # (b, K-1, C)
    return xBC.new_zeros(b, K - 1, C)


def _tap_masks(doc: Tensor, K: int, dtype: torch.dtype) -> Tensor:
    """(K-1, b, T, 1): m_k(t) = 1 where input t+k of the extended row is in out_t's document."""
    b, T = doc.shape
    ext_doc = torch.cat([doc[:, :1].expand(b, K - 1), doc], dim=1)  # (b, K-1+T)
    return torch.stack([(ext_doc[:, k:k + T] == doc) for k in range(K - 1)]).unsqueeze(-1).to(dtype)


def causal_conv_ref(xBC: Tensor, weight: Tensor, bias: Tensor | None, prev: Tensor | None,
                    doc: Tensor | None) -> tuple[Tensor, Tensor]:
    """The reference. Returns (pre-activation output (b, T, C), new window (b, C, K))."""
    b, T, C = xBC.shape
    K = weight.shape[-1]
    ext = torch.cat([_head(xBC, prev, K), xBC], dim=1)  # (b, K-1+T, C)
    w = weight[:, 0, :].to(xBC.dtype)  # (C, K)
    out = None
    if doc is not None:
        ext_doc = torch.cat([doc[:, :1].expand(b, K - 1), doc], dim=1)
    for k in range(K):
        term = ext[:, k:k + T] * w[:, k]
        if doc is not None and k < K - 1:
            term = term * (ext_doc[:, k:k + T] == doc).unsqueeze(-1).to(term.dtype)
        out = term if out is None else out + term
    if bias is not None:
        out = out + bias.to(out.dtype)
    window = torch.cat([prev.transpose(1, 2).to(xBC.dtype) if prev is not None else xBC.new_zeros(b, K, C),
                        xBC], dim=1)[:, -K:]  # (b, K, C)
    if doc is not None:  # the window carries only the last document's inputs
        wdoc = torch.cat([doc[:, :1].expand(b, K), doc], dim=1)[:, -K:]
        window = window * (wdoc == doc[:, -1:]).unsqueeze(-1).to(window.dtype)
    return out, window.transpose(1, 2).contiguous()


class _ShiftConv(torch.autograd.Function):
    """out (b, T, C) = Σ_k w_k · m_k · ext[:, k:k+T] (+ bias) for ext (b, K-1+T, C), w (C, K)."""

    @staticmethod
    def forward(ctx, ext: Tensor, w: Tensor, bias: Tensor | None, masks: Tensor | None) -> Tensor:
        K = w.shape[1]
        T = ext.shape[1] - (K - 1)
        # taps as contiguous rows: w[:, k] is a stride-K vector, and broadcasting it over (b, T, C)
        # took 5.7x as long per pass (2.0 vs 0.35 ms for the four taps at b 16, T 128, C 384, 1 thread)
        wt = w.t().contiguous()  # (K, C)
        # the last tap is never masked (an output always shares its own input's document)
        out = ext[:, K - 1:] * wt[K - 1]
        if bias is not None:
            out += bias
        for k in range(K - 1):
            tap = ext[:, k:k + T]
            out.addcmul_(tap * masks[k] if masks is not None else tap, wt[k])
        ctx.save_for_backward(ext, wt, masks)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        ext, wt, masks = ctx.saved_tensors
        K = wt.shape[0]
        T = ext.shape[1] - (K - 1)
        g = g.contiguous()
        need_ext, need_w, need_bias = ctx.needs_input_grad[:3]
        g_ext = gw = gbias = None
        if need_ext:
            g_ext = torch.empty_like(ext)
            g_ext[:, :K - 1].zero_()  # only the K-1 leading positions are left unwritten by the last tap
            torch.mul(g, wt[K - 1], out=g_ext[:, K - 1:])
        if need_w:
            gw = torch.empty_like(wt)  # (K, C), returned as (C, K)
        for k in range(K):
            gk = g * masks[k] if masks is not None and k < K - 1 else g
            if need_ext and k < K - 1:
                g_ext[:, k:k + T].addcmul_(gk, wt[k])
            if need_w:
                gw[k] = _tap_dot(gk, ext[:, k:k + T])
        if need_bias:  # False when bias is None
            gbias = g.sum((0, 1))
        return g_ext, gw.t() if gw is not None else None, gbias, None


def _tap_dot(g: Tensor, tap: Tensor) -> Tensor:
    """Σ_{b,t} g ∘ tap per channel, (b, T, C) → (C,). In fp32 a dot over T then a sum over b: 8x
    faster than a product tensor reduced over (b, T) (0.49 vs 3.9 ms for four taps at b 16, T 128,
    C 384, 1 thread); bf16 products are summed in fp32."""
    if g.dtype == torch.float32:
        return torch.linalg.vecdot(g, tap, dim=1).sum(0)
    return (g * tap).sum((0, 1), dtype=torch.promote_types(g.dtype, torch.float32))


def causal_conv(xBC: Tensor, weight: Tensor, bias: Tensor | None, prev: Tensor | None,
                doc: Tensor | None) -> tuple[Tensor, Tensor]:
    """`causal_conv_ref` with a hand-written backward. Returns (pre-activation output (b, T, C),
    new window (b, C, K)); the window goes through plain autograd (it is K positions long)."""
    K = weight.shape[-1]
    ext = torch.cat([_head(xBC, prev, K), xBC], dim=1)  # (b, K-1+T, C); cat's backward is free views
    w = weight[:, 0, :].to(xBC.dtype)  # (C, K)
    masks = _tap_masks(doc, K, xBC.dtype) if doc is not None else None
    b_ = bias.to(xBC.dtype) if bias is not None else None
    out = _ShiftConv.apply(ext, w, b_, masks)
    return out, _window(xBC, prev, doc, K)
