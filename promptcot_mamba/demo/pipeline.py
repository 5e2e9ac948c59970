"""`run_demo`: the paper end to end at laptop scale — synthesize, train, evaluate, compare, report.

`run_demo` is the whole run as five steps, each a function below:

    1. synthesize_data     held-out sets drawn first; phase 1 and phase 2 SFT files through the real
                           synthesis stages with the procedural client (demo/curriculum.py)
    2. build_tokenizer     a small digit-splitting BPE trained on the run's own text
    3. train_and_evaluate  the preset's recipe through train.run_recipe for Mamba-2 and, with the same
                           data, phases and optimizer, for a Llama of about the same parameter count,
                           once per training seed; then each phase's checkpoint (and the untrained
                           Mamba-2) on the held-out foundational and composed sets, avg@k through the
                           evaluation harness; the seeds pooled into intervals (demo/stats.py) and
                           the wrong samples classified (demo/errors.py)
    4. measure_efficiency  decode tokens/s and context memory against generated length (Figure 2)
    5. write_results       results.json, report.md and plots/*.png beside the run's data, tokenizer,
                           checkpoints and per-sample evaluation rows

Every (architecture, training seed) pair trains and is evaluated in its own process (one `ArchJob`),
one torch thread each, `run.workers` processes at a time: small models use one core poorly, so
separate single-threaded processes are the fastest way through the seeds on a few cores, and
single-threaded math is reproducible, so the same seeds give the same tables on one machine. The
data (curriculum, tokenizer, held-out sets) comes from the run's seed and is shared by every training
seed; a training seed changes the initialisation, the data order and the evaluation's sampling.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptcot_mamba.common.files import atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from promptcot_mamba.demo.curriculum import CurriculumResult, build_curriculum
from promptcot_mamba.demo.domain import Problem, make_splits
from promptcot_mamba.demo.settings import DataSettings, DemoSettings, EfficiencySettings, EvalSettings

if TYPE_CHECKING:
    from promptcot_mamba.text.tokenizer import Tokenizer
    from promptcot_mamba.train.runner import RunResult


class DemoError(RuntimeError):
    """The demo cannot start (e.g. its output folder holds something else)."""


MAMBA = "Mamba-2"
TRANSFORMER = "Llama"
TYPES = {MAMBA: "attention-free (SSM)", TRANSFORMER: "Transformer"}
# Table 1's rows, top to bottom: the untrained reference, the Transformer, then Mamba-2
ROW_ORDER = [("untrained", MAMBA), ("phase 1 only", TRANSFORMER), ("phase 1 + phase 2", TRANSFORMER),
             ("phase 1 only", MAMBA), ("phase 1 + phase 2", MAMBA)]


# ------------------------------------------------------------------------ what the steps hand on


@dataclass(frozen=True)
class DemoData:
    """Step 1's output: the SFT files of both phases and the held-out problems."""

    folder: Path
    curriculum: CurriculumResult
    held_out: dict[str, tuple[Problem, ...]]  # "foundational" / "composed" → its problems


@dataclass(frozen=True)
class EvalJob:
    """The held-out evaluation every model of the run gets (the same for both architectures)."""

    tokenizer_dir: str
    held_out: dict[str, tuple[Problem, ...]]
    protocol: EvalSettings
    out_dir: str  # per-sample rows: <out_dir>/<model slug>-<set>.jsonl
    seed: int


@dataclass(frozen=True)
class ModelToEvaluate:
    training: str  # Table 1's training column: "untrained" | "phase 1 only" | "phase 1 + phase 2"
    slug: str  # file-name stem of its evaluation rows
    folder: str | None = None  # a checkpoint; None: the untrained model built from `init_model`
    init_model: dict | None = None  # a recipe's model section


@dataclass(frozen=True)
class ArchJob:
    """One architecture end to end, in one process (a spawned worker for the second one, so every
    field pickles): train every phase of `recipe`, then evaluate the first and last phase's
    checkpoints and, with `with_untrained`, the untrained model."""

    arch: str  # MAMBA or TRANSFORMER
    slug: str  # its folder under train/ and the prefix of its evaluation rows
    seed: int  # the training seed (initialisation, data order, evaluation sampling)
    recipe: dict[str, Any]  # train/recipe.py layout, tokenizer and seed filled in
    data_dir: str  # the recipe's dataset paths are relative to it
    train_dir: str
    evaluation: EvalJob
    with_untrained: bool
    threads: int  # torch threads of the process
    progress: bool


@dataclass(frozen=True)
class ArchResult:
    arch: str
    seed: int
    model: dict[str, Any]  # the recipe's model section it trained
    run: RunResult  # per-phase checkpoints and summaries, the metrics file
    rows: list[dict[str, Any]]  # its rows of Table 1
    cpu_train: float  # CPU seconds of its process
    cpu_eval: float
    steps: int  # optimizer steps over all phases


# ----------------------------------------------------------------------------------- the run


def run_demo(preset: str | Path | DemoSettings = "default", out_dir: str | Path = "runs/demo", *,
             seed: int | None = None, seeds: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the whole demo into out_dir and return the results dict (also written as results.json).
    seed: the run's seed (data, and the first training seed); seeds: training seeds per architecture
    (default: the preset's run.seeds)."""
    settings = preset if isinstance(preset, DemoSettings) else DemoSettings.load(preset)
    seed = settings.seed if seed is None else seed
    n_seeds = settings.run.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise DemoError(f"seeds must be >= 1, got {n_seeds}")
    train_seeds = [seed + j for j in range(n_seeds)]
    out = _fresh_run_folder(Path(out_dir).resolve())
    timing: dict[str, float] = {}
    t_start = time.perf_counter()
    with _process_settings(settings.run.threads):
        _say(f"1/5 synthesizing the curriculum (seed {seed}) …", progress)
        with _timed(timing, "synthesis"):
            data = synthesize_data(settings.data, out / "data", seed=seed, progress=progress)
        tok_dir = out / "tokenizer"
        with _timed(timing, "tokenizer"):
            vocab_size = build_tokenizer(data, tok_dir, settings.data.tokenizer_vocab).vocab_size
        with _timed(timing, "training + evaluation"):
            archs = train_and_evaluate(settings, data, tok_dir, vocab_size, out, seeds=train_seeds,
                                       progress=progress)
        _say("3/5 measuring decode throughput and memory against generated length …", progress)
        first = {a.arch: a for a in reversed(archs)}  # each architecture's first training seed
        with _timed(timing, "efficiency"):
            efficiency = measure_efficiency(settings.efficiency, first[MAMBA].run.final_checkpoint,
                                            first[TRANSFORMER].run.final_checkpoint, tok_dir)
        return write_results(out, settings, seed=seed, data=data, vocab_size=vocab_size, archs=archs,
                             efficiency=efficiency, timing=timing, t_start=t_start, progress=progress)


def synthesize_data(d: DataSettings, folder: Path, *, seed: int, progress: bool) -> DemoData:
    """Step 1: the held-out sets, then both phases' SFT files through the PromptCoT stages."""
    splits = make_splits(seed, n_train_foundational=d.train_foundational, n_train_composed=0,
                         n_test_foundational=d.test_foundational, n_test_composed=d.test_composed)
    cur = build_curriculum(splits, folder, seed=seed, n_composed=d.composed, n_seeds=d.seeds, n_combos=d.combos,
                           restate=d.restate, progress=progress)
    write_replay(folder, d.replay)
    held_out = {"foundational": tuple(splits.test_foundational), "composed": tuple(splits.test_composed)}
    for name, problems in held_out.items():
        write_jsonl(folder / f"test_{name}.jsonl",
                    ({"problem": p.problem, "answer": p.gold, "concepts": list(p.concepts)} for p in problems))
    return DemoData(folder, cur, held_out)


def write_replay(folder: Path, share: float) -> Path:
    """Phase 2 replays a fixed share of phase 1: the first pairs of sft_foundational.jsonl (the file
    order is seeded), as a file of its own so the mixture does not depend on the trainer's sampling
    of a weight."""
    with open(folder / "sft_foundational.jsonl", encoding="utf-8") as f:
        lines = f.readlines()
    path = folder / "sft_replay.jsonl"
    atomic_write_text(path, "".join(lines[: round(share * len(lines))]))
    return path


def build_tokenizer(data: DemoData, folder: Path, vocab_size: int) -> Tokenizer:
    """Step 2: a digit-splitting BPE trained on the run's SFT text (demo/tokenizer_builder.py),
    saved to `folder`; returns the `Tokenizer`."""
    from promptcot_mamba.demo import tokenizer_builder
    from promptcot_mamba.text.prompts import paper_prompt

    cur = data.curriculum
    texts = [f"{r['prompt']}\n{r['response']}" for path in (cur.foundational_path, cur.composed_path)
             for r in read_jsonl(path)]
    # one prompt in the evaluation layout, whose chat wrapper no SFT record contains
    texts += [paper_prompt(p.problem) for p in data.held_out["foundational"][:1]]
    tok = tokenizer_builder.build_tokenizer(texts, vocab_size=vocab_size)
    tok.save(folder)
    return tok


def plan_jobs(settings: DemoSettings, data_dir: Path, tok_dir: Path, vocab_size: int,
              held_out: dict[str, tuple[Problem, ...]], out: Path, *, seeds: list[int],
              archs: tuple[str, ...] = (MAMBA, TRANSFORMER), untrained: bool = True,
              progress: bool = False) -> tuple[list[ArchJob], int]:
    """One `ArchJob` per architecture and training seed: the preset's recipe for Mamba-2, the same
    recipe with a Llama of about its size for the Transformer; training under out/train/<model>/
    seed<s>, evaluation on `held_out` with rows under out/eval. The slower model's jobs come first:
    with fewer workers than jobs, longest-first packs the cores best. Returns (jobs, the Mamba-2
    model's parameter count)."""
    from promptcot_mamba.model.config import Mamba2Config
    from promptcot_mamba.train.models import round_vocab

    vocab = round_vocab(vocab_size)
    mamba_params = Mamba2Config.from_dict({"vocab_size": vocab, **settings.recipe["model"]["config"]}).num_parameters()
    models = {MAMBA: ("mamba2", None), TRANSFORMER: ("transformer", matched_baseline(settings, mamba_params, vocab))}

    def job(arch: str, seed: int) -> ArchJob:
        slug, model = models[arch]
        evaluation = EvalJob(str(tok_dir), held_out, settings.eval, str(out / "eval"), seed)
        # the untrained reference once, with the first seed: it never reaches an answer, and its
        # generations run to max_new_tokens, which made it the costliest evaluation of a seed
        return ArchJob(arch, f"{slug}-seed{seed}", seed, _recipe_for(settings, tok_dir, seed, model), str(data_dir),
                       str(out / "train" / slug / f"seed{seed}"), evaluation,
                       untrained and arch == MAMBA and seed == seeds[0], settings.run.threads, progress)

    return [job(arch, s) for arch in (MAMBA, TRANSFORMER) if arch in archs for s in seeds], mamba_params


def train_and_evaluate(settings: DemoSettings, data: DemoData, tok_dir: Path, vocab_size: int, out: Path, *,
                       seeds: list[int], progress: bool) -> list[ArchResult]:
    """Step 3: Mamba-2 on the preset's recipe and a Llama of about its size on the same recipe, once
    per training seed, each trained and then evaluated in its own process (`run_arch_job`); returns
    the results ordered by architecture (Mamba-2 first), then seed."""
    workers = min(settings.run.workers, 2 * len(seeds))
    # in spawned workers a job shows no bars (they would interleave); the main process counts jobs
    jobs, mamba_params = plan_jobs(settings, data.folder, tok_dir, vocab_size, data.held_out, out, seeds=seeds,
                                   progress=progress and workers < 2)
    sizes = {name: len(ps) for name, ps in data.held_out.items()}
    _say(f"2/5 training {MAMBA} ({mamba_params / 1e6:.2f}M parameters) and {TRANSFORMER} on the same data with "
         f"{len(seeds)} training seed(s) each ({len(jobs)} jobs, {max(workers, 1)} process(es) × "
         f"{settings.run.threads} thread(s)), then evaluating each on {sizes['foundational']} + "
         f"{sizes['composed']} held-out problems, avg@{settings.eval.samples} …", progress)
    results = _run_jobs(jobs, workers=workers, progress=progress)
    order = {MAMBA: 0, TRANSFORMER: 1}
    return sorted(results, key=lambda a: (order[a.arch], a.seed))


def measure_efficiency(e: EfficiencySettings, mamba_folder: str, llama_folder: str,
                       tokenizer_dir: Path) -> dict[str, Any]:
    """Step 4: both final checkpoints decode the same prompt; tokens/s and context bytes at each length."""
    import torch
    from transformers import AutoModelForCausalLM

    from promptcot_mamba.demo.efficiency import findings, measure_mamba, measure_transformer
    from promptcot_mamba.model.lm import Mamba2LM
    from promptcot_mamba.text.prompts import paper_prompt
    from promptcot_mamba.text.tokenizer import Tokenizer

    prompt = Tokenizer.from_pretrained(tokenizer_dir).encode(paper_prompt("Compute 12 + 34."))
    mamba = Mamba2LM.from_pretrained(mamba_folder)
    llama = AutoModelForCausalLM.from_pretrained(llama_folder, dtype=torch.float32).eval()
    lengths = list(e.lengths)
    limit = getattr(llama.config, "max_position_embeddings", None)
    if limit is not None:
        lengths = [n for n in lengths if len(prompt) + n <= limit]
    # warm-up (first calls allocate), then the measured runs
    measure_mamba(mamba, prompt, [4], batch=e.batch)
    measure_transformer(llama, prompt, [4], batch=e.batch)
    pts = measure_mamba(mamba, prompt, lengths, batch=e.batch, label=MAMBA)
    pts += measure_transformer(llama, prompt, lengths, batch=e.batch, label=TRANSFORMER)
    return {"points": [p.to_dict() for p in pts], "batch": e.batch, "prompt_tokens": len(prompt),
            "description": (f"Batch of {e.batch} sequences, prompt of {len(prompt)} tokens, greedy decoding one "
                            f"token per sequence per step; tokens/s is the rate over the window since the previous "
                            f"length (whole batch); context memory is the bytes of the Mamba-2 state or of the "
                            f"Transformer's KV cache at that length. Wall-clock rates on a shared CPU are noisy."),
            "findings": findings(pts, ssm=MAMBA, transformer=TRANSFORMER)}


def write_results(out: Path, settings: DemoSettings, *, seed: int, data: DemoData, vocab_size: int,
                  archs: list[ArchResult], efficiency: dict[str, Any], timing: dict[str, float],
                  t_start: float, progress: bool) -> dict[str, Any]:
    """Step 5: results.json (everything measured), then report.md and the plots made from it."""
    from promptcot_mamba.demo.aggregate import comparisons, error_analysis, pool_rows
    from promptcot_mamba.demo.report import write_report
    from promptcot_mamba.train.metrics import read_metrics

    ev = settings.eval
    sets = {name: len(ps) for name, ps in data.held_out.items()}
    seeds = sorted({a.seed for a in archs})
    rows = pool_rows([(a.arch, a.seed, r) for a in archs for r in a.rows], list(sets), order=ROW_ORDER)
    timing["total"] = time.perf_counter() - t_start
    cpu = {arch: {"training": [round(a.cpu_train, 1) for a in archs if a.arch == arch],
                  "evaluation": [round(a.cpu_eval, 1) for a in archs if a.arch == arch],
                  "training per step": [round(a.cpu_train / max(1, a.steps), 4) for a in archs if a.arch == arch]}
           for arch in (MAMBA, TRANSFORMER)}
    results = {
        "config": {"name": settings.name, "seed": seed, "training_seeds": seeds, "preset": settings.source,
                   "chosen_by": settings.chosen_by,
                   "threads": settings.run.threads, "workers": settings.run.workers, "cpu_count": os.cpu_count(),
                   "baseline_model": next(a.model for a in archs if a.arch == TRANSFORMER)},
        "data": {**data.curriculum.summary, "held-out foundational": sets["foundational"],
                 "held-out composed": sets["composed"],
                 "tokenizer": f"byte-level BPE, digits split, {vocab_size} tokens (trained on this run's text)"},
        "synthesis_stages": data.curriculum.stages,
        "protocol": {"samples_per_problem": ev.samples, "temperature": ev.temperature, "top_p": ev.top_p,
                     "max_new_tokens": ev.max_new_tokens, "sets": sets, "seeds": len(seeds),
                     "description": (f"the paper's prompt (ChatML, `<think>` prefilled); {ev.samples} samples per "
                                     f"problem at temperature {ev.temperature}, top-p {ev.top_p}, up to "
                                     f"{ev.max_new_tokens} new tokens; graded on the last `\\boxed{{}}` after "
                                     f"`</think>` by the strict math grader; avg@{ev.samples} = mean accuracy over "
                                     f"all samples (as the paper's avg@16), then the mean over {len(seeds)} training "
                                     "seed(s) with a 95% interval over seeds and problems (demo/stats.py).")},
        "accuracy": rows,
        "comparisons": comparisons(rows, list(sets), archs=(MAMBA, TRANSFORMER)),
        "errors": error_analysis(rows, list(sets)),
        "efficiency": efficiency,
        "losses": {f"{a.arch} (seed {a.seed})": [{"step": r["step"], "phase": r["phase"], "loss": r.get("loss")}
                                                 for r in read_metrics(a.run.metrics_path) if "loss" in r]
                   for a in archs},
        "training": [f"{a.arch}, seed {a.seed}, phase `{p.name}`: {p.steps} steps, final loss {_fmt(p.final_loss)} → "
                     f"`{_rel(p.export_dir, out)}`" for a in archs for p in a.run.phases],
        "timing": timing,
        "cpu": cpu,
        "files": [f"`{name}`" for name in ("data", "tokenizer", "train", "eval")],
    }
    atomic_write_json(out / "results.json", results, indent=1)
    _say("4/5 writing the report …", progress)
    results["report"] = str(write_report(results, out))
    timing["total"] = time.perf_counter() - t_start
    return results


# ------------------------------------------------------------------ one architecture, one process


def run_arch_job(job: ArchJob) -> ArchResult:
    """Train every phase, then evaluate: the faster model's evaluation overlaps the slower one's
    training when two of these run side by side."""
    from promptcot_mamba.train.recipe import Recipe
    from promptcot_mamba.train.runner import run_recipe

    t0 = time.process_time()
    run = run_recipe(Recipe.from_dict(job.recipe, base_dir=job.data_dir, source=job.recipe["name"]), job.train_dir,
                     progress=job.progress)
    cpu_train = time.process_time() - t0
    first, last = job.recipe["phases"][0]["name"], job.recipe["phases"][-1]["name"]
    models = [ModelToEvaluate("untrained", f"{job.slug}-untrained", init_model=job.recipe["model"])] \
        if job.with_untrained else []
    models += [ModelToEvaluate("phase 1 only", f"{job.slug}-phase1", folder=run.checkpoints[first]),
               ModelToEvaluate("phase 1 + phase 2", f"{job.slug}-phase2", folder=run.checkpoints[last])]
    rows = evaluate_models(job.arch, models, job.evaluation, progress=job.progress)
    return ArchResult(job.arch, job.seed, job.recipe["model"], run, rows, cpu_train,
                      time.process_time() - t0 - cpu_train, sum(p.steps for p in run.phases))


def evaluate_models(arch: str, models: list[ModelToEvaluate], ev: EvalJob, *, progress: bool) -> list[dict]:
    """One Table 1 row per model: its parameter count and avg@k on every held-out set (the details
    beside it), every graded sample written under ev.out_dir."""
    from promptcot_mamba.demo.evaluation import evaluate_client, load_client
    from promptcot_mamba.eval.harness import Graders

    graders = Graders(paper=False, workers=1)
    rows = []
    try:
        for m in models:
            client, model = load_client(m.folder, ev.tokenizer_dir, init_model=m.init_model, seed=ev.seed)
            row = {"model": arch, "arch": arch, "type": TYPES[arch], "training": m.training,
                   "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}
            for set_name, problems in ev.held_out.items():
                res = evaluate_client(client, problems, ev.protocol, seed=ev.seed, graders=graders,
                                      out_path=Path(ev.out_dir) / f"{m.slug}-{set_name}.jsonl", progress=progress,
                                      desc=f"eval {m.slug} {set_name}")
                row[set_name] = res.pop("accuracy")
                row[f"{set_name}_detail"] = res
            rows.append(row)
    finally:
        graders.close()
    return rows


def matched_baseline(settings: DemoSettings, mamba_params: int, vocab_size: int) -> dict[str, Any]:
    """The baseline's model section for train/recipe.py, its MLP width chosen so its parameter
    count is as close as possible to the Mamba-2 model's (Table 1 compares similar sizes)."""
    b = settings.baseline
    cfg = dict(b.config)
    if b.match_parameters:
        d, L = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
        heads, kv = int(cfg["num_attention_heads"]), int(cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
        hd = d // heads
        tied = bool(cfg.get("tie_word_embeddings", True))
        emb = vocab_size * d * (1 if tied else 2)
        attn = d * d * 2 + 2 * d * kv * hd  # q, o and k, v projections
        fixed = emb + L * (attn + 2 * d) + d  # + two RMSNorms per layer and the final one
        ff = max(8, round((mamba_params - fixed) / (3 * d * L) / 8) * 8)  # gate, up, down
        cfg["intermediate_size"] = int(ff)
    return {"kind": "hf", "architecture": b.architecture, "config": cfg}


def _recipe_for(settings: DemoSettings, tokenizer_dir: Path, seed: int, model: dict | None) -> dict[str, Any]:
    """The preset's recipe with this run's tokenizer and seed; with `model`, the baseline's copy."""
    import copy

    raw = {**copy.deepcopy(settings.recipe), "tokenizer": str(tokenizer_dir), "seed": seed}
    if model is not None:
        raw["model"] = model
        raw["name"] = raw.get("name", "demo") + "-baseline"
    return raw


# ---------------------------------------------------------------------------------- processes


@contextmanager
def _process_settings(threads: int):
    """`threads` torch threads, and third-party chatter (weight-loading bars, FutureWarnings) off so
    the terminal shows the demo's own progress; everything is restored on exit."""
    import warnings

    import torch

    with ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            from transformers.utils import logging as hf_logging
        except ImportError:
            pass
        else:
            stack.callback(hf_logging.set_verbosity, hf_logging.get_verbosity())
            if hf_logging.is_progress_bar_enabled():
                stack.callback(hf_logging.enable_progress_bar)
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        if "TOKENIZERS_PARALLELISM" not in os.environ:  # inherited by the spawned worker
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            stack.callback(os.environ.pop, "TOKENIZERS_PARALLELISM", None)
        stack.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(threads)
        yield


# The workers' allocator keeps freed memory instead of returning it to the kernel: with glibc's
# defaults every training step of the Mamba-2 model mmaps and unmaps its large activations again,
# 3k-28k minor page faults and 10-55 ms of system time per step (the Llama's step has none);
# with these settings its CPU-seconds per step fell 8% (0.257 -> 0.237 s at 32 x 128, 1 thread,
# bench_demo_step.py, 2026-12-01). Only the demo's own worker processes get them, and a value the
# user set wins. benchmarks/bench_demo_step.py runs under the same settings.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
                 "MALLOC_TOP_PAD_": str(1 << 28)}


def _run_jobs(jobs: list[ArchJob], *, workers: int, progress: bool) -> list[ArchResult]:
    """Every job, `workers` spawned single-job processes at a time (or, workers < 2, one after the
    other in this process, with the jobs' own progress bars); a bar counts the finished jobs."""
    if workers < 2:
        return [run_arch_job(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    results = []
    with ExitStack() as stack:
        for key, value in WORKER_MALLOC.items():  # inherited by the workers, read by glibc at their start
            if key not in os.environ:
                os.environ[key] = value
                stack.callback(os.environ.pop, key, None)
        pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")))
        bar = stack.enter_context(tqdm(total=len(jobs), disable=not progress, desc="train + evaluate", unit="job"))
        for fut in as_completed([pool.submit(_worker, j, os.getpid()) for j in jobs]):
            r = fut.result()
            results.append(r)
            bar.update(1)
            if progress:
                bar.write(f"[demo] {r.arch} seed {r.seed}: trained in {r.cpu_train:.0f} CPU-s "
                          f"({r.cpu_train / max(1, r.steps):.3f} per step), evaluated in {r.cpu_eval:.0f}")
    return results


def _worker(job: ArchJob, parent: int) -> ArchResult:
    """`run_arch_job` in the spawned worker: the process is the demo's own, so its settings stay
    (including one inter-op thread, which torch cannot change back); it exits when the demo process
    goes away (a worker of a killed pool would otherwise finish its training job as an orphan)."""
    import threading

    import torch

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(2.0)

    threading.Thread(target=watch, daemon=True).start()
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    with _process_settings(job.threads):
        return run_arch_job(job)


# ------------------------------------------------------------------------------------- helpers


_MARKER = ".pcm-demo"
_OWNED = ("data", "tokenizer", "train", "eval", "plots", "report.md", "results.json")  # glob patterns


def _fresh_run_folder(out: Path, owned: tuple[str, ...] = _OWNED) -> Path:
    """An empty run folder. What a previous demo run or sweep wrote there (the folder has the marker
    file; `owned`: the glob patterns of what this kind of run writes) is cleared — every stage
    resumes from files, so stale ones would mix two runs — anything else is refused."""
    import shutil

    if out.exists() and any(out.iterdir()):
        if not (out / _MARKER).exists():
            raise DemoError(f"{out} is not empty and is not a previous demo run; choose a new --out folder")
        for p in [p for pattern in owned for p in out.glob(pattern)]:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("a pcm demo run folder: `pcm demo --out` here clears and rewrites it\n")
    return out


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"[demo] {msg}", file=sys.stderr, flush=True)


@contextmanager
def _timed(timing: dict[str, float], key: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timing[key] = time.perf_counter() - t0


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _rel(p: str, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(base))
    except (ValueError, TypeError):
        return str(p)
