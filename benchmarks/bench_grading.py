"""Grading throughput: HumanEval+ canonical solutions (all 164 tasks, every base and plus input) graded by
`pcm eval grade` and by the `evalplus` package's own evaluator on the same data, in the same run; the
time per 1,000 strict math verifications; and LiveCodeBench grading time on the labelled corpus.

    python benchmarks/bench_grading.py [--skip-evalplus] [--out benchmarks/results/grading-cpu.json]
    python benchmarks/bench_grading.py --lcb-only  # rerun only the LiveCodeBench part, keeping the rest

Both code graders run as command-line processes over a samples file (imports, data loading and ground-truth
computation included), cold (empty ground-truth cache) then warm, with the same time limits
(min 4 s per input, 4x the canonical time) and 2 parallel workers. evalplus is a benchmark-only
dependency (pip install evalplus==0.3.1); its traps are handled here: HUMANEVAL_OVERRIDE_PATH points it at
the local file, XDG_CACHE_HOME isolates its cache, and its `<samples>_eval_results.json` is deleted before
each run (it silently reuses one). Timings on a shared 2-core VM are noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from promptcot_mamba.eval.benchmarks import default_benchmark_dir, load_benchmark  # noqa: E402


def _timed(cmd, env) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=env.get("PWD_OVERRIDE"))
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({r.returncode}): {r.stderr[-3000:]}")
    return dt, r.stdout + r.stderr


def run_ours(work: Path, samples: Path, jobs: int) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "ours-cache")}
    out = {}
    for phase in ("cold", "warm"):
        dest = work / f"ours-{phase}"
        dt, _ = _timed([sys.executable, "-m", "promptcot_mamba", "eval", "grade", str(samples), "--out", str(dest),
                        "--quiet", "--workers", str(jobs)], env)
        out[phase + "_s"] = dt
    rows = [json.loads(x) for x in (work / "ours-warm" / "verdicts.jsonl").read_text().splitlines()]
    verdicts = {}
    for r in rows:
        d = r.get("grade_detail") or {}
        verdicts[r["problem_id"]] = {"base": d.get("base") == "pass" or r["verdict"] == "correct",
                                     "plus": r["verdict"] == "correct"}
    out["verdicts"] = verdicts
    out["isolation"] = sorted({(r.get("grade_detail") or {}).get("isolation") for r in rows} - {None})
    return out


def run_evalplus(work: Path, bench_file: Path, jobs: int) -> dict:
    exe = shutil.which("evalplus.evaluate")
    if exe is None:
        raise FileNotFoundError("evalplus.evaluate not found: pip install evalplus==0.3.1")
    rows = [json.loads(x) for x in bench_file.read_text().splitlines()]
    samples = work / "evalplus_samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]})
                               + "\n" for r in rows))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "evalplus-cache"), "HUMANEVAL_OVERRIDE_PATH": str(bench_file)}
    out = {}
    result_file = work / "evalplus_samples_eval_results.json"
    for phase in ("cold", "warm"):
        result_file.unlink(missing_ok=True)
        dt, log = _timed([exe, "--dataset", "humaneval", "--samples", str(samples), "--parallel", str(jobs),
                          "--min_time_limit", "4.0", "--gt_time_limit_factor", "4.0"], env)
        out[phase + "_s"] = dt
    res = json.loads(result_file.read_text())
    out["verdicts"] = {tid: {"base": v[0]["base_status"] == "pass",
                             "plus": v[0]["base_status"] == "pass" and v[0]["plus_status"] == "pass"}
                       for tid, v in res["eval"].items()}
    from importlib.metadata import version

    out["version"] = version("evalplus")
    return out


def bench_math(n: int = 1000) -> dict:
    """Seconds per 1,000 verifications of distinct items (half gold, half perturbed: MATH-500 x 2). The
    in-process baseline runs first, in this process, so no variant starts with a warm sympy cache."""
    import logging

    from promptcot_mamba.eval.harness import math_options
    from promptcot_mamba.eval.math_grader import MathGradeConfig, MathGrader, equivalent, last_boxed

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    probs = load_benchmark("math500").problems
    items = []
    for i in range(n):
        p = probs[i % len(probs)]
        pred = p.gold if (i // len(probs)) % 2 == 0 else p.gold + "+1"
        items.append((f"reasoning\n</think>\n\nSo \\boxed{{{pred}}}", p.gold, math_options(p)))
    out = {"items": n, "load_average_before": os.getloadavg()}
    # Baseline: plain in-process math-verify on one core, no time limits at all (unsafe, for reference).
    t0 = time.perf_counter()
    for c, gold, _ in items:
        equivalent(gold, last_boxed(c))
    out["inprocess_single_core_s_per_1000"] = (time.perf_counter() - t0) / n * 1000
    for paper in (False, True):
        g = MathGrader(MathGradeConfig(paper=paper))
        _ = g.pool  # start + warm the workers outside the timing
        t0 = time.perf_counter()
        grades = g.grade_many(items)
        dt = time.perf_counter() - t0
        g.close()
        key = "strict_and_paper" if paper else "strict"
        out[key + "_s_per_1000"] = dt / n * 1000
        out[key + "_correct"] = sum(x.verdict == "correct" for x in grades)
    out["load_average_after"] = os.getloadavg()
    return out


def bench_lcb(jobs: int) -> dict:
    """LiveCodeBench: the 70 programs of tests/eval/data/lcb_grading_corpus.jsonl on their problems' statement
    sample tests (the hidden tests need the Hub), graded strict only, then strict + paper (the default: a
    second sandbox run per program), `jobs` at a time, 30 s per test. The one program that never terminates
    costs the full limit in each mode, so it is timed apart from the 69 others."""
    from promptcot_mamba.eval.code_grader import CodeGradeConfig, CodeGrader

    rows = [json.loads(x) for x in (ROOT / "tests/eval/data/lcb_grading_corpus.jsonl").read_text().splitlines()]
    probs = load_benchmark("livecodebench", lcb_tests="samples").by_id()
    wrap = "Thought.\n</think>\n\n```python\n{}```\n"
    out = {"programs": len(rows), "jobs": jobs, "tests": "statement samples", "load_average_before": os.getloadavg()}
    for paper in (False, True):
        key = "strict_and_paper" if paper else "strict"
        grader = CodeGrader(CodeGradeConfig(jobs=jobs, paper=paper))
        for part, sel in (("terminating", [r for r in rows if r["kind"] != "timeout"]),
                          ("never_terminating", [r for r in rows if r["kind"] == "timeout"])):
            t0 = time.perf_counter()
            grades = grader.grade_many([(probs[r["problem_id"]], wrap.format(r["program"])) for r in sel])
            dt = time.perf_counter() - t0
            out[f"{key}_{part}_s"] = dt
            if part == "terminating":
                out[f"{key}_programs_per_s"] = len(sel) / dt
                out[f"{key}_strict_equals_truth"] = sum(
                    (g.verdict == "correct") == (r["truth"] == "pass") for r, g in zip(sel, grades))
                if paper:
                    out["paper_equals_authors_copy"] = sum(
                        (g.paper_verdict == "correct") == (r["authors_copy_verdict"] == "pass")
                        for r, g in zip(sel, grades))
    out["load_average_after"] = os.getloadavg()
    return out


def bench_code(he: dict, work: Path, bench, bench_file: Path, args) -> None:
    samples = work / "samples.jsonl"
    samples.write_text("".join(json.dumps({
        "benchmark": "humanevalplus", "problem_id": p.problem_id,
        "completion": f"</think>\n```python\n{p.data['prompt']}{p.data['canonical_solution']}\n```"}) + "\n"
        for p in bench.problems))
    ours = run_ours(work, samples, args.jobs)
    he["ours"] = {k: v for k, v in ours.items() if k != "verdicts"}
    he["ours"]["pass_base"] = sum(v["base"] for v in ours["verdicts"].values())
    he["ours"]["pass_plus"] = sum(v["plus"] for v in ours["verdicts"].values())
    print(f"ours:     cold {ours['cold_s']:.1f} s, warm {ours['warm_s']:.1f} s, "
          f"base {he['ours']['pass_base']}/164, plus {he['ours']['pass_plus']}/164 ({ours['isolation']})")
    if not args.skip_evalplus:
        ep = run_evalplus(work, bench_file, args.jobs)
        he["evalplus"] = {k: v for k, v in ep.items() if k != "verdicts"}
        he["evalplus"]["pass_base"] = sum(v["base"] for v in ep["verdicts"].values())
        he["evalplus"]["pass_plus"] = sum(v["plus"] for v in ep["verdicts"].values())
        diff = sorted(t for t in ours["verdicts"] if ours["verdicts"][t] != ep["verdicts"].get(t))
        he["verdict_differences"] = {t: {"ours": ours["verdicts"][t], "evalplus": ep["verdicts"].get(t)} for t in diff}
        he["speedup_cold"] = ep["cold_s"] / ours["cold_s"]
        he["speedup_warm"] = ep["warm_s"] / ours["warm_s"]
        print(f"evalplus: cold {ep['cold_s']:.1f} s, warm {ep['warm_s']:.1f} s, "
              f"base {he['evalplus']['pass_base']}/164, plus {he['evalplus']['pass_plus']}/164 (v{ep['version']})")
        print(f"ratio evalplus/ours: cold {he['speedup_cold']:.2f}x, warm {he['speedup_warm']:.2f}x; "
              f"verdict differences: {diff or 'none'}")


def _print_lcb(r: dict) -> None:
    print(f"livecodebench: {r['programs'] - 1} terminating programs: strict {r['strict_terminating_s']:.1f} s "
          f"({r['strict_programs_per_s']:.1f} programs/s), strict + paper {r['strict_and_paper_terminating_s']:.1f} s "
          f"({r['strict_and_paper_programs_per_s']:.1f} programs/s); the never-terminating one: "
          f"{r['strict_never_terminating_s']:.1f} s strict, {r['strict_and_paper_never_terminating_s']:.1f} s both")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/grading-cpu.json"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-evalplus", action="store_true")
    ap.add_argument("--math-only", action="store_true", help="rerun only the math part, keeping the code results")
    ap.add_argument("--lcb-only", action="store_true", help="rerun only the LiveCodeBench part, keeping the rest")
    args = ap.parse_args()
    if args.lcb_only:
        prev = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
        result = {**prev, "livecodebench": bench_lcb(args.jobs)}
        _print_lcb(result["livecodebench"])
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
        return 0
    import torch

    bench = load_benchmark("humanevalplus")
    bench_file = default_benchmark_dir() / "humanevalplus/HumanEvalPlus-v0.1.10.jsonl"
    n_inputs = sum(len(p.data["base_input"]) + len(p.data["plus_input"]) for p in bench.problems)
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"nproc": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                          "platform": platform.platform()},
              "humanevalplus": {"tasks": len(bench.problems), "inputs": n_inputs, "jobs": args.jobs,
                                "time_limits": "per input max(4 s, 4 x canonical time)"}}
    if args.math_only:
        result = {**json.loads(Path(args.out).read_text()), "math_date": result["date"]}
    else:
        result["humanevalplus"]["load_average_before"] = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="pcm-bench-grading-") as tmp:
            bench_code(result["humanevalplus"], Path(tmp), bench, bench_file, args)
    result["math"] = bench_math()
    if not args.math_only:
        result["livecodebench"] = bench_lcb(args.jobs)
        _print_lcb(result["livecodebench"])
    m = result["math"]
    print(f"math: {m['strict_s_per_1000']:.2f} s per 1000 strict verifications (2 workers), "
          f"{m['strict_and_paper_s_per_1000']:.2f} s with the paper grader too; in-process single core "
          f"{m['inprocess_single_core_s_per_1000']:.2f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
