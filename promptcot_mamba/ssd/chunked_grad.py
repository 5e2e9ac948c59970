"""The chunked scan for training: the whole of `ssd_chunked` as one autograd Function.

`ssd_chunked` under autograd records ~40 ATen ops per call, and at small widths the cost is their
passes over (b, T, H, P)-sized tensors, not FLOPs: at the demo's shape (b 32, T 224, H 8, P 32, N 16,
Q 32, 1 thread) its forward + backward took 36-41 ms of a 124 ms block, more than the in_proj GEMM.
This Function computes the same maths (forms.py's docstring) in a head-major layout, (b, nc, G, R, Q,
·), with a backward written out, and folds what it can into the matrices:

    W = L ∘ CB ∘ Δ_s (+ D on the diagonal)      L[l,s] = exp(clamp(acs_l − acs_s, −80, 0))
    y = W · x + (E ∘ C) · S_inᵀ                  E[l] = exp(acs_l), S_in the state entering the chunk
    states = xᵀ · (dte ∘ B)                      dte[s] = exp(acs_Q − acs_s) · Δ_s

so Δ·x, the skip D·x and the inter-chunk term are no separate passes (y_inter is added by baddbmm).
The backward, with gW = gy · xᵀ and v = gW ∘ L:

    g_x     = Wᵀ · gy + (dte ∘ B) · g_statesᵀ          g_D = Σ diag(gW)
    g_CB    = Σ_R v ∘ Δ_s                             (masked to the causal triangle)
    g_Δ_s  += Σ_l v ∘ CB                               g_acs_l += Σ_s (v ∘ CB)_ls Δ_s, g_acs_s −= the same by s
    inter:  K = gy · S_in → g_C += Σ_R E ∘ K,  g_acs_l += E_l Σ_n C ∘ K,  g_S_in = (E ∘ C)ᵀ · gy
    states: g_states from the reverse recurrence over chunks; g_(dte∘B) = x · g_states
    g_a     = reverse cumsum of g_acs within the chunk;  a = Δ·A.

The diagonal of seg is acs_l − acs_l, so its gradient cancels and D on W's diagonal needs no mask.
Used for autograd without document ids or an initial state and with D per head (training); every
other case keeps `ssd_chunked`'s general path. tests/ssd/test_ssd_forms.py compares values and
gradients with the quadratic form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _head_major(t: Tensor, b: int, nc: int, Q: int, G: int, R: int) -> Tensor:
    """(b, nc·Q, G·R, ·) → (b, nc, G, R, Q, ·) contiguous."""
    return t.reshape(b, nc, Q, G, R, -1).permute(0, 1, 3, 4, 2, 5).contiguous()


class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, Q: int):
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None
        b, T, H, P = x.shape
        G, N = B.shape[-2:]
        R = H // G
        nc = -(-T // Q)
        pad = nc * Q - T
        xf, dtf, Bf, Cf = x.float(), dt.float(), B.float(), C.float()
        if pad:  # Δ = 0 on the padding: decay 1, no input, so states and outputs are unchanged
            xf = F.pad(xf, (0, 0, 0, 0, 0, pad))
            dtf = F.pad(dtf, (0, 0, 0, pad))
            Bf = F.pad(Bf, (0, 0, 0, 0, 0, pad))
            Cf = F.pad(Cf, (0, 0, 0, 0, 0, pad))
        xh = _head_major(xf, b, nc, Q, G, R)  # (b, nc, G, R, Q, P)
        dth = _head_major(dtf[..., None], b, nc, Q, G, R)[..., 0]  # (b, nc, G, R, Q)
        Bc = Bf.view(b, nc, Q, G, N).transpose(2, 3).contiguous()  # (b, nc, G, Q, N)
        Cc = Cf.view(b, nc, Q, G, N).transpose(2, 3).contiguous()
        acs = torch.cumsum(dth * A.float().view(G, R, 1), dim=-1)  # (b, nc, G, R, Q)

        keep = torch.tril(torch.ones(Q, Q, dtype=torch.bool, device=x.device))
        CB = torch.matmul(Cc, Bc.transpose(-1, -2)).masked_fill_(~keep, 0.0)  # (b, nc, G, Q_l, Q_s)
        L = (acs[..., :, None] - acs[..., None, :]).clamp_(-80.0, 0.0).exp_()  # (b, nc, G, R, Q, Q)
        W = L * CB[:, :, :, None]
        W.mul_(dth[..., None, :])  # W = L ∘ CB ∘ Δ_s
        if D is not None:
            W.diagonal(dim1=-2, dim2=-1).add_(D.float().view(G, R, 1))
        y = torch.matmul(W, xh)  # (b, nc, G, R, Q, P)
        del W

        # each chunk's own contribution to the state at its end, and Eq. 1 across chunks
        last = acs[..., -1:]  # (b, nc, G, R, 1)
        dte = torch.exp(last - acs).mul_(dth)  # (b, nc, G, R, Q)
        dteB = dte[..., None] * Bc[:, :, :, None]  # (b, nc, G, R, Q, N)
        states = torch.matmul(xh.transpose(-1, -2), dteB)  # (b, nc, G, R, P, N)
        decay = torch.exp(last[..., 0])  # (b, nc, G, R)
        S_in = torch.empty_like(states)
        h = states.new_zeros(b, G, R, P, N)
        for k in range(nc):
            S_in[:, k] = h
            h = torch.addcmul(states[:, k], h, decay[:, k, ..., None, None])

        # the carried state read out at every position: y += (E ∘ C) · S_inᵀ
        E = torch.exp(acs)  # (b, nc, G, R, Q)
        CE = Cc[:, :, :, None] * E[..., None]  # (b, nc, G, R, Q, N)
        y.view(-1, Q, P).baddbmm_(CE.view(-1, Q, N), S_in.view(-1, P, N).transpose(1, 2))  # in place: no copy of y
        y = y.permute(0, 1, 4, 2, 3, 5).reshape(b, nc * Q, H, P)
        if pad:
            y = y[:, :T]
        ctx.save_for_backward(xh, dth, A, Bc, Cc, D, L, CB, acs, dte, dteB, S_in, decay, E, CE)
        ctx.shape = (b, T, H, P, G, N, R, nc, Q, pad)
        ctx.dtypes = (x.dtype, dt.dtype, B.dtype, C.dtype)
        return y.to(x.dtype), h.reshape(b, H, P, N)

    @staticmethod
    def backward(ctx, gy: Tensor, g_final: Tensor | None):
        xh, dth, A, Bc, Cc, D, L, CB, acs, dte, dteB, S_in, decay, E, CE = ctx.saved_tensors
        b, T, H, P, G, N, R, nc, Q, pad = ctx.shape
        x_dtype, dt_dtype, B_dtype, C_dtype = ctx.dtypes
        gy = gy.float() if gy is not None else xh.new_zeros(b, T, H, P)
        if pad:
            gy = F.pad(gy, (0, 0, 0, 0, 0, pad))
        gyh = _head_major(gy, b, nc, Q, G, R)  # (b, nc, G, R, Q, P)

        # intra-chunk: y = W · x
        gW = torch.matmul(gyh, xh.transpose(-1, -2))  # (b, nc, G, R, Q_l, Q_s)
        g_D = gW.diagonal(dim1=-2, dim2=-1).sum((0, 1, 4)).reshape(H) if D is not None else None
        v = gW.mul_(L)  # gW ∘ L
        g_CB = (v * dth[..., None, :]).sum(3)  # (b, nc, G, Q, Q)
        vc = v.mul_(CB[:, :, :, None])  # gW ∘ L ∘ CB
        g_dt = vc.sum(-2)  # (b, nc, G, R, Q_s): Σ_l
        g_acs = torch.matmul(vc, dth[..., None])[..., 0] - g_dt * dth  # Σ_s g_seg[l, s] − Σ_l g_seg[l, s]
        del v, vc, gW
        W = L * CB[:, :, :, None]
        W.mul_(dth[..., None, :])
        if D is not None:
            W.diagonal(dim1=-2, dim2=-1).add_(D.float().view(G, R, 1))
        g_x = torch.matmul(W.transpose(-1, -2), gyh)  # (b, nc, G, R, Q, P)
        del W
        g_CB.masked_fill_(~torch.tril(torch.ones(Q, Q, dtype=torch.bool, device=gy.device)), 0.0)
        g_C = torch.matmul(g_CB, Bc)  # (b, nc, G, Q, N)
        g_B = torch.matmul(g_CB.transpose(-1, -2), Cc)

        # inter-chunk readout: y += (E ∘ C) · S_inᵀ
        K = torch.matmul(gyh, S_in)  # (b, nc, G, R, Q, N)
        g_C += (K * E[..., None]).sum(3)
        g_acs += E * (K * Cc[:, :, :, None]).sum(-1)
        g_S_in = torch.matmul(CE.transpose(-1, -2), gyh)  # (b, nc, G, R, N, P)

        # the recurrence across chunks, backwards: S_{k+1} = decay_k · S_k + states_k
        gS = g_final.float().reshape(b, G, R, P, N) if g_final is not None else S_in.new_zeros(b, G, R, P, N)
        g_states = torch.empty_like(S_in)
        g_decay = decay.new_empty(decay.shape)
        for k in range(nc - 1, -1, -1):
            g_states[:, k] = gS
            g_decay[:, k] = (gS * S_in[:, k]).sum((-1, -2))
            gS = torch.addcmul(g_S_in[:, k].transpose(-1, -2), gS, decay[:, k, ..., None, None])
        g_last = g_decay * decay  # (b, nc, G, R)

        # states = xᵀ · (dte ∘ B)
        g_x.view(-1, Q, P).baddbmm_(dteB.view(-1, Q, N), g_states.view(-1, P, N).transpose(1, 2))
        g_dteB = torch.matmul(xh, g_states)  # (b, nc, G, R, Q, N)
        g_B += (g_dteB * dte[..., None]).sum(3)
        g_dte = (g_dteB * Bc[:, :, :, None]).sum(-1)  # (b, nc, G, R, Q)
        gdd = g_dte * dte  # dte = exp(last − acs) · Δ
        g_dt += g_dte * torch.exp(acs[..., -1:] - acs)
        g_acs -= gdd
        g_last += gdd.sum(-1)
        g_acs[..., -1] += g_last

        # acs = cumsum(Δ · A) within the chunk
        g_a = g_acs.flip(-1).cumsum(-1).flip(-1)
        g_dt += g_a * A.float().view(G, R, 1)
        g_A = (g_a * dth).sum((0, 1, 4)).reshape(H)

        def back(t: Tensor, last_dims: int) -> Tensor:  # head-major (b, nc, G, R, Q[, P]) → (b, T, H[, P])
            t = t.permute(0, 1, 4, 2, 3, 5) if last_dims else t.permute(0, 1, 4, 2, 3)
            t = t.reshape(b, nc * Q, H, P) if last_dims else t.reshape(b, nc * Q, H)
            return t[:, :T] if pad else t

        def back_bc(t: Tensor) -> Tensor:  # (b, nc, G, Q, N) → (b, T, G, N)
            t = t.transpose(2, 3).reshape(b, nc * Q, G, N)
            return t[:, :T] if pad else t

        return (back(g_x, 1).to(x_dtype), back(g_dt, 0).to(dt_dtype), g_A.to(A.dtype),
                back_bc(g_B).to(B_dtype), back_bc(g_C).to(C_dtype),
                g_D.to(D.dtype) if g_D is not None else None, None)


def ssd_chunked_autograd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                         chunk_size: int) -> tuple[Tensor, Tensor]:
    """`ssd_chunked` without documents or an initial state, D (H,) or None: (y like x, final (b, H, P, N))."""
    T = x.shape[1]
    Q = max(1, min(chunk_size, T))
    return _ChunkedScan.apply(x, dt, A, B, C, D, Q)
