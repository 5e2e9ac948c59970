"""avg@k on the demo's held-out sets: any `LLMClient`, the paper's prompt, the strict math grader.

Generation, grading and the report stay separate (STYLE.md §13): every sample becomes a row with
the raw completion, the extracted answer and its verdict, written to JSONL, and the accuracy is the
mean over all k samples of all problems (the paper's avg@16). A sample whose generation failed is
`infra_error`, counted apart and never scored as a wrong answer.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptcot_mamba.llm.base import GenerationRequest
from promptcot_mamba.text.prompts import paper_prompt


def problem_seed(seed: int, index: int) -> int:
    """The sampling seed of problem `index` (sample i uses seed + i in the clients): a pure function of
    the run seed and the problem, so two runs draw the same samples."""
    return (seed * 1_000_003 + index * 7919) & 0x7FFFFFFF


def evaluate_client(client, items: Sequence[dict[str, Any]], *, samples: int, temperature: float, top_p: float,
                    max_tokens: int, seed: int, out_path: str | Path | None = None, grader=None) -> dict[str, Any]:
    """items: [{"problem", "answer"}]; returns {"accuracy", "n_problems", "n_samples", "verdicts", …}.

    grader: an `eval.math_grader.MathGrader` to reuse (its worker pool starts once); by default a
    strict single-worker one is made and closed here."""
    from promptcot_mamba.eval.math_grader import MathGradeConfig, MathGrader
    from promptcot_mamba.eval.verdict import CORRECT, INFRA_ERROR

    if samples < 1:
        raise ValueError(f"evaluate_client: samples must be >= 1, got {samples}")
    requests = [GenerationRequest(prompt=paper_prompt(it["problem"]), max_tokens=max_tokens, temperature=temperature,
                                  top_p=top_p, n=samples, seed=problem_seed(seed, i),
                                  metadata={"stage": "eval", "problem": it["problem"]})
                for i, it in enumerate(items)]
    gens = client.generate(requests)
    if len(gens) != len(items):
        raise RuntimeError(f"client {getattr(client, 'name', client)!r} returned {len(gens)} results for "
                           f"{len(items)} requests")
    own = grader is None
    if own:
        grader = MathGrader(MathGradeConfig(lenient=False, workers=1))
    rows, to_grade = [], []
    try:
        for i, (it, gs) in enumerate(zip(items, gens)):
            for j, g in enumerate(gs):
                row = {"problem_index": i, "sample": j, "problem": it["problem"], "gold": str(it["answer"]),
                       "completion": g.text, "finish_reason": g.finish_reason, "tokens": g.completion_tokens}
                if not g.ok:
                    row.update(verdict=INFRA_ERROR, extracted=None, error=g.error)
                else:
                    to_grade.append((len(rows), (g.text, str(it["answer"]), {})))
                rows.append(row)
        grades = grader.grade_many([x for _, x in to_grade]) if to_grade else []
    finally:
        if own:
            grader.close()
    for (k, _), gr in zip(to_grade, grades):
        rows[k].update(verdict=gr.verdict, extracted=gr.extracted)
    counts = Counter(r["verdict"] for r in rows)
    scored = [r for r in rows if r["verdict"] != INFRA_ERROR]
    acc = sum(r["verdict"] == CORRECT for r in scored) / len(scored) if scored else None
    per_problem = Counter(r["problem_index"] for r in rows if r["verdict"] == CORRECT)
    if out_path is not None:
        p = Path(out_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return {"accuracy": acc, "n_problems": len(items), "n_samples": len(rows), "verdicts": dict(sorted(counts.items())),
            "solved_any": sum(1 for i in range(len(items)) if per_problem.get(i)),
            "mean_tokens": (sum(r["tokens"] or 0 for r in rows) / len(rows)) if rows else 0.0}


class EngineShim:
    """A minimal `LLMClient` over `generate.engine.Engine`, used only while
    `promptcot_mamba.generate.client.EngineClient` is not importable (the generation part owns the
    real one). Prompts are raw text (the paper's prompt); the engine batches all requests."""

    def __init__(self, model, tokenizer, name: str = "mamba2-engine"):
        from promptcot_mamba.generate.engine import Engine

        self.name = name
        self.tokenizer = tokenizer
        self.engine = Engine(model, tokenizer)

    def generate(self, requests):
        from promptcot_mamba.generate.sampling import SamplingParams
        from promptcot_mamba.llm.base import Generation

        prompts = [self.tokenizer.encode(r.prompt) for r in requests]
        params = [SamplingParams(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, n=r.n,
                                 seed=r.seed, stop=tuple(r.stop)) for r in requests]
        results = self.engine.generate(prompts, params)
        return [[Generation(text=s.text, finish_reason=s.finish_reason, completion_tokens=len(s.token_ids),
                            seed=s.seed) for s in res.samples] for res in results]
