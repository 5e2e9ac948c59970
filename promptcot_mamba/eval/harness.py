"""The evaluation pipeline: generate (resumable) -> grade -> report, as three separate steps over JSONL.

Protocol (paper §3, and the authors' generation script `PromptCoT_Mamba/infer_longcot.py` in
https://github.com/inclusionAI/PromptCoT): the ChatML prompt with `<think>\\n` prefilled and the math
suffix (`text.prompts.paper_prompt`), temperature 0.8, top_p 0.95, repetition penalty 1.1, up to 65,536
new tokens, avg@16 on AIME, avg@8 on LiveCodeBench, pass@1 elsewhere. Every one is a default the caller
can override, and every one is written into the report.

Samples: exactly n per problem, sample i drawn with seed `seed + i` (the paper increments the seed per
repetition), each its own request with n=1 so a backend never has to honour per-sample seeds itself.
`samples.jsonl` is appended as results arrive; a rerun skips samples already there and retries those
whose generation failed. A problem that still lacks a sample after generation is an error, never a
silent average over fewer (the mistake of huggingface/lighteval issue #771). `pcm eval grade`
(`grade_file`) takes files made elsewhere, where problems may have different numbers of samples; its
report then gives n per problem and scores the mean of per-problem means (report.py).

Files under `out_dir/<benchmark>/`: samples.jsonl (raw generations), verdicts.jsonl (one graded row per
sample; fields in docs/formats.md, "Evaluation rows"); `out_dir/report.json` and `report.md` (report.py).
"""

from __future__ import annotations

import gzip
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from promptcot_mamba.common.files import append_jsonl, read_jsonl, write_jsonl
from promptcot_mamba.eval.benchmarks import SPECS, Benchmark, Problem, custom_benchmark, load_benchmark
from promptcot_mamba.eval.verdict import INFRA_ERROR
from promptcot_mamba.llm.base import GenerationRequest, LLMClient
from promptcot_mamba.text.prompts import paper_prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    max_tokens: int = 65536
    n: int | None = None  # samples per problem; None = the benchmark's protocol (16 AIME, 8 LCB, else 1)
    seed: int = 0
    top_k: int = -1

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"SamplingConfig.max_tokens must be >= 1, got {self.max_tokens}")
        if self.n is not None and self.n < 1:
            raise ValueError(f"SamplingConfig.n must be >= 1, got {self.n}")

    def n_for(self, benchmark: str) -> int:
        if self.n is not None:
            return self.n
        return SPECS[benchmark].default_n if benchmark in SPECS else 1


@dataclass
class EvalConfig:
    out_dir: str
    benchmarks: Sequence[str] = ()
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    benchmark_dir: str | None = None
    lcb_tests: str | None = None
    limit: int | None = None  # first N problems of each benchmark (smoke runs; recorded in the report)
    batch_size: int = 64  # requests per client.generate call (progress and resume granularity)
    progress: bool = True
    model_name: str = "model"
    math_timeout_s: float = 10.0
    paper: bool = True  # also grade every sample as the paper's own graders did (`paper_verdict`)
    code: Any = None  # CodeGradeConfig; None = defaults
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("EvalConfig.batch_size must be >= 1")


# ------------------------------------------------------------------------------------------ generation
def _prompt_for(p: Problem) -> str:
    return paper_prompt(p.question, math=p.math)


def _read_rows(path: Path) -> list[dict]:
    """Sample rows, tolerant: no file yet is no rows; a line that does not parse (a write torn by a crash,
    wherever it sits) is skipped with a warning; a last line without its newline is still read (files
    made by other tools often end that way)."""
    return read_jsonl(path, on_bad="skip", missing_ok=True, torn_tail="parse")


def generate_samples(client: LLMClient, bench: Benchmark, sampling: SamplingConfig, samples_path: str | Path, *,
                     batch_size: int = 64, progress: bool = True) -> list[dict]:
    """Generate every missing (problem, sample) of `bench`; returns all sample rows, n per problem."""
    from tqdm.auto import tqdm

    path = Path(samples_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = sampling.n_for(bench.name)
    done: dict[tuple[str, int], dict] = {}
    for r in _read_rows(path):
        key = (r["problem_id"], int(r["sample_index"]))
        if r.get("error") is None or key not in done:
            done[key] = r  # a later successful row replaces an earlier failure
    todo = [(p, i) for p in bench.problems for i in range(n)
            if (p.problem_id, i) not in done or done[(p.problem_id, i)].get("error") is not None]
    backend = getattr(client, "name", type(client).__name__)
    with tqdm(total=len(todo), disable=not progress, desc=f"generating {bench.name}") as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            reqs = [GenerationRequest(prompt=_prompt_for(p), max_tokens=sampling.max_tokens,
                                      temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                                      repetition_penalty=sampling.repetition_penalty, n=1, seed=sampling.seed + i,
                                      metadata={"stage": "eval", "benchmark": bench.name, "problem_id": p.problem_id,
                                                "sample_index": i, "problem": p.question, "answer": p.gold})
                    for p, i in chunk]
            t0 = time.perf_counter()
            outs = client.generate(reqs)
            if len(outs) != len(reqs):
                raise RuntimeError(f"{backend}: returned {len(outs)} results for {len(reqs)} requests")
            rows = []
            for (p, i), gens in zip(chunk, outs):
                if len(gens) != 1:
                    raise RuntimeError(f"{backend}: returned {len(gens)} samples for a request with n=1")
                g = gens[0]
                row = {"benchmark": bench.name, "problem_id": p.problem_id, "sample_index": i,
                       "seed": sampling.seed + i, "completion": g.text, "finish_reason": g.finish_reason,
                       "completion_tokens": g.completion_tokens, "error": g.error,
                       "gen_time_s": g.latency_s if g.latency_s is not None else (time.perf_counter() - t0) / len(chunk),
                       "backend": backend}
                rows.append(row)
                done[(p.problem_id, i)] = row
            append_jsonl(path, rows)  # one append per chunk: a crash loses at most the chunk in flight
            bar.update(len(chunk))
    rows = [done[(p.problem_id, i)] for p in bench.problems for i in range(n) if (p.problem_id, i) in done]
    missing = len(bench.problems) * n - len(rows)
    if missing:
        raise RuntimeError(f"{bench.name}: {missing} samples missing after generation")
    return rows


# --------------------------------------------------------------------------------------------- grading
class Graders:
    """Lazily built math and code graders shared across benchmarks of one run. `paper=False` skips the
    paper's graders where they cost a second run (math; LiveCodeBench); `lenient` is its old name, kept for
    one release."""

    def __init__(self, *, math_timeout_s: float = 10.0, paper: bool = True, code_config=None,
                 workers: int | None = None, lenient: bool | None = None):
        self._math = None
        self._code = None
        self.paper = paper if lenient is None else lenient
        self.math_timeout_s, self.code_config, self.workers = math_timeout_s, code_config, workers

    @property
    def math(self):
        if self._math is None:
            from promptcot_mamba.eval.math_grader import MathGradeConfig, MathGrader

            self._math = MathGrader(MathGradeConfig(timeout_s=self.math_timeout_s, workers=self.workers,
                                                    paper=self.paper))
        return self._math

    @property
    def code(self):
        if self._code is None:
            from promptcot_mamba.eval.code_grader import CodeGradeConfig, CodeGrader

            cfg = self.code_config or CodeGradeConfig()
            if self.workers:
                cfg = replace(cfg, jobs=self.workers)
            if not self.paper and cfg.paper:  # no second (paper) run of the code either
                cfg = replace(cfg, paper=False)
            self._code = CodeGrader(cfg)
        return self._code

    def info(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        out: dict[str, Any] = {"math_timeout_s": self.math_timeout_s, "paper": self.paper}
        for pkg in ("math-verify", "latex2sympy2_extended", "sympy"):
            try:
                out[pkg] = version(pkg)
            except PackageNotFoundError:
                out[pkg] = None
        if self._code is not None:
            from promptcot_mamba.eval.sandbox import sandbox_isolation

            out["code"] = asdict(self._code.config)
            out["sandbox_isolation"] = sandbox_isolation(self._code.config.isolation)
        return out

    def close(self) -> None:
        if self._math is not None:
            self._math.close()


def math_options(p: Problem) -> dict[str, Any]:
    """What the strict math grader needs to know about a problem besides its gold (see strict_worker)."""
    tol = p.data.get("error")
    return {"multiple": bool(p.data.get("multiple")), "tolerance": float(tol) if tol else None,
            "unit": p.data.get("unit"), "question": p.question}


def grade_rows(bench: Benchmark, rows: list[dict], graders: Graders, *, progress: bool = True) -> list[dict]:
    """Add `extracted`, `verdict` (ours, strict), `paper_verdict` (the paper's grader reproduced; None when
    not run), `grade_detail`, `grade_time_s` to rows."""
    probs = bench.by_id()
    out = [dict(r) for r in rows]
    for r in out:
        if r["problem_id"] not in probs:
            raise ValueError(f"{bench.name}: unknown problem_id {r['problem_id']!r}")
    ok = [r for r in out if r.get("error") is None]
    for r in out:
        if r.get("error") is not None:
            r.update(extracted=None, verdict=INFRA_ERROR, paper_verdict=INFRA_ERROR,
                     grade_detail={"error": r["error"]}, grade_time_s=0.0)
    kind = SPECS[bench.name].kind if bench.name in SPECS else "math"
    if kind == "math":
        items = []
        for r in ok:
            p = probs[r["problem_id"]]
            items.append((r["completion"], p.gold, math_options(p)))
        grades = graders.math.grade_many(items, progress=progress, desc=f"grading {bench.name}")
        for r, g in zip(ok, grades):
            r.update(extracted=g.extracted, verdict=g.verdict, paper_verdict=g.paper_verdict,
                     grade_detail=g.detail, grade_time_s=g.time_s, gold=probs[r["problem_id"]].gold)
    else:
        graders.code.prepare(bench, progress=progress)
        grades = graders.code.grade_many([(probs[r["problem_id"]], r["completion"]) for r in ok],
                                         progress=progress, desc=f"grading {bench.name}")
        for r, g in zip(ok, grades):
            # paper_verdict: LiveCodeBench's harness as the authors ran it; HumanEval(+): evalplus's rules
            r.update(extracted=g.extracted, verdict=g.verdict, paper_verdict=g.paper_verdict,
                     grade_detail=g.detail, grade_time_s=g.time_s)
    return out


# ------------------------------------------------------------------------------------------ entry points
def evaluate_benchmark(client: LLMClient, bench: Benchmark, config: EvalConfig, graders: Graders) -> dict:
    from promptcot_mamba.eval.report import summarize

    bdir = Path(config.out_dir) / bench.name
    rows = generate_samples(client, bench, config.sampling, bdir / "samples.jsonl", batch_size=config.batch_size,
                            progress=config.progress)
    verdicts = grade_rows(bench, rows, graders, progress=config.progress)
    write_jsonl(bdir / "verdicts.jsonl", verdicts)
    return summarize(bench, verdicts, n=config.sampling.n_for(bench.name), sampling=asdict(config.sampling))


def evaluate(client: LLMClient, config: EvalConfig) -> dict:
    """Run every benchmark of `config` through `client`; writes per-sample rows and report.{json,md}."""
    from promptcot_mamba.eval.report import write_report

    if not config.benchmarks:
        raise ValueError("EvalConfig.benchmarks is empty")
    graders = Graders(math_timeout_s=config.math_timeout_s, paper=config.paper, code_config=config.code,
                      workers=config.workers)
    try:
        results = []
        for name in config.benchmarks:
            bench = load_benchmark(name, benchmark_dir=config.benchmark_dir, lcb_tests=config.lcb_tests,
                                   limit=config.limit)
            results.append(evaluate_benchmark(client, bench, config, graders))
        settings = getattr(client, "settings", None)  # an in-process engine's dtype, quantization, kernels
        return write_report(config.out_dir, results, model=config.model_name, backend=getattr(client, "name", "?"),
                            graders=graders.info(), extra={"engine": settings} if settings else None)
    finally:
        graders.close()


def evaluate_problems(client: LLMClient, problems: Sequence[dict | tuple], out_dir: str | Path, *,
                      name: str = "custom", n: int = 1, sampling: SamplingConfig | None = None,
                      model_name: str = "model", progress: bool = False, paper: bool = True,
                      math_timeout_s: float = 10.0, workers: int | None = None) -> dict:
    """Evaluate `client` on custom math problems — (id, problem, answer) triples or dicts with those keys —
    with `n` samples each; writes out_dir/<name>/{samples,verdicts}.jsonl and out_dir/report.{json,md},
    and returns the report dict (report["benchmarks"][0]["score"] is avg@n in percent)."""
    bench = custom_benchmark(name, problems)
    sampling = replace(sampling or SamplingConfig(), n=n)
    cfg = EvalConfig(out_dir=str(out_dir), benchmarks=(name,), sampling=sampling, progress=progress,
                     model_name=model_name, paper=paper, math_timeout_s=math_timeout_s, workers=workers)
    from promptcot_mamba.eval.report import write_report

    graders = Graders(math_timeout_s=math_timeout_s, paper=paper, workers=workers)
    try:
        summary = evaluate_benchmark(client, bench, cfg, graders)
        return write_report(out_dir, [summary], model=model_name, backend=getattr(client, "name", "?"),
                            graders=graders.info())
    finally:
        graders.close()


# ------------------------------------------------------------------------------ grading files from elsewhere
_ROW = "{benchmark, problem_id, completion[, sample_index, error]}"


def _numbered_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for every row of a samples file. A line that is not a JSON object is refused,
    naming file and line; a last line without its newline is read (other tools often write files so)."""
    rows = read_jsonl(path, torn_tail="parse")  # one object per non-blank line, or a ValueError
    with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as fh:
        lines = [k for k, raw in enumerate(fh, 1) if raw.strip()]  # the lines read_jsonl parsed
    return list(zip(lines, rows, strict=True))


def _row_problem(r: dict) -> str | None:
    """What is wrong with one row of a samples file, as "field: why", or None."""
    for key in ("benchmark", "problem_id", "completion"):
        if key not in r:
            return f"{key}: missing (rows are {_ROW})"
    if not isinstance(r["benchmark"], str) or r["benchmark"] not in SPECS:
        return f"benchmark: unknown {r['benchmark']!r}; choose from {', '.join(SPECS)}"
    pid = r["problem_id"]
    if isinstance(pid, bool) or not isinstance(pid, str | int):
        return f"problem_id: expected a string or an integer, got {type(pid).__name__}"
    # A failed generation carries `error` (docs/formats.md, "Evaluation rows"); its completion may be null.
    if not isinstance(r["completion"], str) and not (r["completion"] is None and r.get("error") is not None):
        return (f"completion: expected a string, got {type(r['completion']).__name__} (null only on a row with "
                "an `error`: a failed generation)")
    idx = r.get("sample_index")
    if idx is not None and (isinstance(idx, bool) or not isinstance(idx, int) or idx < 0):
        return f"sample_index: expected an integer >= 0, got {idx!r}"
    return None


def _check_samples_file(path: str | Path, *, benchmark_dir: str | None = None, lcb_tests: str | None = None,
                       allow_partial: bool = False) -> dict[str, tuple[Benchmark, list[dict]]]:
    """Read and check a whole samples file before anything is graded: every row's fields, benchmark names,
    problem ids, duplicate (problem_id, sample_index) pairs and, unless `allow_partial`, that every problem
    of a benchmark is present. The first bad row is a ValueError naming file, line and field.

    Returns {benchmark: (the benchmark, or the subset of its problems present, marked `partial`; its rows)}.
    A row without `sample_index` gets its position among its problem's rows in file order. Problems may
    have different numbers of samples (files from other systems often lack a few failed generations)."""
    path = Path(path)
    numbered = _numbered_rows(path)
    if not numbered:
        raise ValueError(f"{path}: no rows")
    groups: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for line, r in numbered:
        why = _row_problem(r)
        if why:
            raise ValueError(f"{path}:{line}: {why}")
        groups[r["benchmark"]].append((line, {**r, "problem_id": str(r["problem_id"])}))
    out = {}
    for name, items in groups.items():
        bench = load_benchmark(name, benchmark_dir=benchmark_dir, lcb_tests=lcb_tests)
        known = bench.by_id()
        seen: dict[tuple[str, int], int] = {}  # (problem_id, sample_index) -> line
        position: dict[str, int] = defaultdict(int)
        for line, r in items:
            pid = r["problem_id"]
            if pid not in known:
                raise ValueError(f"{path}:{line}: problem_id: {pid!r} is not in the benchmark {name}")
            if r.get("sample_index") is None:
                r["sample_index"] = position[pid]
            position[pid] += 1
            first = seen.setdefault((pid, r["sample_index"]), line)
            if first != line:
                raise ValueError(f"{path}:{line}: sample_index: problem {pid!r} of {name} already has sample "
                                 f"{r['sample_index']} (line {first})")
        if len(position) != len(bench.problems):
            if not allow_partial:
                raise ValueError(f"{path}: {name}: {len(position)} of {len(bench.problems)} problems present; "
                                 "pass --allow-partial to grade a subset (the report then says so)")
            bench = replace(bench, problems=[p for p in bench.problems if p.problem_id in position],
                            extra={**bench.extra, "partial": f"{len(position)}/{len(bench.problems)}"})
        out[name] = (bench, [r for _, r in items])
    return out


def grade_file(samples_path: str | Path, out_dir: str | Path, *, benchmark_dir: str | None = None,
               lcb_tests: str | None = None, allow_partial: bool = False, progress: bool = True,
               math_timeout_s: float = 10.0, paper: bool = True, code_config=None, workers: int | None = None,
               model_name: str | None = None) -> dict:
    """`pcm eval grade`: grade completions made by any system. Rows: {benchmark, problem_id, completion,
    [sample_index, error]}; the whole file is checked first (`_check_samples_file`), so a bad row costs no
    grading and writes nothing. Writes out_dir/verdicts.jsonl (input rows + verdict), rewritten after each
    benchmark so a later failure keeps what was graded, then the report. A row with an `error` is a failed
    generation: graded `infra_error` (counted as not correct, listed, benchmark marked incomplete)."""
    from promptcot_mamba.eval.benchmarks import sha256_file
    from promptcot_mamba.eval.report import summarize, write_report

    groups = _check_samples_file(samples_path, benchmark_dir=benchmark_dir, lcb_tests=lcb_tests,
                                allow_partial=allow_partial)
    out = Path(out_dir)
    for stale in ("verdicts.jsonl", "report.json", "report.md"):  # an earlier grading's: not this file's
        (out / stale).unlink(missing_ok=True)
    graders = Graders(math_timeout_s=math_timeout_s, paper=paper, code_config=code_config, workers=workers)
    verdicts, summaries = [], []
    try:
        for name, (bench, rows) in groups.items():
            try:
                graded = grade_rows(bench, rows, graders, progress=progress)
            except BaseException:
                if verdicts:
                    log.warning("grading %s failed; the verdicts of %s are in %s", name,
                                ", ".join(s["benchmark"] for s in summaries), out / "verdicts.jsonl")
                raise
            verdicts += graded
            write_jsonl(out / "verdicts.jsonl", verdicts)
            summaries.append(summarize(bench, graded, n=None, sampling=None))
        return write_report(out, summaries, model=model_name or Path(samples_path).stem, backend="external",
                            graders=graders.info(),
                            extra={"samples_file": str(samples_path), "samples_sha256": sha256_file(Path(samples_path))})
    finally:
        graders.close()
