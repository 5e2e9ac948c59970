"""The chunked scan for training: the whole of `ssd_chunked` as one autograd Function.

`ssd_chunked` under autograd records ~40 ATen ops per call, and at small widths the cost is their
passes over (b, T, H, P)-sized tensors, not FLOPs: at the demo's shape (b 32, T 224, H 8, P 32, N 16,
Q 32, 1 thread) its forward + backward took 36-41 ms of a 124 ms block, more than the in_proj GEMM.
This Function computes the same maths (forms.py's docstring) with a backward written out, and folds
what it can into the matrices:

    W = L ∘ CB ∘ Δ_s (+ D on the diagonal)      L[l,s] = exp(clamp(acs_l − acs_s, −80, 0))
    y = W · x + E ∘ (C · S_inᵀ)                  E[l] = exp(acs_l), S_in the state entering the chunk
    states = (dte ∘ x)ᵀ · B                      dte[s] = exp(acs_Q − acs_s) · Δ_s

Two layouts of x: head-major (b, nc, G, R, Q, P) for the per-head Q × Q products of the intra-chunk
term, and position-major (b, nc, G, Q, R·P) for everything that touches the state. In the second,
each group's R heads are one matrix, so B and C (shared by the group's heads) enter the state's
products as they are, (Q, N), and nothing of size Q × R × N is ever formed: states = (Q, R·P)ᵀ ·
(Q, N), the readout C · S_inᵀ = (Q, N) · (N, R·P), and their gradients likewise; the decays become
row scales of (Q, R·P) tensors. (The first version expanded B and C over the heads, (…, R, Q, N); at
the demo's state 64 its forward + backward took 56 ms at T 128 against 33 ms for this one, and at
the 130M shape (b 2, T 2048, N 128, P 64) 446 ms against 259, where ssd_chunked's autograd took 424:
1 thread, 2026-12-01. At N 16, P 32 it is 17.4 against 15.7 ms.) For G = 1 the position-major x and
y are views of the inputs' own (b, T, H, P) layout.

The backward, with gW = gy · xᵀ and v = gW ∘ L:

    g_x     = Wᵀ · gy + dte ∘ (B · g_statesᵀ)         g_D = Σ diag(gW)
    g_CB    = Σ_R v ∘ Δ_s                             (masked to the causal triangle)
    g_Δ_s  += Σ_l v ∘ CB                               g_acs_l += Σ_s (v ∘ CB)_ls Δ_s, g_acs_s −= the same by s
    inter:  g_raw = E ∘ gy → g_C += g_raw · S_in,  g_S_in = g_rawᵀ · C,  g_acs += E ∘ Σ_p gy ∘ (C · S_inᵀ)
    states: g_states from the reverse recurrence over chunks; g_B += (dte ∘ x) · g_states,
            g_dte = Σ_p x ∘ (B · g_statesᵀ)
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


def _pos_major(t: Tensor, b: int, nc: int, Q: int, G: int, R: int, P: int) -> Tensor:
    """(b, nc·Q, G·R, P) → (b, nc, G, Q, R, P): a view when G = 1."""
    t = t.view(b, nc, Q, G, R, P).transpose(2, 3)
    return t if G == 1 else t.contiguous()


class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, Q: int):
        ctx.set_materialize_grads(False)
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
        xf = xf.contiguous()  # x is a slice of the conv's output: one copy, then views
        xh = _head_major(xf, b, nc, Q, G, R)  # (b, nc, G, R, Q, P)
        xq = _pos_major(xf, b, nc, Q, G, R, P)  # (b, nc, G, Q, R, P)
        dth = _head_major(dtf[..., None], b, nc, Q, G, R)[..., 0]  # (b, nc, G, R, Q)
        Bc = Bf.view(b, nc, Q, G, N).transpose(2, 3).contiguous()  # (b, nc, G, Q, N)
        Cc = Cf.view(b, nc, Q, G, N).transpose(2, 3).contiguous()
        acs = torch.cumsum(dth * A.float().view(G, R, 1), dim=-1)  # (b, nc, G, R, Q)

        keep = torch.tril(torch.ones(Q, Q, dtype=torch.bool, device=x.device))
        CB = torch.matmul(Cc, Bc.transpose(-1, -2)).masked_fill_(~keep, 0.0)  # (b, nc, G, Q, Q)
        L = (acs[..., :, None] - acs[..., None, :]).clamp_(-80.0, 0.0).exp_()  # (b, nc, G, R, Q, Q)
        W = L * CB[:, :, :, None]
        W.mul_(dth[..., None, :])
        if D is not None:
            W.diagonal(dim1=-2, dim2=-1).add_(D.float().view(G, R, 1))
        y_head = torch.matmul(W, xh)  # (b, nc, G, R, Q, P)
        del W

        # each chunk's own contribution to the state at its end, and Eq. 1 across chunks
        last = acs[..., -1:]
        dte = torch.exp(last - acs).mul_(dth)  # (b, nc, G, R, Q)
        xdq = (xq * dte.transpose(-1, -2)[..., None]).view(b, nc, G, Q, R * P)  # Δ-decayed x, position-major
        states = torch.matmul(xdq.transpose(-1, -2), Bc)  # (b, nc, G, R·P, N)
        decay = torch.exp(last[..., 0])  # (b, nc, G, R)
        # S_in[k] is written in place by the product that makes it (a copy per chunk took ~3% of the step)
        S_in = torch.empty_like(states)
        S_in[:, 0].zero_()
        h = states.new_empty(b, G, R * P, N)
        for k in range(nc):
            nxt = S_in[:, k + 1] if k + 1 < nc else h
            torch.addcmul(states[:, k].view(b, G, R, P, N), S_in[:, k].view(b, G, R, P, N),
                          decay[:, k, ..., None, None], out=nxt.view(b, G, R, P, N))

        # the carried state read out at every position, scaled by its decay since the chunk began
        E = torch.exp(acs)  # (b, nc, G, R, Q)
        raw = torch.matmul(Cc, S_in.transpose(-1, -2)).view(b, nc, G, Q, R, P)  # C · S_inᵀ
        y = raw * E.transpose(-1, -2)[..., None]  # (b, nc, G, Q, R, P)
        y += y_head.transpose(3, 4)
        y = y.transpose(2, 3).reshape(b, nc * Q, H, P)
        if pad:
            y = y[:, :T]
        ctx.save_for_backward(xh, xq, xdq, dth, A, Bc, Cc, D, L, CB, acs, dte, S_in, decay, E, raw)
        ctx.shape = (b, T, H, P, G, N, R, nc, Q, pad)
        ctx.dtypes = (x.dtype, dt.dtype, B.dtype, C.dtype)
        return y.to(x.dtype), h.reshape(b, H, P, N)

    @staticmethod
    def backward(ctx, gy: Tensor, g_final: Tensor | None):
        xh, xq, xdq, dth, A, Bc, Cc, D, L, CB, acs, dte, S_in, decay, E, raw = ctx.saved_tensors
        b, T, H, P, G, N, R, nc, Q, pad = ctx.shape
        x_dtype, dt_dtype, B_dtype, C_dtype = ctx.dtypes
        gy = gy.float() if gy is not None else xh.new_zeros(b, T, H, P)
        if pad:
            gy = F.pad(gy, (0, 0, 0, 0, 0, pad))
        gy = gy.contiguous()
        gyh = _head_major(gy, b, nc, Q, G, R)  # (b, nc, G, R, Q, P)
        gyq = _pos_major(gy, b, nc, Q, G, R, P)  # (b, nc, G, Q, R, P)

        # intra-chunk: y = W · x
        gW = torch.matmul(gyh, xh.transpose(-1, -2))
        g_D = gW.diagonal(dim1=-2, dim2=-1).sum((0, 1, 4)).reshape(H) if D is not None else None
        v = gW.mul_(L)
        g_CB = (v * dth[..., None, :]).sum(3)
        vc = v.mul_(CB[:, :, :, None])
        g_dt = vc.sum(-2)
        g_acs = torch.matmul(vc, dth[..., None])[..., 0] - g_dt * dth
        del v, vc, gW
        W = L * CB[:, :, :, None]
        W.mul_(dth[..., None, :])
        if D is not None:
            W.diagonal(dim1=-2, dim2=-1).add_(D.float().view(G, R, 1))
        g_x_head = torch.matmul(W.transpose(-1, -2), gyh)  # (b, nc, G, R, Q, P)
        del W
        g_CB.masked_fill_(~torch.tril(torch.ones(Q, Q, dtype=torch.bool, device=gy.device)), 0.0)
        g_C = torch.matmul(g_CB, Bc)
        g_B = torch.matmul(g_CB.transpose(-1, -2), Cc)

        # inter-chunk readout: y += E ∘ raw, raw = C · S_inᵀ
        Eq = E.transpose(-1, -2)  # (b, nc, G, Q, R)
        g_raw = (gyq * Eq[..., None]).view(b, nc, G, Q, R * P)
        g_acs += E * (gyq * raw).sum(-1).transpose(-1, -2)
        g_C += torch.matmul(g_raw, S_in)
        g_S_in = torch.matmul(g_raw.transpose(-1, -2), Cc)  # (b, nc, G, R·P, N)

        # the recurrence across chunks, backwards: S_{k+1} = decay_k · S_k + states_k
        g_states = torch.empty_like(S_in)  # g_states[k] is the gradient reaching S_{k+1}
        if g_final is not None:
            g_states[:, nc - 1] = g_final.float().reshape(b, G, R * P, N)
        else:
            g_states[:, nc - 1].zero_()
        g_decay = decay.new_empty(decay.shape)
        for k in range(nc - 1, -1, -1):
            gS = g_states[:, k]
            g_decay[:, k] = torch.linalg.vecdot(gS.view(b, G, R, P * N), S_in[:, k].view(b, G, R, P * N))
            if k:
                torch.addcmul(g_S_in[:, k].view(b, G, R, P, N), gS.view(b, G, R, P, N),
                              decay[:, k, ..., None, None], out=g_states[:, k - 1].view(b, G, R, P, N))
        g_last = g_decay * decay

        # states = xdqᵀ · B
        g_xdq = torch.matmul(Bc, g_states.transpose(-1, -2)).view(b, nc, G, Q, R, P)
        g_B += torch.matmul(xdq, g_states)
        g_dte = (g_xdq * xq).sum(-1).transpose(-1, -2)  # (b, nc, G, R, Q)
        g_xq = g_xdq.mul_(dte.transpose(-1, -2)[..., None])
        g_xq += g_x_head.transpose(3, 4)
        gdd = g_dte * dte
        g_dt += g_dte * torch.exp(acs[..., -1:] - acs)
        g_acs -= gdd
        g_last += gdd.sum(-1)
        g_acs[..., -1] += g_last

        # acs = cumsum(Δ · A) within the chunk
        g_a = g_acs.flip(-1).cumsum(-1).flip(-1)
        g_dt += g_a * A.float().view(G, R, 1)
        g_A = (g_a * dth).sum((0, 1, 4)).reshape(H)

        g_x = g_xq.transpose(2, 3).reshape(b, nc * Q, H, P)
        g_dt = g_dt.permute(0, 1, 4, 2, 3).reshape(b, nc * Q, H)

        def back_bc(t: Tensor) -> Tensor:  # (b, nc, G, Q, N) → (b, T, G, N)
            t = t.transpose(2, 3).reshape(b, nc * Q, G, N)
            return t[:, :T] if pad else t

        if pad:
            g_x, g_dt = g_x[:, :T], g_dt[:, :T]
        return (g_x.to(x_dtype), g_dt.to(dt_dtype), g_A.to(A.dtype),
                back_bc(g_B).to(B_dtype), back_bc(g_C).to(C_dtype),
                g_D.to(D.dtype) if g_D is not None else None, None)


def ssd_chunked_autograd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                         chunk_size: int) -> tuple[Tensor, Tensor]:
    """`ssd_chunked` without documents or an initial state, D (H,) or None: (y like x, final (b, H, P, N))."""
    T = x.shape[1]
    Q = max(1, min(chunk_size, T))
    return _ChunkedScan.apply(x, dt, A, B, C, D, Q)
