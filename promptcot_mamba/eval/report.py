"""Scores and the report: JSON for machines, Markdown in Table 1's layout for people.

Score = avg@n = mean over problems of the fraction of that problem's n samples graded correct. This is
pass@1 estimated from n samples: the unbiased pass@k estimator of the Codex paper (Chen et al. 2021,
arXiv:2107.03374), 1 - C(n-c, k)/C(n, k), is c/n for k = 1. Uncertainty: the standard error over problems
of the per-problem means; the paper's "±" (std of per-run accuracies) is reported too.
A problem without exactly n samples (indices 0..n-1) raises `ShortfallError`; samples whose generation
or grading failed (`infra_error`) make the benchmark `complete: false` — they count as not correct and
are listed, never dropped.
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
    "olympiadbench": ["2212: gold `N=n` becomes the tautology Eq(n, n) in math-verify (symbols are lowercased), so "
                      "the strict grader accepts any `N=n+c` there (a known false positive)."],
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


def summarize(bench: Benchmark, rows: list[dict], *, n: int, sampling: dict | None) -> dict[str, Any]:
    """One benchmark's numbers from its graded rows."""
    by_problem: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        idx = int(r["sample_index"])
        if idx in by_problem[r["problem_id"]]:
            raise ShortfallError(f"{bench.name}: duplicate sample {idx} for problem {r['problem_id']}")
        by_problem[r["problem_id"]][idx] = r
    short = [(p.problem_id, len(by_problem.get(p.problem_id, {}))) for p in bench.problems
             if sorted(by_problem.get(p.problem_id, {})) != list(range(n))]
    if short:
        raise ShortfallError(f"{bench.name}: {len(short)} problems lack exactly n={n} samples (indices 0..{n - 1}), "
                             f"e.g. {short[:3]}; refusing to average over fewer")
    pids = [p.problem_id for p in bench.problems]
    per_problem = [_mean([by_problem[pid][i]["verdict"] == CORRECT for i in range(n)]) for pid in pids]
    per_run = [_mean([by_problem[pid][i]["verdict"] == CORRECT for pid in pids]) for i in range(n)]
    counts = Counter(r["verdict"] for r in rows)
    out: dict[str, Any] = {
        "benchmark": bench.name, "title": SPECS[bench.name].title if bench.name in SPECS else bench.name,
        "metric": f"avg@{n}" if n > 1 else "pass@1", "n": n, "problems": len(pids), "samples": len(rows),
        "score": 100 * _mean(per_problem),
        "stderr": 100 * _std(per_problem) / math.sqrt(len(per_problem)) if per_problem else float("nan"),
        "std_across_runs": 100 * _std(per_run) if n > 1 else None,
        "verdicts": {v: counts.get(v, 0) for v in VERDICTS},
        "complete": counts.get(INFRA_ERROR, 0) == 0,
        "truncation_rate": _mean([r.get("finish_reason") == "length" for r in rows]),
        "mean_completion_tokens": _mean([r["completion_tokens"] for r in rows if r.get("completion_tokens")
                                         is not None]) if any(r.get("completion_tokens") for r in rows) else None,
        "dataset": bench.manifest(), "sampling": sampling, "errata": ERRATA.get(bench.name, []),
    }
    if any("lenient_verdict" in r for r in rows):
        lp = [_mean([by_problem[pid][i].get("lenient_verdict") == CORRECT for i in range(n)]) for pid in pids]
        out["lenient_score"] = 100 * _mean(lp)
    if counts.get(INFRA_ERROR):
        out["infra_errors"] = [(r["problem_id"], r["sample_index"]) for r in rows if r["verdict"] == INFRA_ERROR][:50]
    isolations = {(r.get("grade_detail") or {}).get("isolation") for r in rows} - {None}
    if isolations:
        out["sandbox_isolation"] = sorted(isolations)
    return out


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


def render_markdown(report: dict) -> str:
    sums = {s["benchmark"]: s for s in report["benchmarks"]}
    cols = [b for b in TABLE1_ORDER if b in sums] + [b for b in sums if b not in TABLE1_ORDER]
    lines = [f"# Evaluation: {report['model']}", "",
             f"Backend `{report['backend']}`, {report['date']}. Scores in percent ± standard error over problems "
             "(strict grader). `*` = some samples failed to generate or grade (infra_error).", "",
             "| Model | " + " | ".join(sums[b]["title"] for b in cols) + " |",
             "|---|" + "---:|" * len(cols),
             f"| {report['model']} | " + " | ".join(_cell(sums[b]) for b in cols) + " |", "",
             "| Benchmark | metric | problems | samples | score | ± s.e. | ± std over runs | lenient (paper) | "
             "truncated | verdicts | source | sha256 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for b in cols:
        s = sums[b]
        v = ", ".join(f"{k} {c}" for k, c in s["verdicts"].items() if c)
        runs = f"{s['std_across_runs']:.1f}" if s.get("std_across_runs") is not None else "–"
        lenient = f"{s['lenient_score']:.1f}" if s.get("lenient_score") is not None else "–"
        d = s["dataset"]
        lines.append(f"| {s['title']} | {s['metric']} | {s['problems']} | {s['samples']} | {s['score']:.2f} | "
                     f"{s['stderr']:.2f} | {runs} | {lenient} | {100 * s['truncation_rate']:.1f}% | {v} | "
                     f"{d['source']} ({d['version']}) | `{d['sha256'][:16]}` |")
    lines += ["", "## Protocol", ""]
    samplings = {json.dumps(s.get("sampling"), sort_keys=True) for s in report["benchmarks"] if s.get("sampling")}
    for sp in samplings:
        lines.append(f"- sampling: `{sp}` (sample i uses seed + i); prompt: ChatML with `<think>\\n` prefilled")
    lines.append(f"- graders: `{json.dumps(report['graders'], default=str)}`")
    for b in cols:
        s = sums[b]
        extra = {k: v for k, v in s["dataset"].items() if k not in ("name", "source", "version", "sha256", "problems")}
        if extra:
            lines.append(f"- {s['title']} data: {json.dumps(extra, default=str)}")
        if s.get("sandbox_isolation"):
            lines.append(f"- {s['title']} sandbox isolation: {', '.join(s['sandbox_isolation'])}")
    errata = [(sums[b]["title"], e) for b in cols for e in sums[b].get("errata", [])]
    if errata:
        lines += ["", "## Errata", ""] + [f"- {t}: {e}" for t, e in errata]
    return "\n".join(lines) + "\n"


def load_report_rows(out_dir: str | Path) -> dict:
    """`pcm eval report DIR`: re-read report.json (and re-render report.md from it)."""
    out = Path(out_dir)
    p = out / "report.json"
    if not p.exists():
        raise FileNotFoundError(f"{out}: no report.json (run `pcm eval run` or `pcm eval grade` first)")
    report = json.loads(p.read_text(encoding="utf-8"))
    atomic_write_text(out / "report.md", render_markdown(report))
    return report
