"""Training metrics: one JSON object per optimizer step in metrics.jsonl (always), TensorBoard and
Weights & Biases when installed and enabled, and a tqdm progress bar with ETA. Rank 0 only."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from promptcot_mamba.common.files import dumps_line, read_jsonl, write_jsonl

log = logging.getLogger(__name__)


def truncate_metrics(path: Path, keep) -> None:
    """Keep only the rows for which keep(row) is true (on resume: drop steps after the checkpoint,
    so the file shows one curve). Rewritten atomically; a line cut by a kill is dropped."""
    if path.exists():
        write_jsonl(path, [row for row in read_metrics(path) if keep(row)])


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl (docs/formats.md#training-metrics); unreadable lines are skipped."""
    return read_jsonl(path, on_bad="skip", torn_tail="parse")


class MetricsLogger:
    def __init__(self, out_dir: Path, *, enabled: bool, tensorboard: bool, wandb: bool, run_name: str,
                 config: dict | None = None):
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self._fh = None
        self._events = None
        self._tb = None
        self._wandb = None
        self._bar = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", buffering=1, encoding="utf-8")
        self._events = open(out_dir / "events.jsonl", "a", buffering=1, encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: JSONL only
                self._tb = None
        if wandb:
            try:
                import wandb as _wandb

                self._wandb = _wandb.init(project="promptcot-mamba", name=run_name, config=config or {},
                                          dir=str(out_dir), resume="allow")
            except Exception as err:
                log.warning("wandb requested but unavailable (%s); logging to JSONL only", err)

    def truncate(self, keep) -> None:
        """Drop rows for which keep(row) is false (see truncate_metrics), keeping the file open."""
        if not self.enabled:
            return
        self._fh.close()
        truncate_metrics(self.path, keep)
        self._fh = open(self.path, "a", buffering=1, encoding="utf-8")

    def start_phase(self, name: str, total: int, initial: int, progress: bool) -> None:
        if not self.enabled or not progress:
            return
        from tqdm.auto import tqdm

        self.close_bar()
        self._bar = tqdm(total=total, initial=initial, desc=f"train {name}", unit="step", dynamic_ncols=True)

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        self._fh.write(dumps_line(row))
        step = row["step"]
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(f"train/{k}", v, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{row['loss']:.4f}" if row.get("loss") is not None else "skip",
                                  lr=f"{row.get('lr', 0):.2e}", tok_s=f"{row.get('tokens_per_s', 0):.0f}")

    def event(self, row: dict) -> None:
        """A non-step record (phase start/end, data report, resume) in events.jsonl."""
        if self.enabled:
            self._events.write(json.dumps(row, default=str) + "\n")

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self.close_bar()
        for fh in (self._fh, self._events):
            if fh is not None:
                fh.close()
        self._fh = self._events = None
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
