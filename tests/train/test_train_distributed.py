"""Two gloo processes under torchrun (FSDP2) follow the same loss curve as one process at the same
global batch, across a two-phase curriculum with a packed phase, and export the same weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from promptcot_mamba.common.tolerances import SSD_TERMS, assert_close
from promptcot_mamba.train.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]


def _recipe(tmp: Path, strategy: str) -> Path:
    raw = {"name": "dist", "seed": 1, "model": {"kind": "mamba2", "config": "tiny"}, "tokenizer": "builtin:bytes",
           "run": {"device": "cpu", "precision": "fp32", "micro_batch": 2, "checkpoint_every": 5,
                   "tensorboard": False, "threads": 1, "strategy": strategy},
           "optimizer": {"lr": 3e-3, "warmup_steps": 3},
           "phases": [
               {"name": "one", "datasets": [{"kind": "synthetic", "task": "arithmetic", "n": 128, "seed": 1}],
                "max_length": 128, "global_batch": 8, "steps": 8},
               {"name": "two", "datasets": [{"kind": "synthetic", "task": "count", "n": 64, "seed": 2}],
                "max_length": 256, "global_batch": 4, "steps": 4, "packing": True}]}
    f = tmp / f"dist-{strategy}.yaml"
    f.write_text(yaml.safe_dump(raw))
    return f


def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp2", "ddp"])
def test_two_gloo_processes_match_one(tmp_path, strategy):
    recipe = _recipe(tmp_path, strategy)
    train = ["-m", "promptcot_mamba", "train", str(recipe), "--no-progress", "--out"]
    _run([sys.executable, *train, str(tmp_path / "one")], REPO)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          *train, str(tmp_path / "two")], REPO)
    a = read_metrics(tmp_path / "one" / "metrics.jsonl")
    b = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 13))
    for x, y in zip(a, b):
        # the same values summed in another order (per rank, then across ranks): whole-model values at
        # test sizes (measured: loss 1.2e-7, grad norm 6.9e-7 relative)
        for key in ("loss", "grad_norm"):
            assert_close(torch.tensor(y[key]), torch.tensor(x[key]), reductions=SSD_TERMS,
                         what=f"step {x['step']} {key}")
        assert y["tokens"] == x["tokens"] and y["loss_tokens"] == x["loss_tokens"]
    for phase in ("01-one", "02-two"):
        wa = load_file(tmp_path / "one" / "phases" / phase / "hf" / "model.safetensors")
        wb = load_file(tmp_path / "two" / "phases" / phase / "hf" / "model.safetensors")
        assert wa.keys() == wb.keys()
        for k in wa:
            # Not the tolerance rule of common/tolerances.py, which bounds a value's own rounding: gradient
            # accumulation in one process and reduce-scatter over two sum in different orders, and Adam
            # divides each update by ~|gradient|, so where a gradient nearly cancels, its last-bit
            # difference becomes an update difference of up to a good part of the step (lr 3e-3) and stays
            # in the weight. The bound is measured: largest weight difference after the packed phase 7.6e-6
            # with the autograd conv/scan backwards, 1.6e-5 with the hand-written ones (commits b1c9d5c,
            # a4548e7), 5.4e-6 (ddp) and 4.3e-6 (fsdp2) in a later run.
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=5e-5)
