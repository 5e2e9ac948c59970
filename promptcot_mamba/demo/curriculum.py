"""The demo's two-phase curriculum, synthesized through the real PromptCoT stages (synth/stages.py).

Phase 1 (the paper's initialization phase, which uses existing open datasets) gets *foundational*
single-concept problems from the domain generator; the teacher stage writes their worked solutions
and the exporter turns them into SFT pairs.

Phase 2 (the paper's advanced phase, PromptCoT data) is synthesized the way §2.2 describes, with the
procedural client (demo/client.py) in every LLM role:

    composed seed problems → concepts → concept statistics → combinations → rationale + problem
      → judge → dedup → decontam → teacher solutions → SFT pairs

One deviation, forced by the toy domain: it has six concepts (three operations and three structures:
order of operations, the intermediate value as a second operand, a chain of three), so the
combination sampler (which returns *unique* concept sets of three) finds at most twenty
combinations; each combination is instantiated many times, with a different per-problem seed, to
reach the requested number of problems ("expand" below). Everything else is the stage code a real run
uses.

Held-out problems never reach training: the domain's splits are disjoint by construction, and every
synthesized problem whose statement equals a held-out one is removed (counted in the summary).
Decontamination against the paper's benchmarks runs whenever the benchmark folder ($PCM_BENCHMARK_DIR)
is present. The demo's statements ("Compute (59 + 97) - 13.") are far shorter than the stage's 8-gram
window; the stage matches such short texts only by an item's whole token sequence with four content
words, so none is removed (measured 2026-11-27: 0 of 300 composed and 0 of 300 foundational
statements flagged; an earlier version removed 297 of 297).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptcot_mamba.common.files import iter_jsonl, read_jsonl, write_jsonl
from promptcot_mamba.demo.client import ProceduralClient
from promptcot_mamba.demo.domain import Splits, sample_problems


@dataclass
class CurriculumResult:
    foundational_path: Path  # phase 1 SFT pairs
    composed_path: Path  # phase 2 SFT pairs (PromptCoT chain)
    stages: list[dict] = field(default_factory=list)  # per stage: in / done / failed / filtered
    summary: dict[str, Any] = field(default_factory=dict)


def synth_config(seed: int, *, n_combos: int) -> dict:
    """The SynthConfig the demo runs the stages with (recorded in every manifest)."""
    return {
        "domain": "math", "seed": seed, "chunk_size": 256,
        "seeds": {"path": "seeds.jsonl", "field": "problem"},
        "concepts": {"num_concepts": 5, "max_tokens": 128, "temperature": 0.0, "parse_retries": 0},
        # hashing embeddings: offline and instant; the combination sampler only needs a geometry
        "embeddings": {"backend": "hashing", "dim": 64},
        # three of the six concepts (three operations, three structures; demo/client.py) per combination.
        # The scores are co-occurrence counts (up to the 48 seeds) plus a cosine: at temperature 0.5
        # every draw took "order of operations" and its top partner (6 distinct sets in 320 tries);
        # at 20, 16 of 16 asked for (measured on the default preset, 2026-12-01)
        "sampling": {"num_problems": n_combos, "size": 3, "temperature": 20.0,
                     "levels": ["multi-step arithmetic"]},
        "problems": {"prompt_style": "instruct", "max_tokens": 256, "temperature": 0.7, "parse_retries": 1},
        "judge": {"keep_policy": "all_perfect", "max_tokens": 256, "temperature": 0.0, "parse_retries": 0},
        # exact or near-exact repeats only: statements differ only in their numbers by design
        "dedup": {"threshold": 0.95, "num_perm": 64},
        "decontam": {"ngram": 8, "threshold": 0.5},
        "teacher": {"k": 1, "mode": "completion", "max_tokens": 1024, "temperature": 0.0,
                    "format_retries": 0, "min_agreement": 0.0, "min_valid": 1, "responses_per_problem": 1},
    }


def _benchmarks_available() -> bool:
    try:
        from promptcot_mamba.synth.decontam import default_benchmark_dir

        d = default_benchmark_dir()
        return d.is_dir() and any(d.rglob("*.jsonl"))
    except Exception:
        return False


def _stage_row(name: str, manifest: dict) -> dict:
    c = manifest.get("counts", {})
    return {"stage": name, "in": manifest.get("records_in", 0), "done": c.get("done", 0),
            "failed": c.get("failed", 0), "filtered": c.get("filtered", 0)}


def build_curriculum(splits: Splits, out_dir: str | Path, *, seed: int, n_composed: int, n_seeds: int = 48,
                     n_combos: int = 16, restate: bool = False, progress: bool = True) -> CurriculumResult:
    """Synthesize both phases' SFT files under out_dir (synth/ holds every stage's records); the
    decontamination stage runs when the benchmark folder is present."""
    from promptcot_mamba.synth.config import SynthConfig
    from promptcot_mamba.synth.records import make_record, stable_id
    from promptcot_mamba.synth.stages import run_stage

    out = Path(out_dir)
    sdir = out / "synth"
    sdir.mkdir(parents=True, exist_ok=True)
    cfg_dict = synth_config(seed, n_combos=n_combos)
    use_decontam = _benchmarks_available()
    cfg = SynthConfig.from_dict(cfg_dict)
    client = ProceduralClient(restate=restate)
    clients = {"extractor": client, "generator": client, "judges": [client], "teacher": client, "tests": client}
    stages: list[dict] = []

    def stage(name: str, src: Path, dst: Path, label: str | None = None) -> Path:
        m = run_stage(name, src, dst, clients, cfg, progress=progress)
        stages.append(_stage_row(label or name, m))
        return dst

    # ---- phase 1: foundational problems → teacher solutions → SFT pairs
    f_in = sdir / "p1_00_problems.jsonl"
    write_jsonl(f_in, [make_record(stable_id("f", p.problem), "seeds", problem=p.problem, concepts=list(p.concepts),
                                   provenance={"seeds": {"generator": "demo.domain", "kind": p.kind}})
                       for p in splits.train_foundational])
    stage("solutions", f_in, sdir / "p1_01_solutions.jsonl", "phase 1: solutions")
    f_sft = stage("export", sdir / "p1_01_solutions.jsonl", sdir / "p1_02_sft.jsonl", "phase 1: export")

    # ---- phase 2: the PromptCoT chain
    held = {p.problem for p in splits.test_foundational} | {p.problem for p in splits.test_composed}
    seeds = sample_problems(seed * 1000 + 5, "composed", n_seeds, exclude=held)
    seeds_path = sdir / "p2_00_seeds.jsonl"
    write_jsonl(seeds_path, [{"id": stable_id("seed", p.problem), "problem": p.problem} for p in seeds])
    stage("concepts", seeds_path, sdir / "p2_01_concepts.jsonl")
    stage("concept_stats", sdir / "p2_01_concepts.jsonl", sdir / "p2_02_concept_stats.jsonl")
    stage("combos", sdir / "p2_02_concept_stats.jsonl", sdir / "p2_03_combos.jsonl")
    combos = [r for r in read_jsonl(sdir / "p2_03_combos.jsonl") if r.get("status") == "done"]
    if not combos:
        raise RuntimeError(f"{sdir / 'p2_03_combos.jsonl'}: the combination sampler produced no combinations")
    expanded = []
    for i in range(n_composed):
        c = combos[i % len(combos)]
        expanded.append(make_record(stable_id("p", seed, i, c["concepts"]), "combos", concepts=c["concepts"],
                                    level=c.get("level"), domain="math",
                                    provenance={**(c.get("provenance") or {}),
                                                "expand": {"combination": c["id"], "instance": i}}))
    exp_path = sdir / "p2_03b_expanded.jsonl"
    write_jsonl(exp_path, expanded)
    stages.append({"stage": "expand (demo)", "in": len(combos), "done": len(expanded), "failed": 0, "filtered": 0})
    stage("problems", exp_path, sdir / "p2_04_problems.jsonl")
    stage("judge", sdir / "p2_04_problems.jsonl", sdir / "p2_05_judged.jsonl")
    last = stage("dedup", sdir / "p2_05_judged.jsonl", sdir / "p2_06_dedup.jsonl")
    if use_decontam:
        last = stage("decontam", last, sdir / "p2_07_decontam.jsonl")
    stage("solutions", last, sdir / "p2_08_solutions.jsonl")
    c_sft = stage("export", sdir / "p2_08_solutions.jsonl", sdir / "p2_09_sft.jsonl")

    # ---- final SFT files, with any held-out statement removed
    data = out
    f_path, n_f_drop = _filter_heldout(f_sft, data / "sft_foundational.jsonl", held)
    c_path, n_c_drop = _filter_heldout(c_sft, data / "sft_composed.jsonl", held)
    summary = {
        "phase 1 pairs": _count(f_path), "phase 2 pairs": _count(c_path),
        "seed problems": len(seeds), "concepts found": _count(sdir / "p2_02_concept_stats.jsonl"),
        "combinations sampled": len(combos),
        "held-out overlaps removed": n_f_drop + n_c_drop,
        "decontamination vs paper benchmarks": "ran" if use_decontam else
        "skipped (no benchmark folder: set PCM_BENCHMARK_DIR)",
        "llm calls by stage": dict(client.calls),
    }
    return CurriculumResult(f_path, c_path, stages, summary)


def _count(path: Path) -> int:
    return sum(1 for _ in iter_jsonl(path))


def _problem_of(prompt: str) -> str:
    from promptcot_mamba.text.prompts import MATH_SUFFIX

    return prompt[: -len(MATH_SUFFIX)] if prompt.endswith(MATH_SUFFIX) else prompt


def _filter_heldout(src: Path, dst: Path, held: set[str]) -> tuple[Path, int]:
    rows = read_jsonl(src)
    kept = [r for r in rows if _problem_of(r["prompt"]) not in held]
    write_jsonl(dst, kept)
    return dst, len(rows) - len(kept)

