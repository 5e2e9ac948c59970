"""The Mamba-2 mixer: in_proj → causal conv → SiLU → SSD → grouped gated RMSNorm → out_proj."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from promptcot_mamba.model.config import Mamba2Config
from promptcot_mamba.model.conv import causal_conv
from promptcot_mamba.model.matvec import project, project_rows
from promptcot_mamba.model.norm import GatedRMSNorm
from promptcot_mamba.ssd import ssd, ssd_step

CPU_CHUNK = 128


class Mamba2Mixer(nn.Module):
    def __init__(self, config: Mamba2Config, layer_idx: int = 0):
        super().__init__()
        c = self.config = config
        self.layer_idx = layer_idx
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

    def split(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """in_proj's output (..., in_proj_dim) → views z (d_inner), xBC (conv_dim), dt (H)."""
        c = self.config
        return torch.split(zxbcdt, [c.d_inner, c.conv_dim, c.num_heads], dim=-1)

    def _dt(self, dt: Tensor) -> Tensor:
        dt = F.softplus(dt.float() + self.dt_bias.float())
        lo, hi = self.config.time_step_limit
        if lo > 0.0 or hi != math.inf:
            dt = dt.clamp(lo, hi)
        return dt

    def forward(self, h: Tensor, *, seq_idx: Tensor | None = None, conv_state: Tensor | None = None,
                ssm_state: Tensor | None = None, ssd_backend: str = "auto",
                matvec: str = "auto") -> tuple[Tensor, Tensor, Tensor]:
        """h (b, T, d) → (out (b, T, d), conv window (b, conv_dim, K), ssm state (b, H, P, N) fp32).
        ssd_backend: the `ssd` field of the model's kernels (a row of ssd/dispatch.py's table); matvec:
        its `matvec` field (the projections' product on CPU, model/matvec.py's `project_rows`)."""
        c = self.config
        b, T, _ = h.shape
        z, xBC, dt = self.split(project_rows(h, self.in_proj, matvec))
        xBC, window = causal_conv(xBC, self.conv1d.weight, self.conv1d.bias, conv_state, seq_idx)
        xBC = F.silu(xBC)
        x, B, C = torch.split(xBC, [c.d_inner, c.n_groups * c.state_size, c.n_groups * c.state_size], dim=-1)
        A = -torch.exp(self.A_log.float())
        y, final = ssd(x.reshape(b, T, c.num_heads, c.head_dim), self._dt(dt), A,
                       B.reshape(b, T, c.n_groups, c.state_size), C.reshape(b, T, c.n_groups, c.state_size),
                       self.D, initial_state=ssm_state, seq_idx=seq_idx, chunk_size=self._chunk(h),
                       backend=ssd_backend)
        y = self.norm(y.reshape(b, T, c.d_inner), z)
        return project_rows(y, self.out_proj, matvec), window, final

    def step(self, h: Tensor, conv_state: Tensor, ssm_state: Tensor, matvec: str = "auto") -> Tensor:
        """One token per sequence: h (b, d) → (b, d); updates both states in place. matvec: the
        `matvec` field of the model's kernels (model/matvec.py).

        At batch 1 on CPU a step costs the weight reads of the two projections plus ~25 small ops per
        layer at a few µs each, so it is written for few ops: the projections go through `project`
        (oneDNN, at the memory's speed), z/xBC/dt are views of one in_proj output, the conv window is
        shifted with one cat, the skip and the bias are fused in place (tests/model/test_model_decode.py)."""
        c = self.config
        b = h.shape[0]
        zxbcdt = project(h, self.in_proj, matvec)  # (b, in_proj_dim)
        z = zxbcdt[:, :c.d_inner]
        dt = zxbcdt[:, c.d_inner + c.conv_dim:]  # (b, H)
        xBC = zxbcdt[:, c.d_inner:c.d_inner + c.conv_dim]  # (b, conv_dim)
        window = torch.cat([conv_state[:, :, 1:], xBC[:, :, None].to(conv_state.dtype)], dim=-1)  # (b, C, K)
        conv_state.copy_(window)
        xBC = torch.linalg.vecdot(window, self.conv1d.weight[:, 0, :].to(window.dtype)).to(h.dtype)  # (b, C)
        if self.conv1d.bias is not None:
            xBC += self.conv1d.bias
        xBC = F.silu(xBC, inplace=True)
        GN = c.n_groups * c.state_size
        x = xBC[:, :c.d_inner].view(b, c.num_heads, c.head_dim)
        B = xBC[:, c.d_inner:c.d_inner + GN].view(b, c.n_groups, c.state_size)
        C = xBC[:, c.d_inner + GN:].view(b, c.n_groups, c.state_size)
        A = -torch.exp(self.A_log.float())
        y = ssd_step(ssm_state, x, self._dt(dt), A, B, C, self.D)
        return project(self.norm(y.view(b, c.d_inner), z), self.out_proj, matvec)
