"""RMSNorm for the residual stream and the grouped gated RMSNorm of the Mamba-2 mixer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _RMSNormFn(torch.autograd.Function):
    """fp32 RMSNorm over groups of S = d / groups channels with a written-out backward (training).

    h (..., d), weight (d,): out = w ∘ h ∘ r with r = rsqrt(mean_group(h²) + eps) per group. With
    n = h ∘ r and gw = g ∘ w:  ∂h = r ∘ gw − h ∘ r³ · Σ_group(gw ∘ h) / S,  ∂w = Σ_rows g ∘ n.
    Measured forward + backward at 1 thread: 1.7-3.1 ms vs 4.8-9.4 for F.rms_norm (whose weight
    gradient is slow) and 2.7-5.8 for the same maths under autograd at (32, 224, 128); 9.0-11.5 vs
    31 (F.rms_norm) and 16-19 (autograd) at (2, 2048, 768). Only r (one value per group) is saved
    besides the input. tests/model/test_model_lm.py compares it with F.rms_norm.
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, eps: float, groups: int) -> Tensor:
        shape = h.shape
        S = shape[-1] // groups
        hg = h.reshape(*shape[:-1], groups, S)
        r = torch.linalg.vector_norm(hg, dim=-1, keepdim=True).div_(S ** 0.5).square_().add_(eps).rsqrt_()
        ctx.save_for_backward(h, weight, r)
        ctx.groups = groups
        return torch.mul(hg, r).view(shape).mul_(weight)

    @staticmethod
    def backward(ctx, g: Tensor):
        h, weight, r = ctx.saved_tensors
        shape, groups = h.shape, ctx.groups
        S = shape[-1] // groups
        hg = h.reshape(*shape[:-1], groups, S)
        gw = (g * weight).view(*shape[:-1], groups, S)
        coef = torch.linalg.vecdot(gw, hg, dim=-1).unsqueeze(-1).mul_(r.pow(3)).div_(-S)
        g_w = None
        if ctx.needs_input_grad[1]:
            g_w = (g.reshape(*shape[:-1], groups, S) * hg).mul_(r).reshape(-1, shape[-1]).sum(0)
        return gw.mul_(r).addcmul_(hg, coef).view(shape), g_w, None, None


def _train_path(h: Tensor, weight: Tensor) -> bool:
    return (h.dtype == torch.float32 and weight.dtype == torch.float32 and torch.is_grad_enabled()
            and (h.requires_grad or weight.requires_grad))


class RMSNorm(nn.Module):
    """Pre-norm of every block and the final norm (fp32 math, as transformers' Mamba2RMSNorm)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, h: Tensor) -> Tensor:
        if _train_path(h, self.weight):
            return _RMSNormFn.apply(h, self.weight, self.eps, 1)
        if h.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # inference: the same maths in one call, fewer ops per decode step (training takes
            # `_RMSNormFn` above, whose backward is faster than F.rms_norm's)
            return F.rms_norm(h, (h.shape[-1],), self.weight, self.eps)
        dtype = h.dtype
        hf = h.float()
        hf = hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * hf.to(dtype)


class GatedRMSNorm(nn.Module):
    """`rmsnorm_per_group(y * silu(z)) * weight`, groups of d_inner / n_groups channels.

    Gate first, then normalise each group on its own: mamba_ssm's RMSNormGated with
    `norm_before_gate=False, group_size=d_inner // ngroups`, and vLLM. transformers' eager path
    normalises over all d_inner channels at once, which only agrees when n_groups == 1
    (transformers 4.x; fixed in transformers PR #40861: 5.x normalises per group, checked with 5.24).
    """

    def __init__(self, dim: int, n_groups: int, eps: float = 1e-5):
        super().__init__()
        if dim % n_groups:
            raise ValueError(f"GatedRMSNorm: dim {dim} is not divisible by n_groups {n_groups}")
        self.weight = nn.Parameter(torch.ones(dim))
        self.n_groups = n_groups
        self.eps = eps

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        dtype = y.dtype
        g = y.float() * F.silu(z.float())  # (..., d_inner)
        shape = g.shape
        if _train_path(g, self.weight):
            return _RMSNormFn.apply(g, self.weight, self.eps, self.n_groups).to(dtype)
        if self.weight.dtype == torch.float32:
            S = shape[-1] // self.n_groups
            g = F.rms_norm(g.view(*shape[:-1], self.n_groups, S), (S,), None, self.eps)
            return (g.view(shape) * self.weight).to(dtype)
        g = g.reshape(*shape[:-1], self.n_groups, shape[-1] // self.n_groups)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * g.reshape(shape)).to(dtype)
