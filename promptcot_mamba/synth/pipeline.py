"""The whole PromptCoT chain over one output folder, and the clients a config asks for.

`run_pipeline(config, clients, out_dir)` runs the stages in order, each reading the previous one's
file; finished stages are skipped and an interrupted one resumes (stages.run_stage), so rerunning
the same command after a crash or SIGKILL completes the run with the same final output. The SFT
pairs end in `out_dir/sft.jsonl`; `out_dir/summary.json` (written last) holds the counts per stage.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptcot_mamba.synth.config import SynthConfig
from promptcot_mamba.synth.decontam import default_benchmark_dir
from promptcot_mamba.synth.records import STATUSES
from promptcot_mamba.synth.stages import STAGES, run_stage

STAGE_FILES = {
    "concepts": "01_concepts.jsonl", "concept_stats": "02_concept_stats.jsonl", "combos": "03_combos.jsonl",
    "problems": "04_problems.jsonl", "judge": "05_judged.jsonl", "dedup": "06_dedup.jsonl",
    "decontam": "07_decontam.jsonl", "solutions": "08_solutions.jsonl", "export": "sft.jsonl",
}


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


def clients_from_config(cfg: SynthConfig) -> dict[str, Any]:
    """OpenAIClients for the roles of `cfg.models`, one per distinct model name, on the config's
    endpoint (or OPENAI_BASE_URL / $api_key_env)."""
    from promptcot_mamba.llm.openai_client import OpenAIClient

    e = cfg.endpoint
    key = e.api_key if e.api_key is not None else os.environ.get(e.api_key_env)
    cache: dict[str | None, OpenAIClient] = {}

    def get(model: str | None) -> OpenAIClient:
        if model not in cache:
            cache[model] = OpenAIClient(e.base_url, api_key=key, model=model, max_concurrency=e.max_concurrency,
                                        timeout_s=e.timeout_s, max_retries=e.max_retries)
        return cache[model]

    m = cfg.models
    teacher = get(m.teacher)
    return {"extractor": get(m.extractor), "generator": get(m.generator),
            "judges": [get(j) for j in (m.judges or [None])], "teacher": teacher,
            "tests": get(m.tests) if m.tests else teacher}


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
        clients = clients_from_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = [s for s in STAGES if stages is None or s in stages]
    unknown = set(stages or []) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages: {', '.join(STAGES)}")
    (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
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
    tmp = out_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out_dir / "summary.json")
    return result
