"""avg@k on the demo's held-out sets: any `LLMClient`, the paper's prompt, the evaluation harness.

Generate → grade → report stay separate (STYLE.md §13). Generation asks for the k samples of a
problem in one request (n=k, sample i seeded seed + i by the clients), so a client that decodes one
request at a time (the transformers client) still batches a problem's samples; grading and scoring
are the evaluation part's own (`eval.harness.grade_rows` with the strict math grader, and
`eval.report.summarize`: avg@k = mean over problems of the share of correct samples, a sample whose
generation failed counts as `infra_error`, never silently dropped). Every graded sample is written
as a row with the raw completion, the extracted answer and its verdict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptcot_mamba.llm.base import GenerationRequest
from promptcot_mamba.text.prompts import paper_prompt


def problem_seed(seed: int, index: int) -> int:
    """The sampling seed of problem `index` (sample i uses seed + i in the clients): a pure function of
    the run seed and the problem, so two runs draw the same samples."""
    return (seed * 1_000_003 + index * 7919) & 0x7FFFFFFF


class _MathOnly:
    """The `Graders` face (`.math`) over a MathGrader the caller owns."""

    def __init__(self, math_grader):
        self.math = math_grader


def evaluate_client(client, items: Sequence[dict[str, Any]], *, samples: int, temperature: float, top_p: float,
                    max_tokens: int, seed: int, out_path: str | Path | None = None, grader=None,
                    name: str = "demo", progress: bool = False, desc: str = "evaluating") -> dict[str, Any]:
    """items: [{"problem", "answer"}]; returns {"accuracy" (0..1), "stderr", "n_problems", "n_samples",
    "verdicts", "solved_any", "mean_tokens", "truncation_rate"}.

    grader: a `eval.harness.Graders` or `eval.math_grader.MathGrader` to reuse (its worker pool starts
    once); by default a strict single-worker one is made and closed here."""
    from promptcot_mamba.eval.benchmarks import custom_benchmark
    from promptcot_mamba.eval.harness import Graders, grade_rows
    from promptcot_mamba.eval.report import summarize
    from promptcot_mamba.eval.verdict import CORRECT

    if samples < 1:
        raise ValueError(f"evaluate_client: samples must be >= 1, got {samples}")
    bench = custom_benchmark(name, [(f"{i:04d}", it["problem"], str(it["answer"])) for i, it in enumerate(items)])
    backend = getattr(client, "name", type(client).__name__)
    requests = [GenerationRequest(prompt=paper_prompt(p.question), max_tokens=max_tokens, temperature=temperature,
                                  top_p=top_p, n=samples, seed=problem_seed(seed, i),
                                  metadata={"stage": "eval", "benchmark": name, "problem_id": p.problem_id,
                                            "problem": p.question, "answer": p.gold})
                for i, p in enumerate(bench.problems)]
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    gens = []
    chunk = 64  # requests per generate call: what the engine batches, and the progress granularity
    with tqdm(total=len(requests), disable=not progress, desc=desc, unit="problem", leave=False) as bar:
        for start in range(0, len(requests), chunk):
            gens.extend(client.generate(requests[start:start + chunk]))
            bar.update(min(chunk, len(requests) - start))
    per = (time.perf_counter() - t0) / max(1, len(requests) * samples)
    if len(gens) != len(requests) or any(len(g) != samples for g in gens):
        raise RuntimeError(f"client {backend!r} did not return {samples} samples for each of {len(requests)} "
                           "requests")
    rows = [{"benchmark": name, "problem_id": p.problem_id, "sample_index": j, "seed": problem_seed(seed, i) + j,
             "completion": g.text, "finish_reason": g.finish_reason, "completion_tokens": g.completion_tokens,
             "error": g.error, "gen_time_s": g.latency_s if g.latency_s is not None else per, "backend": backend}
            for i, (p, gs) in enumerate(zip(bench.problems, gens)) for j, g in enumerate(gs)]
    own = grader is None
    graders = Graders(lenient=False, workers=1) if own else (grader if hasattr(grader, "math") else _MathOnly(grader))
    try:
        graded = grade_rows(bench, rows, graders, progress=False)
    finally:
        if own:
            graders.close()
    summary = summarize(bench, graded, n=samples, sampling={"temperature": temperature, "top_p": top_p,
                                                            "max_tokens": max_tokens, "n": samples, "seed": seed})
    if out_path is not None:
        by_id = bench.by_id()
        p = Path(out_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w") as f:
            for r in graded:
                f.write(json.dumps({"problem": by_id[r["problem_id"]].question, **r}, ensure_ascii=False) + "\n")
    solved = {r["problem_id"] for r in graded if r["verdict"] == CORRECT}
    return {"accuracy": summary["score"] / 100, "stderr": summary["stderr"] / 100, "n_problems": len(items),
            "n_samples": len(graded), "verdicts": {k: v for k, v in summary["verdicts"].items() if v},
            "solved_any": len(solved), "mean_tokens": summary.get("mean_completion_tokens"),
            "truncation_rate": summary["truncation_rate"], "metric": summary["metric"]}
