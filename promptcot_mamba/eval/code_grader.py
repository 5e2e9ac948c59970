"""Grading model-written code: HumanEval (its own `check`), HumanEval+ (EvalPlus differential testing on
base + plus inputs) and LiveCodeBench (stdin and functional tests), all run in `sandbox.run_python`.

Two verdicts per sample (`Grade.verdict`, `Grade.paper_verdict`):
- `verdict`, strict: what we stand behind. The code graded is the LAST fenced Python block after the last
  `</think>` (text.reasoning.split_reasoning); no `</think>` or no block is `no_answer`. Drafts inside the
  thinking are never run: EvalPlus's sanitizer and LiveCodeBench's extractor, given a whole reasoning
  trace, can pick one of them instead of the answer. LiveCodeBench programs run as a judge runs them (real
  stdin/stdout, exact tokens, the statement's float tolerance: see code_driver.py).
- `paper_verdict`: the verdict of the grader behind the paper's Table 1. HumanEval(+): EvalPlus's rules,
  which `verdict` already follows, so the two are equal (HumanEval/32 is graded as in the errata below).
  LiveCodeBench: the harness the authors ran, their copy of LiveCodeBench's testing_util.py (the official
  code as of LCB commit 15808c7, with 30 s per test), reproduced by the driver's "lcb_paper" mode, with the
  code their scorer extracts (`paper_extract_code`). We reproduce the authors' copy and not LiveCodeBench's
  current head because the copy is what produced the paper's numbers; the head has since changed how stdin
  is mocked (May 2025), which changes verdicts on programs that read `sys.stdin.buffer` or iterate over
  `sys.stdin`.

ERRATA (known upstream defects and how they are handled):
- HumanEval+/32 (`find_zero`): the HumanEval-format release (HumanEvalPlus-OriginFmt) calls
  `_poly(*candidate(*inp), inp)` with swapped arguments, so it fails every solution. We grade the
  EvalPlus-format file, where EvalPlus's own oracle applies (|poly(xs, out)| <= atol, atol 1e-4).
  evalplus 0.3.1 also marks /32 failed for every solution (a `continue` skips recording the pass,
  upstream PR #201): our verdict on /32 differs from that release by design.
- HumanEval+/4 and /2 carry atol 1e-6; float outputs get atol 1e-6 when the task says 0 (EvalPlus rule).
- LiveCodeBench: ~11 problems accept several outputs but are graded against one, 2 are interactive, 4
  have wrong tests (ERRATA.md in github.com/LiveCodeBench/LiveCodeBench). They are kept, as every
  published number keeps them.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import os
import pickle
import re
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptcot_mamba.common.files import atomic_write_bytes
from promptcot_mamba.eval import sandbox as sb
from promptcot_mamba.eval.livecodebench import restricted_loads, statement_float_tolerance
from promptcot_mamba.eval.verdict import CORRECT, INFRA_ERROR, NO_ANSWER, RUNTIME_ERROR, TIMEOUT, WRONG
from promptcot_mamba.text.reasoning import split_reasoning

log = logging.getLogger(__name__)

_DRIVER = Path(__file__).with_name("code_driver.py").read_text(encoding="utf-8")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PY_LANGS = {"", "python", "py", "python3", "py3"}


@dataclass(frozen=True)
class CodeGradeConfig:
    humaneval_timeout_s: float = 10.0  # whole `check` run (human-eval uses 3 s; generous on slow CPUs)
    evalplus_min_time_limit_s: float = 4.0  # per input: max(min, factor x canonical time) (EvalPlus HEAD)
    evalplus_time_factor: float = 4.0
    evalplus_task_cap_s: float = 60.0  # per test set, like EVALPLUS_TIMEOUT_PER_TASK
    lcb_test_timeout_s: float = 30.0  # per test, strict: the paper's LCB setting (LCB's default is 6 s)
    lcb_paper_timeout_s: float = 30.0  # per test, paper mode: the authors' setting
    paper: bool = True  # LiveCodeBench: also run the paper's harness (a second run per sample)
    memory_bytes: int = 4 << 30
    jobs: int = max(1, os.cpu_count() or 1)
    isolation: str = "auto"
    cache_dir: str | None = None  # HumanEval+ ground truth; default ~/.cache/promptcot_mamba

    def __post_init__(self) -> None:
        for k in ("humaneval_timeout_s", "evalplus_min_time_limit_s", "evalplus_time_factor",
                  "evalplus_task_cap_s", "lcb_test_timeout_s", "lcb_paper_timeout_s"):
            if not getattr(self, k) > 0:
                raise ValueError(f"CodeGradeConfig.{k} must be > 0")
        if self.jobs < 1:
            raise ValueError("CodeGradeConfig.jobs must be >= 1")


@dataclass
class Grade:
    verdict: str
    extracted: str | None
    detail: dict[str, Any] = field(default_factory=dict)  # LiveCodeBench: the paper run's under "paper"
    time_s: float = 0.0
    paper_verdict: str | None = None  # None only when LiveCodeBench's paper run is switched off


def extract_code(completion: str) -> str | None:
    """The last fenced Python block after the last `</think>`; None when there is none."""
    answer = split_reasoning(completion).answer
    if answer is None:
        return None
    blocks = [m.group(2) for m in _FENCE.finditer(answer) if m.group(1).lower() in _PY_LANGS]
    return blocks[-1] if blocks else None


def paper_extract_code(completion: str) -> str:
    """The code the authors' LiveCodeBench scorer grades: the text after the first "\n</think>\n\n" (all of
    it when there is none), then the lines between its last two lines containing ``` ("" if fewer than two)."""
    lines = completion.split("\n</think>\n\n", 1)[-1].split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    return "\n".join(lines[fences[-2] + 1:fences[-1]]) if len(fences) >= 2 else ""


def _run_driver(payload: dict, timeout_s: float, cfg: CodeGradeConfig, *, read_back: tuple[str, ...] = (),
                file_size: int | None = None) -> tuple[dict | None, sb.SandboxResult]:
    nonce = "@@pcm:" + secrets.token_hex(16) + "@@"
    payload = {**payload, "nonce": nonce}
    limits = sb.SandboxLimits(timeout_s=timeout_s, memory_bytes=cfg.memory_bytes,
                              file_size_bytes=file_size or (64 << 20), max_output_bytes=8 << 20)
    res = sb.run_python(_DRIVER, files={"payload.pkl": pickle.dumps(payload, protocol=4)}, limits=limits,
                        read_back=read_back, isolation=cfg.isolation)
    result = None
    for line in res.stdout.splitlines():
        if line.startswith(nonce):
            try:
                result = json.loads(line[len(nonce):])
            except json.JSONDecodeError:
                result = None
    return result, res


def _verdict(result: dict | None, res: sb.SandboxResult) -> tuple[str, dict]:
    detail: dict[str, Any] = {"sandbox": res.status, "isolation": res.isolation}
    if res.status == sb.INFRA_ERROR:
        return INFRA_ERROR, {**detail, "error": res.stderr[-500:]}
    if result is None:
        if res.status == sb.TIMEOUT:
            return TIMEOUT, detail
        tail = res.stderr[-500:]
        return RUNTIME_ERROR, {**detail, "error": tail or f"no result from driver (exit {res.returncode})"}
    detail.update({k: v for k, v in result.items() if k != "passed"})
    status = result.get("status")
    return {"pass": CORRECT, "fail": WRONG, "timeout": TIMEOUT}.get(status, RUNTIME_ERROR), detail


class CodeGrader:
    """Grades code completions for humaneval / humanevalplus / livecodebench problems.

    HumanEval+ expected outputs come from running the canonical solutions (in the sandbox) once per
    dataset hash and Python version, cached on disk; `prepare(benchmark)` computes or loads them.
    """

    def __init__(self, config: CodeGradeConfig | None = None):
        self.config = config or CodeGradeConfig()
        self._gt: dict[str, dict] = {}

    # -------------------------------------------------------------------------------------- ground truth
    def _cache_path(self, sha: str) -> Path:
        root = Path(self.config.cache_dir or os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        if not self.config.cache_dir:
            root = Path(root) / "promptcot_mamba"
        tag = hashlib.sha256(f"{sha}|{sys.version}".encode()).hexdigest()[:20]
        return root / f"humanevalplus-groundtruth-{tag}.pkl"

    def prepare(self, bench, *, use_cache: bool = True, progress: bool = False) -> dict[str, Any]:
        """Compute (or load) HumanEval+ expected outputs; returns timing info. No-op for other benchmarks."""
        if bench.name != "humanevalplus":
            return {}
        import time

        t0 = time.perf_counter()
        path = self._cache_path(bench.sha256)
        if use_cache and path.is_file():
            gt = restricted_loads(path.read_bytes())
            if set(gt) >= {p.problem_id for p in bench.problems}:
                self._gt.update(gt)
                return {"groundtruth": "cache", "path": str(path), "seconds": time.perf_counter() - t0}
        gt = self._compute_groundtruth(bench.problems, progress=progress)
        self._gt.update(gt)
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, pickle.dumps(gt, protocol=4))
        return {"groundtruth": "computed", "path": str(path), "seconds": time.perf_counter() - t0}

    def _compute_groundtruth(self, problems, *, progress: bool) -> dict[str, dict]:
        from tqdm.auto import tqdm

        def one(p):
            payload = {"mode": "groundtruth", "program": p.data["prompt"] + p.data["canonical_solution"],
                       "entry_point": p.data["entry_point"], "sets": ["base", "plus"],
                       "base_input": p.data["base_input"], "plus_input": p.data["plus_input"],
                       "out_file": "gt.pkl"}
            result, res = _run_driver(payload, 600.0, self.config, read_back=("gt.pkl",), file_size=1 << 30)
            if not result or result.get("status") != "pass" or "gt.pkl" not in res.files:
                raise RuntimeError(f"{p.problem_id}: canonical solution failed to run: "
                                   f"{result} {res.status} {res.stderr[-800:]}")
            return p.problem_id, restricted_loads(res.files["gt.pkl"])

        out = {}
        problems = sorted(problems, key=lambda p: -len(p.data["plus_input"]))  # big tasks first
        with cf.ThreadPoolExecutor(self.config.jobs) as ex:
            for pid, gt in tqdm(ex.map(one, problems), total=len(problems), disable=not progress,
                                desc="HumanEval+ expected outputs"):
                out[pid] = gt
        return out

    # ------------------------------------------------------------------------------------------ grading
    def grade(self, problem, completion: str, *, code: str | None = None) -> Grade:
        """Grade one completion (or, with `code=`, an already extracted program)."""
        import time

        t0 = time.perf_counter()
        fn = getattr(self, "_grade_" + problem.benchmark, None)
        if fn is None:
            raise ValueError(f"{problem.benchmark}: not a code benchmark (humaneval, humanevalplus, livecodebench)")
        given = code
        if code is None:
            code = extract_code(completion)
        if code is None:
            verdict, detail = NO_ANSWER, {"reason": "no </think> or no fenced python block after it"}
        else:
            verdict, detail = fn(problem, code)
        paper = verdict
        if problem.benchmark == "livecodebench":
            paper = None
            if self.config.paper:
                paper, detail["paper"] = self._grade_lcb_paper(
                    problem, given if given is not None else paper_extract_code(completion))
        return Grade(verdict, code, detail, time.perf_counter() - t0, paper)

    def _grade_humaneval(self, problem, code: str):
        d = problem.data
        payload = {"mode": "humaneval", "program": d["prompt"] + "\n" + code,
                   "check": d["test"] + f"\ncheck({d['entry_point']})\n", "timeout_s": self.config.humaneval_timeout_s}
        return _verdict(*_run_driver(payload, self.config.humaneval_timeout_s + 5, self.config))

    def _grade_humanevalplus(self, problem, code: str, *, sets=("base", "plus")):
        d = problem.data
        if problem.problem_id not in self._gt:
            raise RuntimeError("HumanEval+ expected outputs missing: call CodeGrader.prepare(benchmark) first")
        gt = self._gt[problem.problem_id]
        cfg = self.config
        payload = {"mode": "evalplus", "program": d["prompt"] + "\n" + code, "entry_point": d["entry_point"],
                   "atol": float(d.get("atol") or 0), "sets": list(sets), "load_timeout_s": cfg.humaneval_timeout_s}
        budget = cfg.humaneval_timeout_s
        for s in sets:
            limits = [max(cfg.evalplus_min_time_limit_s, cfg.evalplus_time_factor * t) for t in gt[s + "_time"]]
            payload.update({s + "_input": d[s + "_input"], s + "_expected": gt[s], s + "_limits": limits})
            budget += min(cfg.evalplus_task_cap_s, sum(limits)) + 1
        verdict, detail = _verdict(*_run_driver(payload, budget, cfg))
        return verdict, detail

    def _lcb_run(self, problem, mode: str, code: str, timeout_s: float, **extra):
        d = problem.data
        tests = d.get("tests")
        if tests is None:
            raise RuntimeError(f"livecodebench {problem.problem_id}: no tests attached (see attach_hidden_tests)")
        payload = {"mode": mode, "code": code, "tests": tests, "testtype": d["testtype"],
                   "func_name": (d.get("metadata") or {}).get("func_name"), "timeout_s": timeout_s, **extra}
        # The whole run's limit, like the harnesses' own: (per-test limit + 1) x tests + 5 s.
        verdict, detail = _verdict(*_run_driver(payload, (timeout_s + 1) * max(1, len(tests)) + 5, self.config))
        detail["n_tests"] = len(tests)
        return verdict, detail

    def _grade_livecodebench(self, problem, code: str):
        d = problem.data
        tol = d["float_tolerance"] if "float_tolerance" in d else \
            statement_float_tolerance(d.get("question_content") or "")
        verdict, detail = self._lcb_run(problem, "lcb", code, self.config.lcb_test_timeout_s,
                                        max_output_bytes=64 << 20, float_tolerance=tol)
        if tol:
            detail["float_tolerance"] = tol
        return verdict, detail

    def _grade_lcb_paper(self, problem, code: str):
        if not code:
            return NO_ANSWER, {"reason": "fewer than two ``` lines in the answer (the authors' extraction)"}
        return self._lcb_run(problem, "lcb_paper", code, self.config.lcb_paper_timeout_s)

    def grade_many(self, items, *, progress: bool = False, desc: str = "grading code") -> list[Grade]:
        """Grade [(problem, completion), ...] with `config.jobs` sandboxes at a time, in input order."""
        from tqdm.auto import tqdm

        items = list(items)
        # Longest first (LPT): one slow task started last would otherwise leave a core idle at the end.
        order = sorted(range(len(items)), key=lambda i: -self._cost(items[i][0]))
        futs: dict[int, cf.Future] = {}
        with cf.ThreadPoolExecutor(self.config.jobs) as ex:
            for i in order:
                futs[i] = ex.submit(self._safe_grade, *items[i])
            for _ in tqdm(cf.as_completed(futs.values()), total=len(futs), disable=not progress, desc=desc):
                pass
        return [futs[i].result() for i in range(len(items))]

    def _cost(self, problem) -> float:
        gt = self._gt.get(problem.problem_id)
        if gt is not None:
            return sum(gt["base_time"]) + sum(gt["plus_time"]) + 0.05
        return float(len(problem.data.get("tests") or problem.data.get("plus_input") or ()) or 1)

    def _safe_grade(self, problem, completion) -> Grade:
        try:
            return self.grade(problem, completion)
        except Exception as err:  # a grader bug must not become a wrong answer or kill the run
            log.exception("code grader failed on %s", problem.problem_id)
            return Grade(INFRA_ERROR, extract_code(completion), {"error": f"{type(err).__name__}: {err}"},
                         paper_verdict=INFRA_ERROR)
