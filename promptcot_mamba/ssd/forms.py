"""The state space dual (SSD) layer of Mamba-2 in its three equal forms (paper §2.1).

Symbols follow the paper and mamba_ssm: T tokens, H heads of P channels, G groups of B/C with N
state dimensions each (H % G == 0, R = H // G heads share one group), chunk length Q.

    x  (b, T, H, P)   inputs u_t
    dt (b, T, H)      discretisation steps, already softplus'ed and clamped (Δ > 0)
    A  (H,)           negative decay rates; the per-step decay is a_t = exp(Δ_t · A)
    B  (b, T, G, N)   input kernels b_t      C (b, T, G, N) output kernels c_t
    D  (H,) | (H, P)  optional skip y += D · x
    h0 (b, H, P, N)   optional initial state; returned states are always fp32
    doc (b, T) int64  optional document ids for packed rows, contiguous runs (see `normalise_doc_ids`)

Recurrence (Eq. 1):  H_t = a_t · H_{t-1} + Δ_t · u_t ⊗ b_t,   y_t = H_t c_t.
Dual (Eq. 2):        y = M·(Δ ∘ u) with M[t, s] = (c_t · b_s) · Π_{k=s+1..t} a_k for s ≤ t.
Chunked scan:        Eq. 2 inside chunks of Q tokens, Eq. 1 between chunks: linear in T.

Groups are never expanded to heads: tensors are viewed as (…, G, R, …) and B/C broadcast over R.
Everything accumulates in fp32 whatever the input dtype; outputs are cast back to x's dtype.
A new document resets the state to zero, also in the middle of a chunk; the initial state belongs
to the row's first document (as in mamba_ssm's `seq_idx` semantics).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _grouped(x: Tensor, dt: Tensor, A: Tensor, G: int):
    b, T, H, P = x.shape
    R = H // G
    return x.float().view(b, T, G, R, P), dt.float().view(b, T, G, R), A.float().view(G, R)


def _skip(y: Tensor, x: Tensor, D: Tensor | None, *, inplace: bool = False) -> Tensor:
    """y + D·x (D per head (H,) or per channel (H, P)); `inplace` adds into y (a fresh fp32 tensor)."""
    if D is None:
        return y
    Df = D.float()
    Dv = Df[:, None] if Df.dim() == 1 else Df
    return y.addcmul_(x.float(), Dv) if inplace else y + x.float() * Dv


def _doc_boundaries(doc: Tensor) -> Tensor:
    """(b, T) bool: True where a new document starts (never at t = 0)."""
    start = torch.zeros_like(doc, dtype=torch.bool)
    start[:, 1:] = doc[:, 1:] != doc[:, :-1]
    return start


def normalise_doc_ids(doc: Tensor) -> Tensor:
    """Renumber document ids as 0, 1, 2, … per row, one id per contiguous run.

    Callers may pass any ids (e.g. the same id reused by two packed documents); the forms below
    compare ids for equality, which is only right when every run has its own id.
    """
    return _doc_boundaries(doc).long().cumsum(dim=1)


def ssd_recurrent(x, dt, A, B, C, D=None, initial_state=None, doc=None):
    """Eq. 1, one token at a time. The reference: slow, obviously right."""
    b, T, H, P = x.shape
    G, N = B.shape[-2:]
    xg, dtg, Ag = _grouped(x, dt, A, G)
    Bf, Cf = B.float(), C.float()
    R = H // G
    h = (x.new_zeros(b, G, R, P, N, dtype=torch.float32) if initial_state is None
         else initial_state.float().reshape(b, G, R, P, N))
    starts = _doc_boundaries(doc) if doc is not None else None
    ys = []
    for t in range(T):
        if starts is not None:
            h = h * (~starts[:, t]).float().view(b, 1, 1, 1, 1)
        a_t = torch.exp(dtg[:, t] * Ag)  # (b, G, R)
        Z_t = (dtg[:, t, :, :, None] * xg[:, t])[..., None] * Bf[:, t, :, None, None, :]  # (b,G,R,P,N)
        h = a_t[..., None, None] * h + Z_t
        ys.append(torch.einsum("bgrpn,bgn->bgrp", h, Cf[:, t]))
    y = torch.stack(ys, dim=1).reshape(b, T, H, P) if T else x.float().new_zeros(b, 0, H, P)
    return _skip(y, x, D).to(x.dtype), h.reshape(b, H, P, N)


def _segsum(a: Tensor) -> Tensor:
    """a (…, T) → (…, T, T) with out[i, j] = Σ_{k=j+1..i} a_k for j ≤ i, −inf above the diagonal.

    Computed by masking then summing (not as a difference of two cumsums) so long sequences do not
    lose precision to cancellation (mamba_ssm `ssd_minimal.segsum`)."""
    T = a.shape[-1]
    rep = a[..., None].expand(*a.shape, T)  # rep[..., i, j] = a_i
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)
    out = torch.cumsum(rep.masked_fill(~strict, 0.0), dim=-2)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device))
    return out.masked_fill(~causal, float("-inf"))


def ssd_quadratic(x, dt, A, B, C, D=None, initial_state=None, doc=None):
    """Eq. 2: the whole T×T decay matrix M at once (the "dual", attention-like form)."""
    b, T, H, P = x.shape
    G, N = B.shape[-2:]
    R = H // G
    xg, dtg, Ag = _grouped(x, dt, A, G)
    Bf, Cf = B.float(), C.float()
    a = dtg * Ag  # (b, T, G, R) log-decays
    seg = _segsum(a.permute(0, 2, 3, 1))  # (b, G, R, T, T)
    if doc is not None:
        same = doc[:, :, None] == doc[:, None, :]  # (b, T, T)
        seg = seg.masked_fill(~same[:, None, None], float("-inf"))
    L = torch.exp(seg)
    CB = torch.einsum("btgn,bsgn->bgts", Cf, Bf)  # (b, G, T, T)
    M = CB[:, :, None] * L  # (b, G, R, T, T)
    y = torch.einsum("bgrts,bsgrp->btgrp", M, xg * dtg[..., None])
    # the state carried in, decayed to every position of the first document
    to_end = seg[..., -1, :].exp() if T else None  # (b, G, R, T): Π_{k=s+1..T-1} a_k (0 off the last doc)
    if initial_state is not None:
        h0 = initial_state.float().reshape(b, G, R, P, N)
        decay0 = torch.exp(torch.cumsum(a, dim=1))  # (b, T, G, R) = Π_{k=0..t} a_k
        if doc is not None:
            decay0 = decay0 * (doc == doc[:, :1]).float()[..., None, None]
        y = y + torch.einsum("btgn,bgrpn->btgrp", Cf, h0) * decay0[..., None]
    if T:
        hT = torch.einsum("bgrs,bsgrp,bsgn->bgrpn", to_end, xg * dtg[..., None], Bf)
        if initial_state is not None:
            hT = hT + h0 * decay0[:, -1, :, :, None, None]
    else:
        hT = h0 if initial_state is not None else x.float().new_zeros(b, G, R, P, N)
    y = y.reshape(b, T, H, P)
    return _skip(y, x, D).to(x.dtype), hT.reshape(b, H, P, N)


class _IntraChunk(torch.autograd.Function):
    """The diagonal blocks of Eq. 2 with a hand-written backward, for training.

    acs (b, nc, G, R, Q) within-chunk cumulative log-decays; CB (b, nc, G, Q, Q) = c_l · b_s, already
    zero off the causal same-document pattern; xdt (b, nc, G, R, Q, P) = Δ·x. Forward:
        L = exp(clamp(acs_l − acs_s, −80, 0)),  M = L ∘ CB (broadcast over R),  y = M · xdt.
    Backward, with gM = gy · xdtᵀ and t = gM ∘ L:
        g_xdt = Mᵀ · gy,   g_CB = Σ_R t,   g_seg = t ∘ CB,   g_acs_l = Σ_s g_seg,  g_acs_s = −Σ_l g_seg.
    Only L is kept (autograd of the same expression kept the clamp's input, L and M, and spent three
    more passes over these (Q × Q × H)-sized tensors). g_seg takes no clamp mask: where seg > 0 (the
    masked triangle) CB is 0, and below −80 the true gradient is as negligible as the one used.
    tests/model/test_ssd_forms.py compares these gradients with the quadratic form's autograd.
    """

    @staticmethod
    def forward(ctx, acs: Tensor, CB: Tensor, xdt: Tensor) -> Tensor:
        L = (acs[..., :, None] - acs[..., None, :]).clamp_(-80.0, 0.0).exp_()  # (b, nc, G, R, Q, Q)
        ctx.save_for_backward(L, CB, xdt)
        return torch.matmul(L * CB[:, :, :, None], xdt)

    @staticmethod
    def backward(ctx, gy: Tensor):
        L, CB, xdt = ctx.saved_tensors
        gy = gy.to(L.dtype)  # under autocast the forward's matmul ran (and its gradient arrives) in bf16
        CBr = CB[:, :, :, None]
        g_xdt = torch.matmul((L * CBr).transpose(-1, -2), gy) if ctx.needs_input_grad[2] else None
        t = torch.matmul(gy, xdt.transpose(-1, -2)).mul_(L)  # gM ∘ L
        g_CB = t.sum(3) if ctx.needs_input_grad[1] else None
        g_seg = t.mul_(CBr)
        g_acs = g_seg.sum(-1) - g_seg.sum(-2) if ctx.needs_input_grad[0] else None
        return g_acs, g_CB, g_xdt




def ssd_chunked(x, dt, A, B, C, D=None, initial_state=None, doc=None, chunk_size: int = 256):
    """The chunked scan: Eq. 2 within chunks of Q tokens, Eq. 1 across chunk boundaries.

    Any T: the tail is padded with Δ = 0 (decay 1, no input), which leaves the state unchanged.
    Cost O(T·Q·H·P + T·H·P·N); the Python loop runs over T/Q chunks only.
    """
    b, T, H, P = x.shape
    # Training without documents or a carried state: one autograd Function with a written-out
    # backward (ssd/chunked_grad.py). Forward + backward, 1 thread, 2026-12-01: at the demo's shape
    # (b 32, H 8, P 32, N 64) 33 ms at T 128 and 63 at T 256, and at the 130M shape (b 2, T 2048,
    # N 128, P 64) 247 ms against 424 for this function's own autograd. Under autocast the general
    # path keeps the fp32 handling below.
    if (T and doc is None and initial_state is None and (D is None or D.dim() == 1)
            and torch.is_grad_enabled() and any(t.requires_grad for t in (x, dt, A, B, C) if t is not None)
            and not torch.is_autocast_enabled(x.device.type)):
        from promptcot_mamba.ssd.chunked_grad import ssd_chunked_autograd

        return ssd_chunked_autograd(x, dt, A, B, C, D, chunk_size)
    G, N = B.shape[-2:]
    R = H // G
    Q = max(1, min(chunk_size, T)) if T else 1
    nc = -(-T // Q)
    pad = nc * Q - T
    xg, dtg, Ag = _grouped(x, dt, A, G)
    Bf, Cf = B.float(), C.float()
    if pad:
        xg = F.pad(xg, (0, 0, 0, 0, 0, 0, 0, pad))
        dtg = F.pad(dtg, (0, 0, 0, 0, 0, pad))
        Bf = F.pad(Bf, (0, 0, 0, 0, 0, pad))
        Cf = F.pad(Cf, (0, 0, 0, 0, 0, pad))
        if doc is not None:
            doc = torch.cat([doc, doc[:, -1:].expand(b, pad)], dim=1)
    xc = xg.view(b, nc, Q, G, R, P)
    dtc = dtg.view(b, nc, Q, G, R)
    Bc, Cc = Bf.view(b, nc, Q, G, N), Cf.view(b, nc, Q, G, N)
    dc = doc.view(b, nc, Q) if doc is not None else None

    acs = torch.cumsum(dtc * Ag, dim=2)  # (b, nc, Q, G, R) within-chunk cumulative log-decay
    xdt = xc * dtc[..., None]  # (b, nc, Q, G, R, P)
    # Without autograd the Q×Q intermediates are updated in place (prefill and generation).
    inplace = not (torch.is_grad_enabled()
                   and any(t is not None and t.requires_grad for t in (x, dt, A, B, C, D, initial_state)))

    # 1. intra-chunk outputs (the diagonal blocks of M). Within a chunk the cumsum difference is
    #    short enough that cancellation is harmless (the same choice as mamba_ssm's Triton kernels).
    #    Laid out (b, nc, G, R, Q_l, Q_s) from the start, so the product with Δ·x is a plain batched
    #    matmul: the (b, nc, Q, Q, G, R) layout cost einsum a copy of the largest tensor here, and
    #    the mask/exp/product a fresh tensor each (the CPU profile of the 130M prefill, bench_model.py).
    #    No −inf mask before the exp: the masked entries (future positions, other documents) are
    #    zeroed in CB, which is R times smaller, and seg is clamped to [−80, 0]. ATen's CPU exp takes
    #    a slow path for −inf and for results that underflow (measured on 3M values: 1.9 ms in
    #    [−5, 0], 8 ms for −inf, 58 ms for denormal results); exp(−80) ≈ 2e-35 stands in for the
    #    smaller true decays, an absolute difference far below fp32 resolution of any output.
    acs_h = acs.permute(0, 1, 3, 4, 2).contiguous()  # (b, nc, G, R, Q)
    keep = torch.tril(torch.ones(Q, Q, dtype=torch.bool, device=x.device))
    if dc is not None:
        keep = (keep & (dc[:, :, :, None] == dc[:, :, None, :]))[:, :, None]  # (b, nc, 1, Q, Q)
    CB = torch.matmul(Cc.permute(0, 1, 3, 2, 4), Bc.permute(0, 1, 3, 4, 2))  # (b, nc, G, Q_l, Q_s)
    CB = CB.masked_fill_(~keep, 0.0)
    xdt_h = xdt.permute(0, 1, 3, 4, 2, 5).contiguous()  # (b, nc, G, R, Q, P)
    if inplace:
        seg = acs_h[..., :, None] - acs_h[..., None, :]  # (b, nc, G, R, Q_l, Q_s)
        y_intra = torch.matmul(seg.clamp_(-80.0, 0.0).exp_().mul_(CB[:, :, :, None]), xdt_h)
    else:
        y_intra = _IntraChunk.apply(acs_h, CB, xdt_h)  # (b, nc, G, R, Q, P)

    # 2. each chunk's own contribution to the state at its end (only its last document counts)
    decay_to_end = torch.exp(acs[:, :, -1:] - acs)  # (b, nc, Q, G, R)
    if dc is not None:
        decay_to_end = decay_to_end * (dc == dc[:, :, -1:]).float()[..., None, None]
    states = torch.einsum("bcsgn,bcsgr,bcsgrp->bcgrpn", Bc, decay_to_end, xdt)

    # 3. Eq. 1 across chunks: the state entering every chunk, and the final state
    h = (x.new_zeros(b, G, R, P, N, dtype=torch.float32) if initial_state is None
         else initial_state.float().reshape(b, G, R, P, N))
    chunk_decay = torch.exp(acs[:, :, -1])  # (b, nc, G, R)
    d_in = dc[:, 0, 0] if dc is not None else None  # the document the carried state belongs to
    entering, entering_doc = [], []
    for k in range(nc):
        entering.append(h)
        decay = chunk_decay[:, k]
        if dc is not None:
            entering_doc.append(d_in)
            decay = decay * (dc[:, k, -1] == d_in).float().view(b, 1, 1)
            d_in = dc[:, k, -1]
        h = h * decay[..., None, None] + states[:, k]
    S_in = torch.stack(entering, dim=1)  # (b, nc, G, R, P, N)

    # 4. the carried state's contribution to every position of the chunk's first document,
    #    C_l · S_in as one matmul over (b, nc, G) with the R heads' P channels side by side
    carry = torch.exp(acs)  # (b, nc, Q, G, R)
    if dc is not None:
        carry = carry * (dc == torch.stack(entering_doc, dim=1)[..., None]).float()[..., None, None]
    y_inter = torch.matmul(Cc.permute(0, 1, 3, 2, 4), S_in.reshape(b, nc, G, R * P, N).transpose(-1, -2))
    y_inter = y_inter.view(b, nc, G, Q, R, P)
    y_inter = y_inter.mul_(carry.permute(0, 1, 3, 2, 4)[..., None]) if inplace else \
        y_inter * carry.permute(0, 1, 3, 2, 4)[..., None]
    # both terms meet in the output layout (b, nc, Q, G, R, P); y_inter first, as the sum takes its
    # memory order from it, which is already that layout when G = 1
    y = y_inter.permute(0, 1, 3, 2, 4, 5) + y_intra.permute(0, 1, 4, 2, 3, 5)

    y = y.reshape(b, nc * Q, H, P)[:, :T]
    return _skip(y, x, D, inplace=inplace).to(x.dtype), h.reshape(b, H, P, N)


def ssd_step(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
             D: Tensor | None = None) -> Tensor:
    """One decode step of Eq. 1 for a batch, updating `state` (b, H, P, N, fp32) in place.

    x (b, H, P), dt (b, H), B and C (b, G, N). Returns y (b, H, P) in x's dtype.
    The outer-product update and the readout are batched matmuls over (b·G) with the R heads of a
    group stacked on the rows, so B and C are never expanded; an einsum here lowered to a bmm that was
    ~3× slower at batch 64 on the 130M layer (measured on the 2-core CPU).
    """
    b, H, P = x.shape
    G, N = B.shape[-2:]
    R = H // G
    dtf = dt.float()
    a = torch.exp(dtf * A.float())  # (b, H)
    state.mul_(a[:, :, None, None])
    h3 = state.view(b * G, R * P, N)
    u = (dtf[..., None] * x.float()).view(b * G, R * P, 1)  # Δ·x
    h3.baddbmm_(u, B.float().reshape(b * G, 1, N))  # H += (Δ·x) ⊗ b
    y = torch.bmm(h3, C.float().reshape(b * G, N, 1)).view(b, H, P)  # y = H c (fp32, fresh)
    return _skip(y, x, D, inplace=True).to(x.dtype)
