"""`run_recipe`: every phase of a recipe in order, each starting from the previous phase's export.

The output folder is the whole state of a run: running the same recipe on the same folder again
skips finished phases and resumes the current one from its last good checkpoint.

    out/
      metrics.jsonl          one object per optimizer step: step, phase, loss, lr, grad_norm, tokens/s, mfu, …
      events.jsonl           data reports, phase start/end, resumes
      run.json               the recipe as run and, when finished, every phase's result
      phases/01-<name>/      data_report.json, checkpoints/step-…/, hf/ (the phase's HF export), done.json
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from promptcot_mamba.common.files import atomic_write_json
from promptcot_mamba.train.metrics import MetricsLogger
from promptcot_mamba.train.models import load_tokenizer
from promptcot_mamba.train.parallel import barrier, init_distributed, shutdown
from promptcot_mamba.train.recipe import Recipe
from promptcot_mamba.train.sources import preflight
from promptcot_mamba.train.trainer import PhaseResult, PhaseTrainer

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out_dir: Path
    metrics_path: Path
    phases: list[PhaseResult] = field(default_factory=list)

    @property
    def checkpoints(self) -> dict[str, str]:
        """Phase name → Hugging Face-format folder of that phase's final weights."""
        return {p.name: p.export_dir for p in self.phases}

    @property
    def final_checkpoint(self) -> str:
        return self.phases[-1].export_dir

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "metrics_path": str(self.metrics_path),
                "phases": [p.to_dict() for p in self.phases]}


def run_recipe(recipe: Recipe | dict | str | Path, out_dir: str | Path, *, max_steps: int | None = None,
               seed: int | None = None, progress: bool = True, overrides: dict | None = None) -> RunResult:
    """Train every phase of `recipe` into `out_dir` (resuming what is there) and return the
    per-phase HF-format checkpoint folders and the metrics path.

    recipe: a Recipe, a dict (Recipe.from_dict), or a YAML path / shipped recipe name.
    max_steps: cap on optimizer steps of each phase (quick runs). seed: replaces the recipe's seed.
    overrides: dotted-path recipe overrides, e.g. {"run.micro_batch": 4}.
    Under torchrun every process calls this; rank 0 writes logs and exports.
    """
    if isinstance(recipe, dict):
        recipe = Recipe.from_dict(recipe)
    elif not isinstance(recipe, Recipe):
        recipe = Recipe.from_yaml(recipe)
    if overrides:
        recipe = recipe.with_overrides(overrides)
    preflight([(f"phases[{i}].datasets[{j}]", ds) for i, ph in enumerate(recipe.phases)
               for j, ds in enumerate(ph.datasets)])
    out = Path(out_dir)
    with contextlib.ExitStack() as undo:  # run in reverse order on the way out, on error too
        d = init_distributed(recipe.run)
        undo.callback(shutdown, d)
        if recipe.run.threads is not None:  # for this run only: the caller's setting comes back after
            undo.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(recipe.run.threads)
        tokenizer = load_tokenizer(recipe.tokenizer)
        logger = MetricsLogger(out, enabled=d.is_main, tensorboard=recipe.run.tensorboard,
                               wandb=recipe.run.wandb, run_name=recipe.name, config=recipe.raw)
        undo.callback(logger.close)
        run_info = {"recipe": recipe.raw, "source": recipe.source, "max_steps": max_steps, "seed": seed,
                    "world": d.world}
        if d.is_main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "run.json", run_info)
        barrier(d)
        trainer = PhaseTrainer(recipe, out, d, logger, tokenizer, max_steps=max_steps, seed=seed,
                               progress=progress)
        results: list[PhaseResult] = []
        prev_export: str | None = None
        first_step = 0
        for i, phase in enumerate(recipe.phases):
            init = prev_export if (i > 0 and phase.init == "previous") else None
            res = trainer.run(i, phase, init, first_step)
            results.append(res)
            prev_export = res.export_dir
            first_step += res.steps
        result = RunResult(out_dir=out, metrics_path=logger.path, phases=results)
        if d.is_main:
            atomic_write_json(out / "run.json", {**run_info, "result": result.to_dict()})
        return result
