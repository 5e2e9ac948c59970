"""AdamW and the warmup-then-constant learning rate of the paper (§3.4).

Weight decay follows the Hugging Face Trainer, which the authors' training code uses: every matrix
decays; biases, norm weights and the SSM parameters (A_log, D, dt_bias, marked `_no_weight_decay` by
the model, the mamba_ssm convention) do not. Groups are decided by parameter name *before* any
wrapping, because FSDP2 replaces parameters by DTensors and drops their attributes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from promptcot_mamba.train.recipe import OptimizerSpec


def no_decay_names(model: nn.Module) -> set[str]:
    out = set()
    for name, p in model.named_parameters():
        if p.ndim < 2 or getattr(p, "_no_weight_decay", False):
            out.add(name)
    return out


def build_optimizer(model: nn.Module, spec: OptimizerSpec, no_decay: set[str], *,
                    fused: bool = False) -> torch.optim.AdamW:
    """AdamW over two groups. `fused`: one kernel per step for all parameters (CPU and CUDA; not
    used on FSDP2's DTensor shards)."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (plain if _canon(name) in no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    kw = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=spec.lr, betas=spec.betas, eps=spec.eps, **kw)


def _canon(name: str) -> str:
    # DDP, compile or checkpoint wrappers insert these into parameter names
    for junk in ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module."):
        name = name.replace(junk, "")
    return name.removeprefix("module.")  # the optimizer is built after DDP wrapping


def lr_factor(step: int, spec: OptimizerSpec, total_steps: int) -> float:
    """Multiplier of spec.lr for optimizer step `step` (0-based).

    Warmup over `warmup_steps`: linear, (s+1)/W; or log, the shape of DeepSpeed's WarmupLR that the
    authors' DeepSpeed config uses, log(s+2)/log(W+1), offset by one so the first step already learns.
    Then constant (the paper), or a cosine/linear decay to min_lr_ratio for ablations.
    """
    W = spec.warmup_steps
    if W > 0 and step < W:
        if spec.warmup == "log":
            return min(1.0, math.log(step + 2) / math.log(W + 1))
        return (step + 1) / W
    if spec.schedule == "constant":
        return 1.0
    span = max(1, total_steps - W)
    progress = min(1.0, (step - W) / span)
    lo = spec.min_lr_ratio
    if spec.schedule == "cosine":
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * progress))
    return lo + (1 - lo) * (1 - progress)


def build_scheduler(optimizer: torch.optim.Optimizer, spec: OptimizerSpec, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, spec, total_steps))
