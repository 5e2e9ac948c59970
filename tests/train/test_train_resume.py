"""Kill and resume: SIGKILL mid-run then rerunning `pcm train` on the same folder continues the same
loss curve; a kill during a checkpoint save never damages the last good checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from promptcot_mamba.train.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]


def _recipe(tmp: Path) -> Path:
    raw = {"name": "resume", "seed": 1, "model": {"kind": "mamba2", "config": "tiny"}, "tokenizer": "builtin:bytes",
           "run": {"device": "cpu", "precision": "fp32", "micro_batch": 4, "checkpoint_every": 5,
                   "keep_checkpoints": 2, "tensorboard": False, "threads": 1},
           "optimizer": {"lr": 3e-3, "warmup_steps": 5},
           "phases": [
               {"name": "one", "datasets": [{"kind": "synthetic", "task": "arithmetic", "n": 256, "seed": 1}],
                "max_length": 128, "global_batch": 8, "steps": 30},
               {"name": "two", "datasets": [{"kind": "synthetic", "task": "count", "n": 128, "seed": 2}],
                "max_length": 256, "global_batch": 4, "steps": 12, "packing": True}]}
    f = tmp / "resume.yaml"
    f.write_text(yaml.safe_dump(raw))
    return f


def _cmd(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "promptcot_mamba", "train", str(recipe), "--out", str(out), "--no-progress"]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO))


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_same_curve(tmp_path):
    recipe = _recipe(tmp_path)
    ref = subprocess.run(_cmd(recipe, tmp_path / "ref"), cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_rows = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    assert [r["step"] for r in ref_rows] == list(range(1, 43))

    out = tmp_path / "killed"
    kills = 0
    for target in (17, 36):  # once in phase 1 (past its step-15 checkpoint), once in phase 2
        proc = subprocess.Popen(_cmd(recipe, out), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        metrics = out / "metrics.jsonl"
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and len(read_metrics(metrics)) >= target:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.02)
        proc.wait(timeout=60)
    assert kills == 2
    done = subprocess.run(_cmd(recipe, out), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]
    # resume: the same code, inputs, thread count (run.threads = 1) and machine as the reference run,
    # so equal to the last bit; the tight tolerances here are not a cross-CPU allowance
    for a, b in zip(rows, ref_rows):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7), (a["step"], a["loss"], b["loss"])
        assert a["lr"] == pytest.approx(b["lr"])
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "resume" for e in events) >= 2
    # the same final weights as the uninterrupted run
    from safetensors.torch import load_file

    a = load_file(out / "phases" / "02-two" / "hf" / "model.safetensors")
    b = load_file(tmp_path / "ref" / "phases" / "02-two" / "hf" / "model.safetensors")
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


KILLER = textwrap.dedent("""
    import os, signal, sys, torch
    from promptcot_mamba.model.lm import Mamba2LM
    from promptcot_mamba.train.checkpoint import CheckpointManager
    from promptcot_mamba.train.parallel import Dist
    import promptcot_mamba.train.checkpoint as ck

    root, where = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = Mamba2LM("tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    mgr = CheckpointManager(root, Dist(), keep=2)

    def step(seed):
        torch.manual_seed(seed)
        model(torch.randint(0, 256, (2, 20))).logits.square().mean().backward()
        opt.step(); opt.zero_grad()

    step(1)
    mgr.save(5, model, opt, sched, {"skipped": 0})
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, os.path.join(root, "good.pt"))
    step(2)
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if where == "shards":       # after the model/optimizer shards, while writing the RNG file
        ck.torch.save = die
    elif where == "rename":     # everything written, just before the atomic rename
        ck.os.replace = die
    elif where == "marker":     # before the COMPLETE marker
        ck.fsync_dir = die
    mgr.save(10, model, opt, sched, {"skipped": 0})
    print("not killed")
""")


@pytest.mark.parametrize("where", ["shards", "marker", "rename"])
def test_kill_during_save_keeps_last_good_checkpoint(tmp_path, where):
    root = tmp_path / "ckpt"
    root.mkdir()
    proc = subprocess.run([sys.executable, "-c", KILLER, str(root), where], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr[-2000:]
    assert any(p.name.startswith(".tmp-") for p in root.iterdir())  # the interrupted save

    from promptcot_mamba.model.lm import Mamba2LM
    from promptcot_mamba.train.checkpoint import CheckpointManager
    from promptcot_mamba.train.parallel import Dist

    mgr = CheckpointManager(root, Dist(), keep=2)
    latest = mgr.latest()
    assert latest is not None and latest.name == "step-00000005"
    model = Mamba2LM("tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    state = mgr.load(latest, model, opt, sched)
    assert state["step"] == 5
    good = torch.load(root / "good.pt")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, good[k], rtol=0, atol=0)
    # the next save clears the leftover and becomes the latest
    mgr.save(10, model, opt, sched, {"skipped": 0})
    assert mgr.latest().name == "step-00000010"
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())
