"""The PromptCoT stages (paper §2.2) in chain order, each a transform from a JSONL file to a JSONL
file with a manifest written last, resumable and runnable alone:

  concepts       seed problems → 5 foundational concepts each              (LLM: extractor)
  concept_stats  concept lists → frequency, co-occurrence, embeddings      (embedding model)
  combos         statistics → concept combinations + difficulty levels      (sampler, seeded)
  problems       combos → rationale + problem (BEGIN/END markers)           (LLM: generator)
  judge          problems → verdicts on five criteria, keep policy          (LLM: judges)
  dedup          problems → near-duplicates removed (MinHash LSH + Jaccard)
  decontam       problems → benchmark overlaps removed (n-grams)
  solutions      problems → k long-CoT samples, format checks, agreement    (LLM: teacher, tests; sandbox)
  export         solutions → SFT pairs (docs/formats.md "SFT records")

`SPECS` is the one table of them; the LLM stages live in llm_stages.py, the file stages in
file_stages.py. Python API: `run_stage(name, in_path, out_path, clients, config)`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptcot_mamba.common.files import atomic_write_json, iter_jsonl
from promptcot_mamba.synth import file_stages as F
from promptcot_mamba.synth import llm_stages as L
from promptcot_mamba.synth.config import SynthConfig
from promptcot_mamba.synth.llm_stages import (  # noqa: F401  (re-exported: demo, tests and benchmarks)
    Clients,
    concepts_stage,
    keep_by_policy,
    problems_stage,
    teacher_request,
)
from promptcot_mamba.synth.prompts import PROMPT_VERSIONS
from promptcot_mamba.synth.records import (
    FAILED,
    FILTERED,
    count_statuses,
    done_records,
    fingerprint,
    manifest_path,
    pending_path,
    read_manifest,
    write_manifest,
)
from promptcot_mamba.synth.runner import LLMStage, run_llm_stage


@dataclass(frozen=True)
class StageSpec:
    """One stage: an LLM stage has `build` (config, clients → LLMStage) and the client `roles` it
    calls; a file stage has `run` (in_path, out_path, config, progress → manifest info)."""

    name: str
    output: str  # its file in a pipeline folder (the next stage's input)
    sections: tuple[str, ...]  # the config sections its output depends on (its fingerprint)
    run: Callable[[Path, Path, SynthConfig, bool], dict] | None = None
    build: Callable[[SynthConfig, Clients], LLMStage] | None = None
    roles: tuple[str, ...] = ()
    inputs: Callable[[Path, SynthConfig], list[dict]] = lambda path, cfg: list(done_records(path))

    @property
    def llm(self) -> bool:
        return self.build is not None


SPECS = (
    StageSpec("concepts", "01_concepts.jsonl", ("concepts", "seeds"), build=L.concepts_stage,
              roles=("extractor",), inputs=L.concept_inputs),
    StageSpec("concept_stats", "02_concept_stats.jsonl", ("embeddings",), run=F.concept_stats),
    StageSpec("combos", "03_combos.jsonl", ("sampling",), run=F.combos),
    StageSpec("problems", "04_problems.jsonl", ("problems",), build=L.problems_stage, roles=("generator",)),
    StageSpec("judge", "05_judged.jsonl", ("judge",), build=L.judge_stage, roles=("judges",)),
    StageSpec("dedup", "06_dedup.jsonl", ("dedup",), run=F.dedup),
    StageSpec("decontam", "07_decontam.jsonl", ("decontam",), run=F.decontam),
    StageSpec("solutions", "08_solutions.jsonl", ("teacher",), build=L.solutions_stage, roles=("teacher", "tests")),
    StageSpec("export", "sft.jsonl", (), run=F.export),
)
STAGES = tuple(s.name for s in SPECS)
_BY_NAME = {s.name: s for s in SPECS}


def spec(name: str) -> StageSpec:
    if name not in _BY_NAME:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return _BY_NAME[name]


# ------------------------------------------------------------------------------------------------
# running one stage
class StaleOutputError(RuntimeError):
    pass


def _input_fingerprint(in_path: Path) -> str:
    m = read_manifest(in_path)
    if m and m.get("fingerprint"):
        return m["fingerprint"]
    h = hashlib.sha1()
    with open(in_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def stage_fingerprint(name: str, in_path: Path, cfg: SynthConfig, clients: Clients | None) -> str:
    s, d = spec(name), cfg.to_dict()
    parts = {"stage": name, "input": _input_fingerprint(in_path), "seed": cfg.seed, "domain": cfg.domain,
             "sections": {sec: d[sec] for sec in s.sections}}
    if clients is not None and s.llm:
        parts["models"] = [str(getattr(c, "fingerprint_name", None) or L.model_name(c)) for c in clients.of(s.roles)]
    return fingerprint(parts)


def run_stage(name: str, in_path: str | Path, out_path: str | Path, clients: Any = None,
              config: SynthConfig | dict | None = None, *, progress: bool = True, force: bool = False,
              retry_failed: bool = False) -> dict:
    """Run one stage from `in_path` to `out_path` and return its manifest.

    Resumes a stage that was interrupted (same settings), skips one that finished (manifest with the
    same fingerprint), and refuses to mix outputs of different settings unless `force=True`
    (which starts the stage over). `retry_failed` re-runs the records that failed last time."""
    stage = spec(name)
    cfg = config if isinstance(config, SynthConfig) else SynthConfig.from_dict(config or {})
    in_path, out_path = Path(in_path), Path(out_path)
    if not in_path.exists():
        raise FileNotFoundError(f"stage {name}: input {in_path} not found")
    cl = Clients.resolve(clients) if stage.llm else None
    fp = stage_fingerprint(name, in_path, cfg, cl)
    pending = pending_path(out_path)
    man = read_manifest(out_path)
    if man is not None and not force and not retry_failed:
        if man.get("fingerprint") == fp:
            return man
        raise StaleOutputError(f"{out_path} was made with other settings or input (fingerprint "
                               f"{man.get('fingerprint')} ≠ {fp}); pass force=True / --force to redo it")
    if force:
        for p in (out_path, manifest_path(out_path), pending):
            p.unlink(missing_ok=True)
    elif pending.exists():
        old = json.loads(pending.read_text() or "{}").get("fingerprint")
        if old != fp:
            raise StaleOutputError(f"{out_path} holds a partial run with other settings; use force=True / --force")
    manifest_path(out_path).unlink(missing_ok=True)
    atomic_write_json(pending, {"fingerprint": fp})
    t0 = time.time()
    info: dict[str, Any]
    if stage.llm:
        records = stage.inputs(in_path, cfg)
        n_in = len(records)
        run_llm_stage(stage.build(cfg, cl), records, out_path, chunk_size=cfg.chunk_size, progress=progress,
                      retry_failed=retry_failed)
        info = {"models": cl.names(stage.roles)}
    else:
        info = dict(stage.run(in_path, out_path, cfg, progress))
        n_in = sum(1 for _ in done_records(in_path))
    counts = count_statuses(out_path)
    body = {"stage": name, "fingerprint": fp, "input": str(in_path), "records_in": n_in, "counts": counts,
            "seconds": round(time.time() - t0, 3), "prompt_versions": PROMPT_VERSIONS, **info}
    if stage.llm:
        body["failures"] = _failure_examples(out_path)
    write_manifest(out_path, body)
    pending.unlink(missing_ok=True)
    return read_manifest(out_path) or body


def _failure_examples(path: Path, limit: int = 5) -> list[dict]:
    out = []
    for r in iter_jsonl(path):
        if r.get("status") in (FAILED, FILTERED):
            out.append({"id": r["id"], "status": r["status"], "reason": r.get("reason")})
            if len(out) >= limit:
                break
    return out
