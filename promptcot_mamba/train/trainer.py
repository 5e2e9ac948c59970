"""One phase of supervised fine-tuning: data → model → optimizer steps → checkpoints → HF export.

Every phase runs through the same code; a phase differs from another only by its PhaseSpec (the
curriculum is data: a new curriculum is a new recipe, not new code). The loss of an optimizer step
is the mean next-token cross-entropy over every labelled token of its global batch (completion +
closing tokens, paper §2.2):
each micro-batch contributes Σ token losses / (labelled tokens in the whole global batch), so the
gradient is the same however the batch is split across micro-batches, processes or packed rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from promptcot_mamba.common.files import atomic_write_json
from promptcot_mamba.train.batches import BatchStream
from promptcot_mamba.train.checkpoint import CheckpointManager
from promptcot_mamba.train.examples import build_phase_examples, steps_for
from promptcot_mamba.train.metrics import MetricsLogger
from promptcot_mamba.train.models import (
    SFTObjective,
    build_model,
    count_parameters,
    export_hf,
    fresh_like,
    is_mamba,
    load_full_state,
    transformer_blocks,
)
from promptcot_mamba.train.optim import build_optimizer, build_scheduler, no_decay_names
from promptcot_mamba.train.parallel import (
    Dist,
    all_reduce_sum,
    apply_activation_checkpointing,
    apply_compile,
    apply_ddp,
    apply_fsdp,
    barrier,
    fsdp_view_warning_ignored,
    full_state_dict,
    grad_norm_and_clip,
    peak_flops_guess,
    resolve_precision,
)
from promptcot_mamba.train.recipe import PhaseSpec, Recipe

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (too many non-finite steps, no data, a bad batch layout)."""


@dataclass
class PhaseResult:
    index: int
    name: str
    export_dir: str  # Hugging Face-format folder (model + tokenizer) of the phase's final weights
    steps: int
    first_step: int  # global step of this phase's first optimizer step
    final_loss: float | None
    skipped_steps: int
    data: dict = field(default_factory=dict)  # the filter report

    def to_dict(self) -> dict:
        return asdict(self)


def phase_dir(out_dir: Path, index: int, phase: PhaseSpec) -> Path:
    return out_dir / "phases" / f"{index + 1:02d}-{phase.name}"


class PhaseTrainer:
    def __init__(self, recipe: Recipe, out_dir: Path, d: Dist, logger: MetricsLogger, tokenizer, *,
                 max_steps: int | None = None, seed: int | None = None, progress: bool = True):
        self.recipe = recipe
        self.out_dir = out_dir
        self.d = d
        self.logger = logger
        self.tokenizer = tokenizer
        self.max_steps = max_steps
        self.seed = recipe.seed if seed is None else seed
        self.progress = progress and recipe.run.progress

    # ------------------------------------------------------------------------------------------
    def run(self, index: int, phase: PhaseSpec, init_from: str | None, first_step: int) -> PhaseResult:
        run, d = self.recipe.run, self.d
        pdir = phase_dir(self.out_dir, index, phase)
        done = pdir / "done.json"
        if done.exists():
            res = PhaseResult(**json.loads(done.read_text(encoding="utf-8")))
            log.info("phase %s already finished (%s)", phase.name, res.export_dir)
            return res
        pdir.mkdir(parents=True, exist_ok=True)

        # data ------------------------------------------------------------------------------
        examples, report = build_phase_examples(phase, self.tokenizer, self.seed)
        if d.is_main:
            atomic_write_json(pdir / "data_report.json", report.to_dict())
            self.logger.event({"event": "data", "phase": phase.name, **report.to_dict()})
        log.info("phase %s data: %s", phase.name, report.summary())
        if not examples:
            raise TrainingError(f"phase {phase.name!r}: no usable examples ({report.summary()})")
        if phase.global_batch % d.world:
            raise TrainingError(f"phase {phase.name!r}: global_batch {phase.global_batch} is not a multiple of "
                                f"the {d.world} processes")
        stream = BatchStream(examples, max_length=phase.max_length, global_batch=phase.global_batch,
                             seed=self.seed + 7919 * index, packing=phase.packing)
        total = steps_for(stream.rows_per_epoch, phase.global_batch, phase.epochs, phase.steps)
        if self.max_steps is not None:
            total = min(total, self.max_steps)

        # model -----------------------------------------------------------------------------
        torch.manual_seed(self.seed + index)
        model = build_model(self.recipe.model, self.tokenizer, from_folder=init_from)
        mamba = is_mamba(model)
        if phase.packing and not mamba:
            raise TrainingError(f"phase {phase.name!r}: packing needs Mamba2LM (document resets); "
                                "a transformers model trains with packing: false")
        n_params = count_parameters(model)
        lm = model  # the pure model (exported at the end); `model` becomes the wrapped objective
        model = SFTObjective(lm)
        no_decay = no_decay_names(model)
        blocks = transformer_blocks(lm)
        compute_dtype = resolve_precision(run, d.device)
        if run.activation_checkpointing:
            apply_activation_checkpointing(blocks)
        if run.compile:
            apply_compile(blocks)
        model = model.to(d.device)
        autocast = compute_dtype != torch.float32
        fsdp = d.distributed and run.strategy == "fsdp2"
        if fsdp:
            model = apply_fsdp(model, blocks, param_dtype=compute_dtype, cpu_offload=run.cpu_offload,
                               reshard_after_forward=run.reshard_after_forward)
            autocast = False  # FSDP2's MixedPrecisionPolicy casts the parameters instead
        elif d.distributed and run.strategy == "ddp":
            model = apply_ddp(model, d)
        optimizer = build_optimizer(model, phase.optimizer, no_decay, fused=not fsdp)
        quiet = fsdp_view_warning_ignored if fsdp else contextlib.nullcontext  # entered per forward
        scheduler = build_scheduler(optimizer, phase.optimizer, total)

        # resume ----------------------------------------------------------------------------
        ckpt = CheckpointManager(pdir / "checkpoints", d, keep=run.keep_checkpoints)
        start, skipped = 0, 0
        latest = ckpt.latest()
        if latest is not None:
            state = ckpt.load(latest, model, optimizer, scheduler)
            start, skipped = int(state["step"]), int(state.get("skipped", 0))
            log.info("phase %s: resumed from %s (step %d)", phase.name, latest, start)
            if d.is_main:
                self.logger.event({"event": "resume", "phase": phase.name, "checkpoint": str(latest), "step": start})
        if d.is_main:
            self.logger.truncate(lambda r: r.get("phase_index", -1) < index or (
                r.get("phase_index") == index and r.get("phase_step", 0) <= start))
            self.logger.event({"event": "phase_start", "phase": phase.name, "index": index, "steps": total,
                               "start": start, "params": n_params, "rows_per_epoch": stream.rows_per_epoch,
                               "global_batch": phase.global_batch, "world": d.world})

        peak = run.peak_flops or peak_flops_guess(d.device)
        self.logger.start_phase(phase.name, total, start, self.progress and d.is_main)
        last_loss = None
        t_phase = time.perf_counter()
        model.train()
        for step in range(start, total):
            t0 = time.perf_counter()
            rows = stream.global_batch_rows(step)
            n_loss = stream.loss_tokens(rows)  # labelled tokens of the whole global batch (host-side)
            n_tok = sum(stream.row_length(r) for r in rows)
            micro = stream.micro_batches(rows, d.rank, d.world, run.micro_batch)
            loss_sum = torch.zeros((), device=d.device)
            scale = d.world / max(n_loss, 1)  # FSDP/DDP average gradients over ranks; undo that
            for i, rows_mb in enumerate(micro):
                mb = stream.collate(rows_mb)
                dev = [None if t is None else t.to(d.device, non_blocking=True)
                       for t in (mb.input_ids, mb.labels, mb.seq_idx, mb.label_index)]
                sync = contextlib.nullcontext()
                if d.distributed and run.strategy == "ddp" and i < len(micro) - 1:
                    sync = model.no_sync()
                with sync:
                    with (quiet(),
                          torch.autocast(d.device.type, dtype=compute_dtype, enabled=autocast)):
                        loss = model(*dev)  # Σ token losses of this micro-batch
                    (loss * scale).backward()
                loss_sum += loss.detach()
                del loss
            all_reduce_sum(loss_sum, d)
            gnorm = grad_norm_and_clip(model, phase.optimizer.grad_clip)
            mean_loss = loss_sum / max(n_loss, 1)
            finite = bool(torch.isfinite(mean_loss) & torch.isfinite(gnorm))  # the one host sync per step
            lr = optimizer.param_groups[0]["lr"]
            if finite:
                optimizer.step()
            else:
                skipped += 1
                log.warning("phase %s step %d: non-finite loss or gradient, step skipped (%d so far)",
                            phase.name, step + 1, skipped)
            optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():  # after a skipped step torch warns that optimizer.step() was not called
                warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
                scheduler.step()
            dt = time.perf_counter() - t0
            if finite:
                last_loss = float(mean_loss)
            if d.is_main and ((step + 1) % run.log_every == 0 or step + 1 == total or not finite):
                tps = n_tok / dt if dt > 0 else 0.0
                self.logger.log({
                    "step": first_step + step + 1, "phase": phase.name, "phase_index": index,
                    "phase_step": step + 1, "loss": float(mean_loss) if finite else None,
                    "lr": lr, "grad_norm": float(gnorm) if finite else None,
                    "tokens": n_tok, "loss_tokens": n_loss, "tokens_per_s": tps,
                    "mfu": (6 * n_params * tps / (peak * d.world)) if peak else None,
                    "skipped_steps": skipped, "step_time_s": dt, "elapsed_s": time.perf_counter() - t_phase,
                })
            if skipped > run.max_bad_steps:
                raise TrainingError(f"phase {phase.name!r}: {skipped} steps had a non-finite loss or gradient "
                                    f"(run.max_bad_steps = {run.max_bad_steps}); stopping")
            if run.checkpoint_every and (step + 1) % run.checkpoint_every == 0 and step + 1 < total:
                ckpt.save(step + 1, model, optimizer, scheduler, {"skipped": skipped, "phase": phase.name})
        self.logger.close_bar()
        if last_loss is None and d.is_main and self.logger.path.exists():  # resumed at the very end
            from promptcot_mamba.train.metrics import read_metrics

            done_rows = [r for r in read_metrics(self.logger.path)
                         if r.get("phase_index") == index and r.get("loss") is not None]
            last_loss = done_rows[-1]["loss"] if done_rows else None

        # end of phase: final checkpoint, HF export, done marker ------------------------------
        ckpt.save(total, model, optimizer, scheduler, {"skipped": skipped, "phase": phase.name})
        export = pdir / "hf"
        state = full_state_dict(model, d)
        if d.is_main:
            tmp = pdir / ".tmp-hf"
            shutil.rmtree(tmp, ignore_errors=True)
            target = lm
            if d.distributed:  # the gathered objective state: "lm.<name>" → "<name>"
                full = {k.removeprefix("lm."): v for k, v in state.items()}
                target = load_full_state(fresh_like(lm), full)
            export_hf(target, self.tokenizer, tmp)
            shutil.rmtree(export, ignore_errors=True)
            tmp.rename(export)
            res = PhaseResult(index=index, name=phase.name, export_dir=str(export), steps=total,
                              first_step=first_step + 1, final_loss=last_loss, skipped_steps=skipped,
                              data=report.to_dict())
            atomic_write_json(done, res.to_dict())
            self.logger.event({"event": "phase_end", "phase": phase.name, "export": str(export),
                               "final_loss": last_loss, "skipped_steps": skipped})
        barrier(d)
        res = PhaseResult(**json.loads(done.read_text(encoding="utf-8")))
        del model, lm, optimizer
        return res
