"""Training checkpoints: atomic, resumable, sharded across ranks.

Layout: `<phase dir>/checkpoints/step-00000050/` holds the model and optimizer state written by
torch.distributed.checkpoint (one shard file per rank, resharded on load, so a run may resume on
another world size), `trainer.json` (step, scheduler, skipped steps, counters), `rng-rank<r>.pt`
and, written last, `COMPLETE`.

Atomicity: everything is first written under `.tmp-step-…`; rank 0 renames the folder once every
rank has finished (a directory rename is atomic on POSIX). A kill at any moment therefore leaves
either the old set of checkpoints or the old set plus one complete new one; leftover `.tmp-*`
folders are never read and are removed by the next save. The newest folder with `COMPLETE` is the
last good checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from promptcot_mamba.common.files import atomic_write_json, fsync_dir
from promptcot_mamba.train.parallel import Dist, barrier

COMPLETE = "COMPLETE"


def _name(step: int) -> str:
    return f"step-{step:08d}"


class CheckpointManager:
    def __init__(self, root: str | Path, d: Dist, *, keep: int = 2):
        self.root = Path(root)
        self.d = d
        self.keep = keep

    # ------------------------------------------------------------------------------ discovery
    def complete(self) -> list[Path]:
        if not self.root.exists():
            return []
        found = [p for p in self.root.iterdir()
                 if p.is_dir() and p.name.startswith("step-") and (p / COMPLETE).exists()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    # ------------------------------------------------------------------------------ save
    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
             trainer_state: dict) -> Path:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        final = self.root / _name(step)
        tmp = self.root / f".tmp-{_name(step)}"
        if self.d.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        barrier(self.d)
        msd, osd = get_state_dict(model, optimizer)
        with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
            warnings.filterwarnings("ignore", message=".*single process.*")
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp))
        torch.save(_rng_state(), tmp / f"rng-rank{self.d.rank}.pt")
        barrier(self.d)
        if self.d.is_main:
            state = dict(trainer_state, step=step, scheduler=scheduler.state_dict(), world=self.d.world)
            atomic_write_json(tmp / "trainer.json", state)
            fsync_dir(tmp)
            (tmp / COMPLETE).write_text("ok\n")
            fsync_dir(tmp)
            if final.exists():  # a re-save of the same step (e.g. end of phase right after a periodic save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_dir(self.root)
            for old in self.complete()[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        barrier(self.d)
        return final

    # ------------------------------------------------------------------------------ load
    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> dict:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, osd = get_state_dict(model, optimizer)
        sd = {"model": msd, "optim": osd}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*single process.*")
            dcp.load(sd, checkpoint_id=str(path))
        set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        state = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
        scheduler.load_state_dict(state["scheduler"])
        rng = path / f"rng-rank{self.d.rank}.pt"
        if rng.exists() and state.get("world") == self.d.world:
            _set_rng_state(torch.load(rng, weights_only=False))
        return state


def _rng_state() -> dict:
    out = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
