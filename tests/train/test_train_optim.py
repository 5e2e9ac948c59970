"""AdamW groups and the warmup-then-constant schedule of the paper."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from promptcot_mamba.model.lm import Mamba2LM
from promptcot_mamba.train.optim import build_optimizer, build_scheduler, lr_factor, no_decay_names
from promptcot_mamba.train.recipe import OptimizerSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_weight_decay_groups_survive_wrappers():
    model = Mamba2LM("tiny")
    names = no_decay_names(model)
    assert any(n.endswith("A_log") for n in names) and any(n.endswith("dt_bias") for n in names)
    assert any(n.endswith("norm.weight") for n in names)
    assert not any(n.endswith("in_proj.weight") or n.endswith("out_proj.weight") for n in names)
    spec = OptimizerSpec(weight_decay=0.01)

    class Wrapper(nn.Module):  # DDP-style "module." prefix
        def __init__(self, m):
            super().__init__()
            self.module = m

    for m in (model, Wrapper(model)):
        opt = build_optimizer(m, spec, names)
        decay, plain = opt.param_groups
        assert decay["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
        assert len(plain["params"]) == len(names)
        assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["lr"] == 5e-6


def test_paper_schedule_warmup_then_constant():
    spec = OptimizerSpec()  # paper defaults: 100 warmup steps, constant
    f = [lr_factor(s, spec, 1000) for s in range(300)]
    assert f[0] == pytest.approx(0.01) and f[49] == pytest.approx(0.5) and f[99] == 1.0
    assert all(x == 1.0 for x in f[100:])
    assert all(b >= a for a, b in zip(f, f[1:]))
    log = OptimizerSpec(warmup="log")
    g = [lr_factor(s, log, 1000) for s in range(150)]
    assert g[0] > 0 and g[0] == pytest.approx(math.log(2) / math.log(101)) and g[99] == 1.0 and g[120] == 1.0
    cos = OptimizerSpec(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(10, cos, 110) == pytest.approx(1.0) and lr_factor(110, cos, 110) == pytest.approx(0.1)
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=5e-6)
    sched = build_scheduler(opt, spec, 1000)
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([5e-8, 1e-7, 1.5e-7])
