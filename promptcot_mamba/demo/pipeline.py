"""`run_demo`: the paper end to end at laptop scale — synthesize, train, evaluate, compare, report.

    1. data        held-out sets drawn first; phase 1 and phase 2 SFT files through the real
                   synthesis stages with the procedural client (demo/curriculum.py); a small
                   digit-splitting BPE trained on the run's own text
    2. train+eval  the shipped recipe through train.run_recipe for Mamba-2 and, with the same data,
                   phases and optimizer, for a Llama of about the same parameter count; then each
                   phase's checkpoint (and the untrained Mamba-2) on the held-out foundational and
                   composed sets, avg@k through the evaluation harness
    3. efficiency  decode tokens/s and context memory against generated length (Figure 2)
    4. report      run folder: report.md, plots/*.png, results.json, checkpoints, every record

Each architecture trains and is evaluated in its own process, one torch thread each, side by side:
on two cores that halves the wall time (the faster model's evaluation overlaps the slower one's
training), and single-threaded math is reproducible, so the same seed gives the same tables.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from promptcot_mamba.demo.settings import DemoSettings


class DemoError(RuntimeError):
    """The demo cannot start (e.g. its output folder holds something else)."""


MAMBA = "Mamba-2"
TRANSFORMER = "Llama"
TYPES = {MAMBA: "attention-free (SSM)", TRANSFORMER: "Transformer"}


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


def _set_threads(n: int) -> None:
    """Per process: n torch threads, and third-party chatter (weight-loading bars, deprecation
    notices) off so the terminal shows the demo's own progress."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


# ------------------------------------------------------------------------------------ the models


def matched_baseline(settings: DemoSettings, mamba_params: int, vocab_size: int) -> dict[str, Any]:
    """The baseline's model section for train/recipe.py, its MLP width chosen so its parameter
    count is as close as possible to the Mamba-2 model's (Table 1 compares similar sizes)."""
    b = settings.baseline
    cfg = dict(b["config"])
    if b.get("match_parameters", True):
        d, L = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
        heads, kv = int(cfg["num_attention_heads"]), int(cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
        hd = d // heads
        tied = bool(cfg.get("tie_word_embeddings", True))
        emb = vocab_size * d * (1 if tied else 2)
        attn = d * d * 2 + 2 * d * kv * hd  # q, o and k, v projections
        fixed = emb + L * (attn + 2 * d) + d  # + two RMSNorms per layer and the final one
        ff = max(8, round((mamba_params - fixed) / (3 * d * L) / 8) * 8)  # gate, up, down
        cfg["intermediate_size"] = int(ff)
    return {"kind": "hf", "architecture": b["architecture"], "config": cfg}


def _recipe_dict(settings: DemoSettings, tokenizer_dir: Path, model: dict | None, seed: int) -> dict:
    raw = json.loads(json.dumps(settings.recipe))
    raw["tokenizer"] = str(tokenizer_dir)
    raw["seed"] = seed
    if model is not None:
        raw["model"] = model
        raw["name"] = raw.get("name", "demo") + "-baseline"
    return raw


def _train_job(recipe: dict, data_dir: str, out_dir: str, threads: int, progress: bool) -> dict:
    """Run one recipe (in this process or a worker); returns the phases' HF folders and metrics path."""
    _set_threads(threads)
    from promptcot_mamba.train.recipe import Recipe
    from promptcot_mamba.train.runner import run_recipe

    r = Recipe.from_dict(recipe, base_dir=data_dir, source=f"{recipe.get('name')}")
    res = run_recipe(r, out_dir, progress=progress)
    return {"checkpoints": res.checkpoints, "metrics": str(res.metrics_path),
            "phases": [p.to_dict() for p in res.phases]}


def _arch_job(recipe: dict, data_dir: str, train_out: str, arch: str, slug: str, with_untrained: bool,
              tokenizer_dir: str, problems: dict[str, list[dict]], eval_cfg: dict, eval_dir: str, threads: int,
              seed: int, progress: bool) -> dict:
    """One architecture end to end in one process: train every phase, then evaluate the first and
    last phase's checkpoints (and, for the Mamba-2 side, the untrained model). Two of these run side
    by side, so the faster model's evaluation overlaps the slower model's training."""
    t0 = time.process_time()
    run = _train_job(recipe, data_dir, train_out, threads, progress)
    cpu_train = time.process_time() - t0
    names = [p["name"] for p in recipe["phases"]]
    ck = run["checkpoints"]
    jobs = []
    if with_untrained:
        jobs.append({"label": arch, "arch": arch, "training": "untrained", "folder": None,
                     "init_model": recipe["model"], "slug": f"{slug}-untrained"})
    jobs.append({"label": arch, "arch": arch, "training": "phase 1 only", "folder": ck[names[0]],
                 "slug": f"{slug}-phase1"})
    jobs.append({"label": arch, "arch": arch, "training": "phase 1 + phase 2", "folder": ck[names[-1]],
                 "slug": f"{slug}-phase2"})
    rows = _eval_job(jobs, tokenizer_dir, problems, eval_cfg, eval_dir, threads, seed, progress)
    return {"run": run, "rows": rows, "cpu_train": cpu_train, "cpu_eval": time.process_time() - t0 - cpu_train}


# ---------------------------------------------------------------------------------- evaluation


def _client_for(folder: str | None, tokenizer_dir: str, *, init_model: dict | None = None, seed: int = 0):
    """An LLMClient over a checkpoint folder (or a freshly initialised model when folder is None)."""
    import torch

    from promptcot_mamba.text.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(tokenizer_dir)
    if folder is None:
        from promptcot_mamba.train.models import build_model
        from promptcot_mamba.train.recipe import ModelSpec

        torch.manual_seed(seed)
        model = build_model(ModelSpec.from_dict(init_model, "init", Path(".")), tok).eval()
    else:
        cfg = json.loads((Path(folder) / "config.json").read_text())
        if cfg.get("model_type") == "mamba2":
            from promptcot_mamba.model.lm import Mamba2LM

            model = Mamba2LM.from_pretrained(folder)
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    from promptcot_mamba.model.lm import Mamba2LM

    if isinstance(model, Mamba2LM):
        from promptcot_mamba.generate.client import EngineClient

        return EngineClient(model, tok), model
    from promptcot_mamba.llm.hf_client import TransformersClient

    return TransformersClient(model, tok, name=Path(folder).name if folder else "init"), model


def _eval_job(jobs: list[dict], tokenizer_dir: str, problems: dict[str, list[dict]], eval_cfg: dict,
              out_dir: str, threads: int, seed: int, progress: bool = False) -> list[dict]:
    """Evaluate several models (one process); each job: {label, arch, training, folder|init_model}."""
    _set_threads(threads)
    from promptcot_mamba.demo.evaluation import evaluate_client
    from promptcot_mamba.eval.math_grader import MathGradeConfig, MathGrader

    grader = MathGrader(MathGradeConfig(lenient=False, workers=1))
    try:
        return [_eval_one(job, tokenizer_dir, problems, eval_cfg, out_dir, seed, grader, evaluate_client, progress)
                for job in jobs]
    finally:
        grader.close()


def _eval_one(job, tokenizer_dir, problems, eval_cfg, out_dir, seed, grader, evaluate_client, progress) -> dict:
    client, model = _client_for(job.get("folder"), tokenizer_dir, init_model=job.get("init_model"), seed=seed)
    row = {"model": job["label"], "arch": job["arch"], "type": TYPES.get(job["arch"], ""), "training": job["training"],
           "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}
    for set_name, items in problems.items():
        res = evaluate_client(client, items, samples=eval_cfg["samples"], temperature=eval_cfg["temperature"],
                              top_p=eval_cfg["top_p"], max_tokens=eval_cfg["max_new_tokens"], seed=seed,
                              out_path=Path(out_dir) / f"{job['slug']}-{set_name}.jsonl", grader=grader,
                              progress=progress, desc=f"eval {job['slug']} {set_name}")
        row[set_name] = res["accuracy"]
        row[f"{set_name}_detail"] = {k: v for k, v in res.items() if k != "accuracy"}
    return row


# ------------------------------------------------------------------------------------ the run


def run_demo(preset: str | Path | DemoSettings = "default", out_dir: str | Path = "runs/demo", *,
             seed: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the whole demo into out_dir and return the results dict (also written as results.json)."""
    settings = preset if isinstance(preset, DemoSettings) else DemoSettings.load(preset)
    seed = settings.seed if seed is None else seed
    out = _fresh_run_folder(Path(out_dir).resolve())
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _set_threads(settings.threads)
    timing: dict[str, float] = {}
    cpu: dict[str, list[float]] = {}
    t_start = time.perf_counter()
    notes: list[str] = []

    from promptcot_mamba.demo.curriculum import build_curriculum
    from promptcot_mamba.demo.domain import make_splits

    # 1. data ---------------------------------------------------------------------------------
    d = settings.data
    _say(f"1/5 synthesizing the curriculum (seed {seed}) …", progress)
    with _timed(timing, "synthesis"):
        splits = make_splits(seed, n_train_foundational=d.train_foundational, n_train_composed=0,
                             n_test_foundational=d.test_foundational, n_test_composed=d.test_composed)
        data_dir = out / "data"
        cur = build_curriculum(splits, data_dir, seed=seed, n_composed=d.composed, n_seeds=d.seeds,
                               n_combos=d.combos, progress=progress)
        # Phase 2 replays a fixed share of phase 1 (the first pairs: the file order is seeded), as a
        # file of its own so the mixture does not depend on the trainer's sampling of a weight.
        with open(cur.foundational_path) as f:
            lines = f.readlines()
        with open(data_dir / "sft_replay.jsonl", "w") as f:
            f.writelines(lines[: int(round(d.replay * len(lines)))])
        for name, ps in (("test_foundational", splits.test_foundational), ("test_composed", splits.test_composed)):
            with open(data_dir / f"{name}.jsonl", "w") as f:
                for p in ps:
                    f.write(json.dumps({"problem": p.problem, "answer": p.gold, "concepts": list(p.concepts)}) + "\n")

    # 2. tokenizer ----------------------------------------------------------------------------
    from promptcot_mamba.demo.tokenizer_builder import build_tokenizer
    from promptcot_mamba.text.prompts import paper_prompt

    with _timed(timing, "tokenizer"):
        texts = []
        for path in (cur.foundational_path, cur.composed_path):
            with open(path) as f:
                for line in f:
                    r = json.loads(line)
                    texts.append(f"{r['prompt']}\n{r['response']}")
        texts += [paper_prompt(p.problem) for p in splits.test_foundational[:1]]
        tok = build_tokenizer(texts, vocab_size=d.tokenizer_vocab)
        tok_dir = out / "tokenizer"
        tok.save(tok_dir)

    # 3-4. train, then evaluate: one process per architecture -----------------------------------
    from promptcot_mamba.model.config import Mamba2Config
    from promptcot_mamba.train.models import _round_vocab

    mcfg = dict(settings.recipe["model"]["config"])
    mcfg.setdefault("vocab_size", _round_vocab(tok.vocab_size))
    mamba_params = Mamba2Config.from_dict(mcfg).num_parameters()
    baseline_model = matched_baseline(settings, mamba_params, _round_vocab(tok.vocab_size))
    mamba_recipe = _recipe_dict(settings, tok_dir, None, seed)
    tf_recipe = _recipe_dict(settings, tok_dir, baseline_model, seed)
    train_dir = out / "train"
    phase_names = [p["name"] for p in settings.recipe["phases"]]
    problems = {"foundational": [{"problem": p.problem, "answer": p.gold} for p in splits.test_foundational],
                "composed": [{"problem": p.problem, "answer": p.gold} for p in splits.test_composed]}
    ev = settings.eval
    eval_cfg = {"samples": ev.samples, "temperature": ev.temperature, "top_p": ev.top_p,
                "max_new_tokens": ev.max_new_tokens}
    eval_dir = out / "eval"
    eval_dir.mkdir(exist_ok=True)
    _say(f"2/5 training {MAMBA} ({mamba_params / 1e6:.2f}M parameters) and {TRANSFORMER} on the same data, "
         f"then evaluating each on {len(problems['foundational'])} + {len(problems['composed'])} held-out "
         f"problems, avg@{ev.samples} …", progress)
    common = (str(tok_dir), problems, eval_cfg, str(eval_dir), settings.threads, seed)
    with _timed(timing, "training + evaluation"):
        m_job, t_job = _run_pair(
            settings.workers,
            (_arch_job, (mamba_recipe, str(data_dir), str(train_dir / "mamba2"), MAMBA, "mamba2", True,
                         *common, progress)),
            (_arch_job, (tf_recipe, str(data_dir), str(train_dir / "transformer"), TRANSFORMER, "transformer",
                         False, *common, False)))
    cpu["training"] = [round(m_job["cpu_train"], 1), round(t_job["cpu_train"], 1)]
    cpu["evaluation"] = [round(m_job["cpu_eval"], 1), round(t_job["cpu_eval"], 1)]
    mamba_run, tf_run = m_job["run"], t_job["run"]
    accuracy = m_job["rows"] + t_job["rows"]
    order = {("untrained", MAMBA): 0, ("phase 1 only", TRANSFORMER): 1, ("phase 1 + phase 2", TRANSFORMER): 2,
             ("phase 1 only", MAMBA): 3, ("phase 1 + phase 2", MAMBA): 4}
    accuracy.sort(key=lambda r: order.get((r["training"], r["arch"]), 9))

    # 5. efficiency -----------------------------------------------------------------------------
    _say("3/5 measuring decode throughput and memory against generated length …", progress)
    with _timed(timing, "efficiency"):
        efficiency = _efficiency(settings, mamba_run["checkpoints"][phase_names[-1]],
                                 tf_run["checkpoints"][phase_names[-1]], str(tok_dir))

    # 6. report ---------------------------------------------------------------------------------
    from promptcot_mamba.train.metrics import read_metrics

    losses = {}
    for label, run in ((MAMBA, mamba_run), (TRANSFORMER, tf_run)):
        losses[label] = [{"step": r["step"], "phase": r["phase"], "loss": r.get("loss")}
                         for r in read_metrics(run["metrics"]) if "loss" in r]
    training = []
    for label, run in ((MAMBA, mamba_run), (TRANSFORMER, tf_run)):
        for p in run["phases"]:
            training.append(f"{label}, phase `{p.get('name')}`: {p.get('steps')} steps, final loss "
                            f"{_fmt(p.get('final_loss'))} → `{_rel(p.get('export_dir'), out)}`")
    timing["total"] = time.perf_counter() - t_start
    results = {
        "config": {"name": settings.name, "seed": seed, "preset": settings.source, "threads": settings.threads,
                   "workers": settings.workers, "cpu_count": os.cpu_count(), "baseline_model": baseline_model},
        "data": {**cur.summary, "held-out foundational": len(splits.test_foundational),
                 "held-out composed": len(splits.test_composed),
                 "tokenizer": f"byte-level BPE, digits split, {tok.vocab_size} tokens (trained on this run's text)"},
        "synthesis_stages": cur.stages,
        "protocol": {"samples_per_problem": ev.samples, "temperature": ev.temperature, "top_p": ev.top_p,
                     "max_new_tokens": ev.max_new_tokens,
                     "sets": {"foundational": len(problems["foundational"]), "composed": len(problems["composed"])},
                     "description": (f"the paper's prompt (ChatML, `<think>` prefilled); {ev.samples} samples per "
                                     f"problem at temperature {ev.temperature}, top-p {ev.top_p}, up to "
                                     f"{ev.max_new_tokens} new tokens; graded on the last `\\boxed{{}}` after "
                                     f"`</think>` by the strict math grader; avg@{ev.samples} = mean accuracy over "
                                     "all samples (as the paper's avg@16).")},
        "accuracy": accuracy,
        "efficiency": efficiency,
        "losses": losses,
        "training": training,
        "timing": timing,
        "cpu": {k: [round(x, 1) for x in v] for k, v in cpu.items()},
        "notes": notes,
        "files": [f"`{_rel(p, out)}`" for p in (data_dir, tok_dir, train_dir, eval_dir)],
    }
    _findings(results)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    _say("4/5 writing the report …", progress)
    from promptcot_mamba.demo.report import write_report

    path = write_report(results, out)
    timing["total"] = time.perf_counter() - t_start
    results["report"] = str(path)
    return results


_MARKER = ".pcm-demo"
_OWNED = ("data", "tokenizer", "train", "eval", "plots", "report.md", "results.json")


def _fresh_run_folder(out: Path) -> Path:
    """An empty run folder. A previous demo run there (it has the marker file) is cleared — every
    stage resumes from files, so stale ones would mix two runs — anything else is refused."""
    import shutil

    if out.exists() and any(out.iterdir()):
        if not (out / _MARKER).exists():
            raise DemoError(f"{out} is not empty and is not a previous demo run; choose a new --out folder")
        for name in _OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("a pcm demo run folder: `pcm demo --out` here clears and rewrites it\n")
    return out


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.4f}"


def _rel(p, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(base))
    except (ValueError, TypeError):
        return str(p)


def _cpu_timed(fn, args: tuple):
    """(fn(*args), CPU seconds this process spent on it): on an idle machine with a core per process
    the wall time of a stage is about the larger CPU time of its two processes."""
    t0 = time.process_time()
    res = fn(*args)
    return res, time.process_time() - t0


def _worker_job(fn, args: tuple, parent: int):
    """`_cpu_timed` in a spawned worker that exits when the demo process goes away (a worker of a
    killed pool would otherwise finish its training job as an orphan)."""
    import threading

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(2.0)

    threading.Thread(target=watch, daemon=True).start()
    return _cpu_timed(fn, args)


def _run_pair(workers: int, first: tuple, second: tuple, cpu: list[float] | None = None):
    """Run two (fn, args) jobs: side by side (second in a spawned worker) or one after the other."""
    if workers < 2:
        (a, ca), (b, cb) = _cpu_timed(*first), _cpu_timed(*second)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
            fut = pool.submit(_worker_job, *second, os.getpid())
            a, ca = _cpu_timed(*first)
            b, cb = fut.result()
    if cpu is not None:
        cpu[:] = [ca, cb]
    return a, b


def _efficiency(settings: DemoSettings, mamba_folder: str, tf_folder: str, tok_dir: str) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from promptcot_mamba.demo.efficiency import measure_mamba, measure_transformer
    from promptcot_mamba.model.lm import Mamba2LM
    from promptcot_mamba.text.prompts import paper_prompt
    from promptcot_mamba.text.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(tok_dir)
    prompt = tok.encode(paper_prompt("Compute 12 + 34."))
    e = settings.efficiency
    mamba = Mamba2LM.from_pretrained(mamba_folder)
    tf = AutoModelForCausalLM.from_pretrained(tf_folder, dtype=torch.float32).eval()
    lengths = list(e.lengths)
    limit = getattr(tf.config, "max_position_embeddings", None)
    if limit is not None:
        lengths = [n for n in lengths if len(prompt) + n <= limit]
    # warm-up (first calls allocate), then the measured runs
    measure_mamba(mamba, prompt, [4], batch=e.batch)
    measure_transformer(tf, prompt, [4], batch=e.batch)
    pts = measure_mamba(mamba, prompt, lengths, batch=e.batch, label=MAMBA)
    pts += measure_transformer(tf, prompt, lengths, batch=e.batch, label=TRANSFORMER)
    return {"points": [p.to_dict() for p in pts], "batch": e.batch, "prompt_tokens": len(prompt),
            "description": (f"Batch of {e.batch} sequences, prompt of {len(prompt)} tokens, greedy decoding one "
                            f"token per sequence per step; tokens/s is the rate over the window since the previous "
                            f"length (whole batch); context memory is the bytes of the Mamba-2 state or of the "
                            f"Transformer's KV cache at that length. Wall-clock rates on a shared CPU are noisy.")}


def _findings(results: dict[str, Any]) -> None:
    """Plain statements of what the measured numbers show (whatever they show)."""
    from promptcot_mamba.demo.efficiency import EfficiencyPoint, memory_grows, memory_is_flat

    eff = results["efficiency"]
    pts = [EfficiencyPoint(**p) for p in eff["points"]]
    by = {}
    for p in pts:
        by.setdefault(p.model, []).append(p)
    lines = []
    m, t = by.get(MAMBA, []), by.get(TRANSFORMER, [])
    if m:
        lines.append(f"{MAMBA} context memory is {'constant' if memory_is_flat(m) else 'NOT constant'} across "
                     f"lengths: {m[0].context_bytes / 1024:.1f} KiB at {m[0].generated} tokens, "
                     f"{m[-1].context_bytes / 1024:.1f} KiB at {m[-1].generated}.")
    if t:
        lines.append(f"{TRANSFORMER} KV cache {'grows' if memory_grows(t) else 'does NOT grow'} with length: "
                     f"{t[0].context_bytes / 1024:.1f} KiB at {t[0].generated} tokens, "
                     f"{t[-1].context_bytes / 1024:.1f} KiB at {t[-1].generated}.")
    if m and t:
        lines.append(f"At {m[-1].generated} generated tokens: {MAMBA} {m[-1].tokens_per_s:.0f} tokens/s vs "
                     f"{TRANSFORMER} {t[-1].tokens_per_s:.0f} tokens/s "
                     f"(ratio {m[-1].tokens_per_s / max(t[-1].tokens_per_s, 1e-9):.2f}×).")
    eff["findings"] = lines
