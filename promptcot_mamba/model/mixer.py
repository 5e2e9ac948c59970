"""The Mamba-2 mixer: in_proj → causal conv → SiLU → SSD → grouped gated RMSNorm → out_proj."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from promptcot_mamba.model.config import Mamba2Config
from promptcot_mamba.model.norm import GatedRMSNorm
from promptcot_mamba.ssd import ssd, ssd_step


def causal_conv(xBC: Tensor, weight: Tensor, bias: Tensor | None, prev: Tensor | None,
                doc: Tensor | None) -> tuple[Tensor, Tensor]:
    """Depthwise causal conv over time, optionally continuing from a window and resetting at
    document starts.

    xBC (b, T, C); weight (C, 1, K); prev (b, C, K) the last K raw inputs before this call (zeros
    when None); doc (b, T) document ids. Returns (pre-activation output (b, T, C), new window (b, C, K)).
    out_t = Σ_k w_k · in_{t-K+1+k}, where inputs of another document count as zero — the conv half of
    "packed documents are independent" (DESIGN.md; mamba_ssm's torch fallback cannot do this).
    """
    b, T, C = xBC.shape
    K = weight.shape[-1]
    head = (prev[:, :, 1:].transpose(1, 2) if prev is not None
            else xBC.new_zeros(b, K - 1, C))  # (b, K-1, C)
    ext = torch.cat([head.to(xBC.dtype), xBC], dim=1)  # (b, K-1+T, C)
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


CPU_CHUNK = 128


class Mamba2Mixer(nn.Module):
    def __init__(self, config: Mamba2Config, layer_idx: int = 0, ssd_backend: str = "auto"):
        super().__init__()
        c = self.config = config
        self.layer_idx = layer_idx
        self.ssd_backend = ssd_backend
        self.in_proj = nn.Linear(c.hidden_size, c.in_proj_dim, bias=c.use_bias)
        self.conv1d = nn.Conv1d(c.conv_dim, c.conv_dim, c.conv_kernel, groups=c.conv_dim,
                                padding=c.conv_kernel - 1, bias=c.use_conv_bias)
        self.A_log = nn.Parameter(torch.empty(c.num_heads))
        self.D = nn.Parameter(torch.empty(c.num_heads))
        self.dt_bias = nn.Parameter(torch.empty(c.num_heads))
        self.norm = GatedRMSNorm(c.d_inner, c.n_groups, eps=c.layer_norm_epsilon)
        self.out_proj = nn.Linear(c.d_inner, c.hidden_size, bias=c.use_bias)
        for p in (self.A_log, self.D, self.dt_bias):
            p._no_weight_decay = True  # mamba_ssm convention, read by the trainer's param groups
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """mamba_ssm's initialisation: A ~ U(1, 16), D = 1, dt_bias = softplus⁻¹(log-uniform dt)."""
        c = self.config
        self.A_log.copy_(torch.empty(c.num_heads).uniform_(1, 16).log())
        self.D.fill_(1.0)
        dt = torch.exp(torch.rand(c.num_heads) * (math.log(c.time_step_max) - math.log(c.time_step_min))
                       + math.log(c.time_step_min)).clamp(min=c.time_step_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def _chunk(self, h: Tensor) -> int:
        """The scan's chunk length. The result does not depend on it (up to rounding); on CPU the
        O(T·Q) intra-chunk work dominates, and Q = 128 measured fastest at the 130M shape
        (forward 1.92 s vs 2.26 s at Q = 256, train step 5.7 s vs 7.4 s; benchmarks/bench_model.py)."""
        Q = self.config.chunk_size
        return min(Q, CPU_CHUNK) if h.device.type == "cpu" else Q

    def _split(self, zxbcdt: Tensor):
        c = self.config
        return torch.split(zxbcdt, [c.d_inner, c.conv_dim, c.num_heads], dim=-1)

    def _dt(self, dt: Tensor) -> Tensor:
        dt = F.softplus(dt.float() + self.dt_bias.float())
        lo, hi = self.config.time_step_limit
        if lo > 0.0 or hi != math.inf:
            dt = dt.clamp(lo, hi)
        return dt

    def forward(self, h: Tensor, *, seq_idx: Tensor | None = None, conv_state: Tensor | None = None,
                ssm_state: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """h (b, T, d) → (out (b, T, d), conv window (b, conv_dim, K), ssm state (b, H, P, N) fp32)."""
        c = self.config
        b, T, _ = h.shape
        z, xBC, dt = self._split(self.in_proj(h))
        xBC, window = causal_conv(xBC, self.conv1d.weight, self.conv1d.bias, conv_state, seq_idx)
        xBC = F.silu(xBC)
        x, B, C = torch.split(xBC, [c.d_inner, c.n_groups * c.state_size, c.n_groups * c.state_size], dim=-1)
        A = -torch.exp(self.A_log.float())
        y, final = ssd(x.reshape(b, T, c.num_heads, c.head_dim), self._dt(dt), A,
                       B.reshape(b, T, c.n_groups, c.state_size), C.reshape(b, T, c.n_groups, c.state_size),
                       self.D, initial_state=ssm_state, seq_idx=seq_idx, chunk_size=self._chunk(h),
                       backend=self.ssd_backend)
        y = self.norm(y.reshape(b, T, c.d_inner), z)
        return self.out_proj(y), window, final

    def step(self, h: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        """One token per sequence: h (b, d) → (b, d); updates both states in place."""
        c = self.config
        b = h.shape[0]
        z, xBC, dt = self._split(self.in_proj(h))
        conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
        conv_state[:, :, -1] = xBC.to(conv_state.dtype)
        xBC = (conv_state * self.conv1d.weight[:, 0, :].to(conv_state.dtype)).sum(-1).to(h.dtype)
        if self.conv1d.bias is not None:
            xBC = xBC + self.conv1d.bias
        xBC = F.silu(xBC)
        x, B, C = torch.split(xBC, [c.d_inner, c.n_groups * c.state_size, c.n_groups * c.state_size], dim=-1)
        A = -torch.exp(self.A_log.float())
        y = ssd_step(ssm_state, x.reshape(b, c.num_heads, c.head_dim), self._dt(dt), A,
                     B.reshape(b, c.n_groups, c.state_size), C.reshape(b, c.n_groups, c.state_size), self.D)
        return self.out_proj(self.norm(y.reshape(b, c.d_inner), z))
