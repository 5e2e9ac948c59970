"""Scores and the report: JSON for machines, Markdown in Table 1's layout for people.

Score = avg@n = mean over problems of the fraction of that problem's n samples graded correct. This is
pass@1 estimated from n samples: the unbiased pass@k estimator of the Codex paper (Chen et al. 2021,
arXiv:2107.03374), 1 - C(n-c, k)/C(n, k), is c/n for k = 1. When n varies by problem (files graded by
`pcm eval grade` where some generations are missing) the score is the same mean of per-problem means,
so every problem weighs the same whatever its n; a pooled share of all samples would let problems with
more samples count more.

Uncertainty: the standard error over problems of the per-problem means, sqrt(sum_i (m_i - score)^2 /
(P (P - 1))) for P problems with means m_i. The m_i are independent, each with the score as its
expectation (problems are a sample from a population); so the spread of the m_i already holds the
within-problem sampling noise, p(1-p)/n_i, whatever each n_i is, and its square is unbiased for the
score's variance with equal or unequal n (the clustered standard error with problems as clusters; Miller
2024, "Adding Error Bars to Evals", arXiv:2411.00640) — provided which problems lost samples does not
depend on how hard they are. The paper's "±" (std of per-run accuracies) is reported too when
every problem has the same samples.

`summarize(..., n=N)` wants exactly N samples per problem (indices 0..N-1) and raises `ShortfallError`
otherwise (`pcm eval run` generates exactly N); `n=None` takes whatever each problem has, at least one.
Samples whose generation or grading failed (`infra_error`) make the benchmark `complete: false` — they
count as not correct and are listed, never dropped.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from promptcot_mamba.common.files import atomic_write_json, atomic_write_text
from promptcot_mamba.eval.benchmarks import SPECS, Benchmark
from promptcot_mamba.eval.verdict import CORRECT, INFRA_ERROR, VERDICTS

TABLE1_ORDER = ("math500", "aime24", "aime25", "olympiadbench", "humaneval", "humanevalplus", "livecodebench")

ERRATA = {
    "humanevalplus": ["HumanEval/32 (find_zero): the OriginFmt release's test swaps _poly's arguments and fails every "
                      "solution; graded with EvalPlus's |poly(x)| <= atol oracle on the EvalPlus-format file. "
                      "evalplus 0.3.1 also fails /32 for every solution (upstream PR #201)."],
    "livecodebench": ["~11 problems accept several outputs but are graded against one; 2 interactive; 4 with "
                      "wrong tests (LiveCodeBench ERRATA.md); kept, as in every published number."],
    "aime25": ["Problem text repaired for JSON-escape damage in 5 records (benchmarks README); answers unchanged."],
}


class ShortfallError(ValueError):
    pass


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def summarize(bench: Benchmark, rows: list[dict], *, n: int | None, sampling: dict | None) -> dict[str, Any]:
    """One benchmark's numbers from its graded rows; `n`: see the module docstring."""
    by_problem: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        idx = int(r["sample_index"])
        if idx in by_problem[r["problem_id"]]:
            raise ShortfallError(f"{bench.name}: duplicate sample {idx} for problem {r['problem_id']}")
        by_problem[r["problem_id"]][idx] = r
    if n is not None:
        short = [(p.problem_id, len(by_problem.get(p.problem_id, {}))) for p in bench.problems
                 if sorted(by_problem.get(p.problem_id, {})) != list(range(n))]
        if short:
            raise ShortfallError(f"{bench.name}: {len(short)} problems lack exactly n={n} samples (indices "
                                 f"0..{n - 1}), e.g. {short[:3]}; refusing to average over fewer")
    else:
        empty = [p.problem_id for p in bench.problems if not by_problem.get(p.problem_id)]
        if empty:
            raise ShortfallError(f"{bench.name}: {len(empty)} problems have no sample, e.g. {empty[:3]}")
    pids = [p.problem_id for p in bench.problems]
    n_per_problem = {pid: len(by_problem[pid]) for pid in pids}
    lo, hi = min(n_per_problem.values(), default=n or 0), max(n_per_problem.values(), default=n or 0)
    per_problem = [_mean([r["verdict"] == CORRECT for r in by_problem[pid].values()]) for pid in pids]
    # Runs (sample i of every problem) exist only when every problem has the same sample indices.
    first = by_problem[pids[0]].keys() if pids else set()
    runs = sorted(first) if all(by_problem[pid].keys() == first for pid in pids) else []
    per_run = [_mean([by_problem[pid][i]["verdict"] == CORRECT for pid in pids]) for i in runs]
    counts = Counter(r["verdict"] for r in rows)
    out: dict[str, Any] = {
        "benchmark": bench.name, "title": SPECS[bench.name].title if bench.name in SPECS else bench.name,
        "metric": ("pass@1" if hi == 1 else f"avg@{hi}") if lo == hi else f"avg@{lo}-{hi}",
        "n": hi if lo == hi else None, "n_min": lo, "n_max": hi, "n_per_problem": n_per_problem,
        "problems": len(pids), "samples": len(rows),
        "score": 100 * _mean(per_problem),
        "stderr": 100 * _std(per_problem) / math.sqrt(len(pids)) if pids else float("nan"),
        "stderr_method": "std over problems of per-problem means / sqrt(problems)",
        "std_across_runs": 100 * _std(per_run) if len(per_run) > 1 else None,
        "verdicts": {v: counts.get(v, 0) for v in VERDICTS},
        "complete": counts.get(INFRA_ERROR, 0) == 0,
        "truncation_rate": _mean([r.get("finish_reason") == "length" for r in rows]),
        "mean_completion_tokens": _mean([r["completion_tokens"] for r in rows if r.get("completion_tokens")
                                         is not None]) if any(r.get("completion_tokens") for r in rows) else None,
        "dataset": bench.manifest(), "sampling": sampling,
        "errata": ERRATA.get(bench.name, []) + [
            f"{p.problem_id}: gold `{p.gold}` used; {p.data['gold_erratum']['reason']}"
            for p in bench.problems if p.data.get("gold_erratum")],
    }
    if rows and all(r.get("paper_verdict") is not None for r in rows):
        out.update(_paper_columns(rows, [by_problem[pid] for pid in pids], out["score"]))
    if counts.get(INFRA_ERROR):
        out["infra_errors"] = [(r["problem_id"], r["sample_index"]) for r in rows if r["verdict"] == INFRA_ERROR][:50]
    isolations = {(r.get("grade_detail") or {}).get("isolation") for r in rows} - {None}
    if isolations:
        out["sandbox_isolation"] = sorted(isolations)
    return out


def _paper_columns(rows: list[dict], per_problem_rows: list[dict[int, dict]], strict_score: float) -> dict:
    """The paper's grader beside ours: its score (the same mean of per-problem means), the difference,
    and the samples where the two disagree, by direction, with a few examples."""
    score = 100 * _mean([_mean([r["paper_verdict"] == CORRECT for r in rs.values()])
                         for rs in per_problem_rows])
    differ = {"paper_only": [], "strict_only": []}  # correct for the paper's grader only / for ours only
    for r in rows:
        ours, theirs = r["verdict"] == CORRECT, r["paper_verdict"] == CORRECT
        if ours != theirs:
            differ["strict_only" if ours else "paper_only"].append(r)
    examples = {k: [{"problem_id": r["problem_id"], "sample_index": r["sample_index"],
                     "extracted": r.get("extracted"), "verdict": r["verdict"], "paper_verdict": r["paper_verdict"]}
                    for r in v[:5]] for k, v in differ.items()}
    return {"paper_score": score, "paper_minus_strict": score - strict_score,
            "disagreements": {"paper_only": len(differ["paper_only"]),
                              "strict_only": len(differ["strict_only"]), "examples": examples}}


def _machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "platform": platform.platform(), "nproc": os.cpu_count()}


def write_report(out_dir: str | Path, summaries: list[dict], *, model: str, backend: str, graders: dict,
                 extra: dict | None = None) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": model, "backend": backend, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": _machine(), "graders": graders, "benchmarks": summaries, **(extra or {})}
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


def _cell(s: dict) -> str:
    flag = "" if s.get("complete", True) else "*"
    return f"{s['score']:.1f} ± {s['stderr']:.1f}{flag}"


def _paper(s: dict) -> float | None:
    return s.get("paper_score", s.get("lenient_score"))  # reports written before `paper_score` had the latter


# The two columns, for the report and the README.
TWO_COLUMNS = ("**Strict** is our grading, the number we stand behind: only the answer after the last "
               "`</think>` counts, and it is checked for mathematical equality or run against the tests. "
               "**Paper** grades the same samples the way the paper's own scripts did (the authors' math grader, "
               "LiveCodeBench's harness as they ran it, evalplus's rules), quirks included, and is the column to "
               "compare with the paper's Table 1. Their difference is grading, not the model; the samples where "
               "the two disagree are counted and shown below.")


def render_markdown(report: dict) -> str:
    sums = {s["benchmark"]: s for s in report["benchmarks"]}
    cols = [b for b in TABLE1_ORDER if b in sums] + [b for b in sums if b not in TABLE1_ORDER]
    paper = {b: _paper(sums[b]) for b in cols}
    lines = [f"# Evaluation: {report['model']}", "",
             f"Backend `{report['backend']}`, {report['date']}. Scores in percent ± standard error over "
             "problems. `*` = some samples failed to generate or grade (infra_error).", "", TWO_COLUMNS, "",
             "| Model | " + " | ".join(sums[b]["title"] for b in cols) + " |",
             "|---|" + "---:|" * len(cols),
             f"| {report['model']} (strict) | " + " | ".join(_cell(sums[b]) for b in cols) + " |"]
    if any(v is not None for v in paper.values()):
        lines.append(f"| {report['model']} (paper) | "
                     + " | ".join("–" if paper[b] is None else f"{paper[b]:.1f}" for b in cols) + " |")
    lines += ["", "| Benchmark | metric | problems | samples | strict | ± s.e. | ± std over runs | paper | "
              "paper − strict | truncated | verdicts | source | sha256 |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for b in cols:
        s = sums[b]
        v = ", ".join(f"{k} {c}" for k, c in s["verdicts"].items() if c)
        runs = f"{s['std_across_runs']:.1f}" if s.get("std_across_runs") is not None else "–"
        pp, diff = ("–", "–") if paper[b] is None else (f"{paper[b]:.2f}", f"{paper[b] - s['score']:+.2f}")
        d = s["dataset"]
        lines.append(f"| {s['title']} | {s['metric']} | {s['problems']} | {s['samples']} | {s['score']:.2f} | "
                     f"{s['stderr']:.2f} | {runs} | {pp} | {diff} | {100 * s['truncation_rate']:.1f}% | {v} | "
                     f"{d['source']} ({d['version']}) | `{d['sha256'][:16]}` |")
    disagree = [b for b in cols if sums[b].get("disagreements")]
    if disagree:
        lines += ["", "## Where strict and paper disagree", "",
                  "| Benchmark | correct for paper only | correct for strict only | examples (problem, "
                  "sample: answer, strict → paper) |", "|---|---:|---:|---|"]
        for b in disagree:
            dis = sums[b]["disagreements"]
            ex = [e for k in ("paper_only", "strict_only") for e in dis["examples"][k][:3]]
            shown = "; ".join(f"{e['problem_id']} #{e['sample_index']}: {_short(e['extracted'])} "
                              f"{e['verdict']} → {e['paper_verdict']}" for e in ex) or "–"
            lines.append(f"| {sums[b]['title']} | {dis['paper_only']} | {dis['strict_only']} | {shown} |")
    lines += ["", "## Protocol", ""]
    samplings = {json.dumps(s.get("sampling"), sort_keys=True) for s in report["benchmarks"] if s.get("sampling")}
    for sp in samplings:
        lines.append(f"- sampling: `{sp}` (sample i uses seed + i); prompt: ChatML with `<think>\\n` prefilled")
    if report.get("engine"):
        lines.append(f"- engine: `{json.dumps(report['engine'], default=str)}` (device, dtype, weight quantization, "
                     "kernels)")
    lines.append(f"- graders: `{json.dumps(report['graders'], default=str)}`")
    for b in cols:
        s = sums[b]
        extra = {k: v for k, v in s["dataset"].items() if k not in ("name", "source", "version", "sha256", "problems")}
        if extra:
            lines.append(f"- {s['title']} data: {json.dumps(extra, default=str)}")
        if s.get("n_min") != s.get("n_max"):
            hist = Counter(s["n_per_problem"].values())
            lines.append(f"- {s['title']}: samples per problem vary, n = {s['n_min']}–{s['n_max']} (problems with "
                         + ", ".join(f"n={k}: {hist[k]}" for k in sorted(hist, reverse=True))
                         + "); score = mean over problems of per-problem means; n per problem in report.json")
        if s.get("sandbox_isolation"):
            lines.append(f"- {s['title']} sandbox isolation: {', '.join(s['sandbox_isolation'])}")
    errata = [(sums[b]["title"], e) for b in cols for e in sums[b].get("errata", [])]
    if errata:
        lines += ["", "## Errata", ""] + [f"- {t}: {e}" for t, e in errata]
    return "\n".join(lines) + "\n"


def _short(text: str | None, width: int = 40) -> str:
    """An extracted answer for a table cell: `code`, cut to `width`; "(none)" when nothing was extracted."""
    if text is None:
        return "(none)"
    text = " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")
    return f"`{text if len(text) <= width else text[:width - 1] + '…'}`"


def load_report_rows(out_dir: str | Path) -> dict:
    """`pcm eval report DIR`: re-read report.json (and re-render report.md from it)."""
    out = Path(out_dir)
    p = out / "report.json"
    if not p.exists():
        raise FileNotFoundError(f"{out}: no report.json (run `pcm eval run` or `pcm eval grade` first)")
    report = json.loads(p.read_text(encoding="utf-8"))
    atomic_write_text(out / "report.md", render_markdown(report))
    return report
