"""avg@k on the demo's held-out sets: any `LLMClient`, the paper's prompt, the evaluation harness.

Generate → grade → report are three separate steps, as in the evaluation harness (eval/harness.py).
Generation asks for the k samples of a problem in one request (n=k, sample i seeded seed + i by the
clients), so a client that decodes one request at a time (the transformers client) still batches a
problem's samples; grading and scoring
are the evaluation part's own (`eval.harness.grade_rows` with the strict math grader, and
`eval.report.summarize`: avg@k = mean over problems of the share of correct samples, a sample whose
generation failed counts as `infra_error`, never silently dropped). Every graded sample is written
as a row with the raw completion, the extracted answer and its verdict.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptcot_mamba.common.files import write_jsonl
from promptcot_mamba.demo.domain import Problem
from promptcot_mamba.demo.errors import error_counts
from promptcot_mamba.demo.settings import EvalSettings
from promptcot_mamba.llm.base import GenerationRequest
from promptcot_mamba.text.prompts import paper_prompt

if TYPE_CHECKING:
    from promptcot_mamba.eval.harness import Graders


def problem_seed(seed: int, index: int) -> int:
    """The sampling seed of problem `index` (sample i uses seed + i in the clients): a pure function of
    the run seed and the problem, so two runs draw the same samples."""
    return (seed * 1_000_003 + index * 7919) & 0x7FFFFFFF


def evaluate_client(client, problems: Sequence[Problem], protocol: EvalSettings, *, seed: int, graders: Graders,
                    out_path: str | Path | None = None, progress: bool = False,
                    desc: str = "evaluating") -> dict[str, Any]:
    """avg@k of `client` on `problems` under `protocol` (k = protocol.samples); returns {"accuracy"
    (0..1), "stderr", "n_problems", "n_samples", "verdicts", "solved_any", "mean_tokens",
    "truncation_rate", "metric", "per_problem" (share correct per problem), "errors" (demo/errors.py
    classes of the wrong samples)}. `graders` is the caller's (its worker pool starts once per run)."""
    from tqdm.auto import tqdm

    from promptcot_mamba.eval.benchmarks import custom_benchmark
    from promptcot_mamba.eval.harness import grade_rows
    from promptcot_mamba.eval.report import summarize
    from promptcot_mamba.eval.verdict import CORRECT

    name, k = "demo", protocol.samples
    bench = custom_benchmark(name, [(f"{i:04d}", p.problem, p.gold) for i, p in enumerate(problems)])
    backend = getattr(client, "name", type(client).__name__)
    requests = [GenerationRequest(prompt=paper_prompt(p.question), max_tokens=protocol.max_new_tokens,
                                  temperature=protocol.temperature, top_p=protocol.top_p, n=k,
                                  seed=problem_seed(seed, i),
                                  metadata={"stage": "eval", "benchmark": name, "problem_id": p.problem_id,
                                            "problem": p.question, "answer": p.gold})
                for i, p in enumerate(bench.problems)]
    t0 = time.perf_counter()
    gens = []
    chunk = 64  # requests per generate call: what the engine batches, and the progress granularity
    with tqdm(total=len(requests), disable=not progress, desc=desc, unit="problem", leave=False) as bar:
        for start in range(0, len(requests), chunk):
            gens.extend(client.generate(requests[start:start + chunk]))
            bar.update(min(chunk, len(requests) - start))
    per = (time.perf_counter() - t0) / max(1, len(requests) * k)
    if len(gens) != len(requests) or any(len(g) != k for g in gens):
        raise RuntimeError(f"client {backend!r} did not return {k} samples for each of {len(requests)} requests")
    rows = [{"benchmark": name, "problem_id": p.problem_id, "sample_index": j, "seed": problem_seed(seed, i) + j,
             "completion": g.text, "finish_reason": g.finish_reason, "completion_tokens": g.completion_tokens,
             "error": g.error, "gen_time_s": g.latency_s if g.latency_s is not None else per, "backend": backend}
            for i, (p, gs) in enumerate(zip(bench.problems, gens)) for j, g in enumerate(gs)]
    graded = grade_rows(bench, rows, graders, progress=False)
    summary = summarize(bench, graded, n=k, sampling={"temperature": protocol.temperature, "top_p": protocol.top_p,
                                                      "max_tokens": protocol.max_new_tokens, "n": k, "seed": seed})
    if out_path is not None:
        by_id = bench.by_id()
        write_jsonl(out_path, ({"problem": by_id[r["problem_id"]].question, **r} for r in graded))
    solved = {r["problem_id"] for r in graded if r["verdict"] == CORRECT}
    index = {p.problem_id: i for i, p in enumerate(bench.problems)}
    correct = [0] * len(problems)
    wrong: list[tuple[Problem, str]] = []
    for r in graded:
        if r["verdict"] == CORRECT:
            correct[index[r["problem_id"]]] += 1
        else:
            wrong.append((problems[index[r["problem_id"]]], r.get("completion") or ""))
    counts, examples = error_counts(wrong)
    return {"accuracy": summary["score"] / 100, "stderr": summary["stderr"] / 100, "n_problems": len(problems),
            "n_samples": len(graded), "verdicts": {k: v for k, v in summary["verdicts"].items() if v},
            "solved_any": len(solved), "mean_tokens": summary.get("mean_completion_tokens"),
            "truncation_rate": summary["truncation_rate"], "metric": summary["metric"],
            # per held-out problem, in order: the share of its k samples graded correct (demo/stats.py)
            "per_problem": [c / k for c in correct],
            "errors": {"wrong": len(wrong), "counts": counts, "examples": examples}}


def load_client(folder: str | None, tokenizer_dir: str, *, init_model: dict | None = None, seed: int = 0):
    """(an LLMClient, its model) over a checkpoint folder, or over a freshly initialised model built
    from the recipe's model section `init_model` when folder is None (the "untrained" row)."""
    import json

    import torch

    from promptcot_mamba.model.lm import Mamba2LM
    from promptcot_mamba.text.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(tokenizer_dir)
    if folder is None:
        from promptcot_mamba.train.models import build_model
        from promptcot_mamba.train.recipe import ModelSpec

        torch.manual_seed(seed)
        model = build_model(ModelSpec.from_dict(init_model, "init", Path(".")), tok).eval()
    elif json.loads((Path(folder) / "config.json").read_text()).get("model_type") == "mamba2":
        model = Mamba2LM.from_pretrained(folder)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    if isinstance(model, Mamba2LM):
        from promptcot_mamba.generate.client import EngineClient

        return EngineClient(model, tok), model
    from promptcot_mamba.llm.hf_client import TransformersClient

    return TransformersClient(model, tok, name=Path(folder).name if folder else "init"), model
