"""The whole PromptCoT chain over one output folder.

`run_pipeline(config, clients, out_dir)` runs the stages in order, each reading the previous one's
file; finished stages are skipped and an interrupted one resumes (stages.run_stage), so rerunning
the same command after a crash or SIGKILL completes the run with the same final output. The SFT
pairs end in `out_dir/sft.jsonl`; `out_dir/summary.json` (written last) holds the counts per stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptcot_mamba.common.files import atomic_write_json
from promptcot_mamba.synth.config import SynthConfig
from promptcot_mamba.synth.decontam import default_benchmark_dir
from promptcot_mamba.synth.records import STATUSES
from promptcot_mamba.synth.stages import SPECS, STAGES, Clients, run_stage

STAGE_FILES = {s.name: s.output for s in SPECS}


@dataclass
class PipelineResult:
    out_dir: Path
    sft_path: Path
    manifests: dict[str, dict]

    def table(self) -> list[dict]:
        rows = []
        for name in STAGES:
            m = self.manifests.get(name)
            if m is None:
                continue
            c = m.get("counts", {})
            rows.append({"stage": name, "in": m.get("records_in"), **{s: c.get(s, 0) for s in STATUSES},
                         "seconds": m.get("seconds")})
        return rows

    def format_table(self) -> str:
        rows = self.table()
        head = f"{'stage':<14}{'in':>8}{'done':>8}{'failed':>8}{'filtered':>10}{'seconds':>10}"
        lines = [head, "-" * len(head)]
        for r in rows:
            lines.append(f"{r['stage']:<14}{r['in'] or 0:>8}{r['done']:>8}{r['failed']:>8}{r['filtered']:>10}"
                         f"{(r['seconds'] or 0):>10.1f}")
        return "\n".join(lines)


def resolve_seeds_path(cfg: SynthConfig) -> Path:
    p = Path(cfg.seeds.path)
    if p.is_absolute() or p.exists():
        return p
    bdir = Path(cfg.decontam.benchmark_dir) if cfg.decontam.benchmark_dir else default_benchmark_dir()
    cand = bdir / p
    if cand.exists():
        return cand
    raise FileNotFoundError(f"seed file {p} not found (also looked in {bdir}; set PCM_BENCHMARK_DIR)")


def run_pipeline(config: SynthConfig | dict | str | Path, clients: Any = None, out_dir: str | Path = "synth_out",
                 *, seeds_path: str | Path | None = None, stages: list[str] | None = None, progress: bool = True,
                 force: bool = False, retry_failed: bool = False) -> PipelineResult:
    """Run the chain (or the listed `stages`, in chain order) into `out_dir`.

    `clients`: one LLMClient for every role, a dict by role (extractor, generator, judges, teacher,
    tests, default), or None to build OpenAIClients from the config's endpoint."""
    if isinstance(config, (str, Path)):
        cfg = SynthConfig.from_yaml(config)
    elif isinstance(config, dict):
        cfg = SynthConfig.from_dict(config)
    else:
        cfg = config
    if clients is None:
        clients = Clients.from_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = [s for s in STAGES if stages is None or s in stages]
    unknown = set(stages or []) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages: {', '.join(STAGES)}")
    atomic_write_json(out_dir / "config.json", cfg.to_dict())
    prev = Path(seeds_path) if seeds_path else resolve_seeds_path(cfg)
    manifests: dict[str, dict] = {}
    t0 = time.time()
    for name in STAGES:
        out = out_dir / STAGE_FILES[name]
        if name in wanted:
            manifests[name] = run_stage(name, prev, out, clients, cfg, progress=progress, force=force,
                                        retry_failed=retry_failed)
        prev = out
    result = PipelineResult(out_dir, out_dir / STAGE_FILES["export"], manifests)
    summary = {"stages": result.table(), "seconds": round(time.time() - t0, 3), "sft": str(result.sft_path)}
    atomic_write_json(out_dir / "summary.json", summary)
    return result
