"""The paper's seven benchmarks (Table 1): where each file comes from, its pinned hash, and how a record
becomes a `Problem` (id, prompt text, gold answer or tests).

Sources, in order: a local folder (`benchmark_dir=` / `--benchmark-dir` / `$PCM_BENCHMARK_DIR`, holding
each file at the relative path `SPECS[name].file` gives, e.g. `aime24/test.jsonl`), then the Hugging Face
Hub. Local files are pinned by sha256 and a mismatch is an error; Hub copies come in other layouts (parquet,
other field names), so they are normalised and hashed as canonical JSON, and the report says
`source: hub` with that hash. Every `Benchmark` carries name, source, version and hash for the report.

Gold answers: `GOLD_ERRATA` fixes, at load time, the golds that are defective upstream, each with its
reason (the report lists them). `scan_golds` checks a benchmark's golds (math: each parses, with the
strict grader's parser, to what it says and never to a trivial value such as 0 or a lone letter unless it
is one; code: tests present and non-empty); tests/eval/test_eval_gold_scan.py runs it on all seven
pinned files, and the loader runs it on copies from the Hub, which are not pinned.

LiveCodeBench: the offline copy has statements and statement-derived sample tests only. Hidden tests
come from `--lcb-tests PATH` (HF `code_generation_lite` jsonl rows) or the Hub, and each problem's full
test set is checked against the md5 the record carries (`qwq_tests_md5`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptcot_mamba.common.files import read_jsonl

log = logging.getLogger(__name__)

MATH_BENCHMARKS = ("math500", "aime24", "aime25", "olympiadbench")
CODE_BENCHMARKS = ("humaneval", "humanevalplus", "livecodebench")
ALL_BENCHMARKS = MATH_BENCHMARKS + CODE_BENCHMARKS


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    title: str  # column title in Table 1
    kind: str  # "math" | "code"
    file: str  # relative to the benchmark folder
    sha256: str  # pinned hash of the local file
    records: int
    version: str
    default_n: int  # samples per problem (paper §3: avg@16 AIME, avg@8 LCB, pass@1 elsewhere)
    hub: tuple[str, str | None, str]  # (repo_id, config, split) for the Hub fallback


SPECS: dict[str, BenchmarkSpec] = {s.name: s for s in [
    BenchmarkSpec("math500", "MATH-500", "math", "math500/test.jsonl",
                  "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132", 500,
                  "prm800k math_splits/test (2023)", 1, ("HuggingFaceH4/MATH-500", None, "test")),
    BenchmarkSpec("aime24", "AIME 24", "math", "aime24/test.jsonl",
                  "a49911aaff4301ea9431dcf319985709a764ef5a0adfbc566fa4e48f45191fb4", 30, "AIME 2024 I+II", 16,
                  ("HuggingFaceH4/aime_2024", None, "train")),
    BenchmarkSpec("aime25", "AIME 25", "math", "aime25/test.jsonl",
                  "232462fd5d95b81619c21e3177c46ded70ce884439589bff23d7500948cc7aeb", 30, "AIME 2025 I+II", 16,
                  ("yentinglin/aime_2025", None, "train")),
    BenchmarkSpec("olympiadbench", "OlympiadBench", "math", "olympiadbench/OE_TO_maths_en_COMP.jsonl",
                  "bb8c1e38a16ea9eacb77530315a674d883f267fbff79183effc53681b4fcc416", 675,
                  "OE_TO_maths_en_COMP", 1, ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")),
    BenchmarkSpec("humaneval", "HumanEval", "code", "humaneval/HumanEval.jsonl",
                  "1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2", 164, "openai/human-eval",
                  1, ("openai/openai_humaneval", None, "test")),
    BenchmarkSpec("humanevalplus", "HumanEval+", "code", "humanevalplus/HumanEvalPlus-v0.1.10.jsonl",
                  "42526ec0e7d5f3ee0b06d6ced98f8c8bae3d76519151bfb3d36f79010645bd7f", 164, "v0.1.10", 1,
                  ("evalplus/humanevalplus", None, "test")),
    BenchmarkSpec("livecodebench", "LiveCodeBench", "code", "livecodebench/problems_2408_2502.jsonl",
                  "8062fd0d5ff09267ec5f86c388e61a1f622ff154183b79ee6663106c0ecfbd70", 279,
                  "release_v5, contest_date in [2024-08-01, 2025-02-01)", 8,
                  ("livecodebench/code_generation_lite", None, "test")),
]}

# LiveCodeBench's own instruction words (lcb_runner/prompts/code_generation.py in
# github.com/LiveCodeBench/LiveCodeBench; lighteval and the paper's prompts use them verbatim, so they are
# part of the benchmark protocol).
_LCB_HEAD = ("You will be given a question (problem specification) and will generate a correct Python program "
             "that matches the specification and passes all tests.\n\nQuestion: {q}\n\n")
_LCB_STARTER = ("You will use the following starter code to write the solution to the problem and enclose your "
                "code within delimiters.\n```python\n{s}\n```\n\n")
_LCB_STDIN = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test "
              "on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python "
              "program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.\n"
              "```python\n# YOUR CODE HERE\n```\n\n")
# HumanEval(+) for a reasoning model: no assistant prefill and no stop strings. EvalPlus's chat prompt
# (evalplus/provider/utility.py) prefills the assistant turn with the opening of a code block and stops at
# strings such as `\nif __name__`, which would skip the thinking or cut it short; only its request for
# one self-contained code block is kept.
_HUMANEVAL_INSTRUCTION = ("Complete the following Python function. Reason first, then give the complete, "
                          "self-contained solution (imports, helper functions and the function itself) in one "
                          "```python code block.\n\n```python\n{p}```")


_PROMPT_NOTES = {
    **{b: "paper_prompt: ChatML user turn + math suffix, assistant turn prefilled with <think>\\n"
       for b in MATH_BENCHMARKS},
    "humaneval": "paper_prompt(math=False): ChatML, <think>\\n prefill; the HumanEval prompt in a fence after a "
                 "'complete the function ... in one ```python block' instruction",
    "humanevalplus": "as humaneval",
    "livecodebench": "paper_prompt(math=False) around LiveCodeBench's own instruction (identical to QwQ's prompt "
                     "for all 279 problems)",
}


# Golds fixed at load time: {benchmark: {problem id: (gold used, why)}}. The upstream string stays in
# `Problem.data["gold_erratum"]`.
GOLD_ERRATA: dict[str, dict[str, tuple[str, str]]] = {
    "olympiadbench": {
        "1970": ("(-\\infty, 0) \\cup\\{1\\}", "the upstream answer `(-\\infty, 0) \\cup\\{1\\}.` ends "
                 "with a sentence's period, and with it the gold parses as 0, so the answer 0 was graded correct"),
        "2045": ("(0,4]", "the upstream answer `t(0,4]` has a stray 't' before the interval; no parser reads it"),
        "1782": ("n^{2}-n-1", "the upstream answer is the labelled equation `m_{\\max }=n^{2}-n-1`, which does "
                 "not parse; the value asked for is its right side"),
        "2212": ("n", "the upstream answer is `N=n`; the parser lowercases symbols, so it read the tautology "
                 "n = n and accepted any `N=n+c`"),
        "1965": ("f(x)=ax+b", "the upstream answer is a sentence (`f(x)=a x+b, where b is an arbitrary integer, "
                 "and a is an arbitrary positive integer with \\mho(a)=0`) that parses as 0; the form f(x)=ax+b "
                 "is graded, the condition on a is not"),
    },
}


@dataclass
class Problem:
    benchmark: str
    problem_id: str
    question: str  # the user turn (the math suffix is added by paper_prompt for math problems)
    math: bool
    gold: str | None = None  # math: the final answer, LaTeX
    data: dict[str, Any] = field(default_factory=dict, repr=False)  # grader inputs (tests, multi-answer…)


@dataclass
class Benchmark:
    name: str
    problems: list[Problem]
    source: str  # "local:<path>" | "hub:<repo>" | "custom"
    version: str
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. LiveCodeBench hidden-test provenance

    def manifest(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "version": self.version, "sha256": self.sha256,
                "problems": len(self.problems), **self.extra}

    def by_id(self) -> dict[str, Problem]:
        return {p.problem_id: p for p in self.problems}


def default_benchmark_dir() -> Path | None:
    """$PCM_BENCHMARK_DIR, else a `shared/data/benchmarks` folder beside the checkout if there is one."""
    env = os.environ.get("PCM_BENCHMARK_DIR")
    if env:
        return Path(env)
    guess = (Path(__file__).resolve().parents[2] / "../shared/data/benchmarks").resolve()
    return guess if guess.is_dir() else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_benchmark(name: str, *, benchmark_dir: str | Path | None = None, lcb_tests: str | Path | None = None,
                   allow_hub: bool = True, limit: int | None = None) -> Benchmark:
    """Load one benchmark by name (see ALL_BENCHMARKS)."""
    if name not in SPECS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(ALL_BENCHMARKS)}")
    spec = SPECS[name]
    folder = Path(benchmark_dir) if benchmark_dir else default_benchmark_dir()
    if folder is not None and (folder / spec.file).is_file():
        path = folder / spec.file
        digest = sha256_file(path)
        if digest != spec.sha256:
            raise ValueError(f"{path}: sha256 {digest} does not match the pinned {spec.sha256} for {name} "
                             f"({spec.version}); refusing to evaluate on a different file")
        rows = read_jsonl(path, torn_tail="parse")  # a bad line raises, naming file and line
        source = f"local:{path}"
    elif allow_hub:
        rows, digest = _load_hub(spec)
        source = f"hub:{spec.hub[0]}"
        log.warning("%s: loaded from the Hugging Face Hub (%s); hash of normalised rows %s", name, spec.hub[0],
                    digest)
    else:
        raise FileNotFoundError(f"{name}: {spec.file} not found under {folder} and the Hub is disabled "
                                f"(set PCM_BENCHMARK_DIR or --benchmark-dir)")
    if source.startswith("local") and len(rows) != spec.records:
        raise ValueError(f"{name}: expected {spec.records} records, found {len(rows)}")
    problems = [_to_problem(name, r) for r in rows]
    for p in problems:
        fix = GOLD_ERRATA.get(name, {}).get(p.problem_id)
        if fix:
            p.data["gold_erratum"] = {"upstream": p.gold, "reason": fix[1]}
            p.gold = fix[0]
    bench = Benchmark(name, problems, source, spec.version, digest, {"prompt": _PROMPT_NOTES[name]})
    if name == "livecodebench":
        from promptcot_mamba.eval.livecodebench import attach_hidden_tests

        attach_hidden_tests(bench, lcb_tests)
    if source.startswith("hub"):  # not the pinned file the gold-scan test checks: scan it here
        try:
            for problem_id, why in scan_golds(bench):
                log.warning("%s %s: %s", name, problem_id, why)
        except ImportError as err:
            log.warning("%s: golds not scanned (%s)", name, err)
    if limit is not None:
        bench.problems = bench.problems[:limit]
        bench.extra["limit"] = limit
    return bench


def _to_problem(name: str, r: dict) -> Problem:
    if name == "math500":
        return Problem(name, r["unique_id"], r["problem"], True, str(r["answer"]),
                       {"subject": r.get("subject"), "level": r.get("level")})
    if name in ("aime24", "aime25"):
        return Problem(name, str(r["id"]), r["problem"], True, str(r["answer"]).strip())
    if name == "olympiadbench":
        answers = r["final_answer"]
        gold = ", ".join(a.strip().strip("$").strip() for a in answers) if answers else ""
        gold = gold.replace("$,$", ", ").replace("$", "")
        return Problem(name, str(r["id"]), r["question"], True, gold,
                       {"multiple": bool(r.get("is_multiple_answer")), "error": r.get("error"),
                        "unit": r.get("unit"), "answer_type": r.get("answer_type"), "final_answer": answers})
    if name == "humaneval":
        return Problem(name, r["task_id"], _HUMANEVAL_INSTRUCTION.format(p=r["prompt"]), False, None,
                       {"prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"],
                        "canonical_solution": r["canonical_solution"]})
    if name == "humanevalplus":
        return Problem(name, r["task_id"], _HUMANEVAL_INSTRUCTION.format(p=r["prompt"]), False, None,
                       {k: r[k] for k in ("prompt", "entry_point", "canonical_solution", "base_input",
                                          "plus_input", "atol", "test") if k in r})
    if name == "livecodebench":
        return Problem(name, str(r["question_id"]), lcb_prompt(r["question_content"], r.get("starter_code", "")),
                       False, None, dict(r))
    raise ValueError(name)


def _prose(gold: str) -> list[str]:
    """English words in a gold outside `\\text{}`-like groups and commands: a gold that is a sentence."""
    bare = re.sub(r"\\(?:text|mathrm|textbf|mbox|operatorname|begin|end)\s*\{[^{}]*\}|\\[A-Za-z]+", " ", gold)
    return re.findall(r"[A-Za-z]{4,}", bare)


def _literal(gold: str) -> str:
    """The gold as plain characters: `\\text{(C)}` -> `C`, ` 0 ` -> `0`."""
    return re.sub(r"\\(?:text|mathrm|textbf)|\\left|\\right|[{}()$\s]", "", gold).lower()


_CODE_FIELDS = {"humaneval": ("prompt", "test", "entry_point", "canonical_solution"),
                "humanevalplus": ("prompt", "entry_point", "canonical_solution", "base_input"),
                "livecodebench": ("question_content", "public_tests_from_statement", "tests")}


def scan_golds(bench: Benchmark) -> list[tuple[str, str]]:
    """(problem id, what is wrong) for every problem whose gold answer (math) or tests (code) cannot be
    graded as they stand. Math golds are parsed by the strict grader's parser (needs math-verify, the
    `eval` extra): a gold must parse, and not to a trivial value (0, 1, a single letter, the empty set)
    unless that is what it says, not to a tautology such as `N=n` read as n = n, and a gold may not be a
    sentence (its words parse as products of letters)."""
    bad = []
    if any(p.math for p in bench.problems):
        import sympy

        from promptcot_mamba.eval.math_grader import _parse, normalise
    for p in bench.problems:
        if p.math:
            parsed = _parse(normalise(p.gold or "")) if (p.gold or "").strip() else []
            value = parsed[0] if parsed else None
            if not isinstance(value, sympy.Basic | sympy.MatrixBase):
                bad.append((p.problem_id, f"gold {p.gold!r} does not parse"))
            elif len(_prose(p.gold)) >= 2:
                bad.append((p.problem_id, f"gold {p.gold!r} is a sentence; it parses as {value}"))
            elif isinstance(value, sympy.Eq) and value.lhs == value.rhs:
                bad.append((p.problem_id, f"gold {p.gold!r} parses as the tautology {value}"))
            elif isinstance(value, sympy.Basic) and str(value).lower() != _literal(p.gold) and (
                    value in (sympy.S.Zero, sympy.S.One, sympy.S.EmptySet, sympy.true, sympy.false)
                    or (value.is_Symbol and len(value.name) == 1)):
                bad.append((p.problem_id, f"gold {p.gold!r} parses as the trivial value {value}"))
            continue
        bad += [(p.problem_id, f"{key} is missing or empty") for key in _CODE_FIELDS.get(bench.name, ())
                if not p.data.get(key)]
    return bad


def lcb_prompt(question: str, starter_code: str) -> str:
    text = _LCB_HEAD.format(q=question)
    return text + (_LCB_STARTER.format(s=starter_code) if starter_code else _LCB_STDIN)


def _load_hub(spec: BenchmarkSpec) -> tuple[list[dict], str]:
    """Hub copies, normalised to the local schema. Needs `datasets` (pip install 'promptcot-mamba[eval]')."""
    try:
        import datasets
    except ImportError:
        raise ImportError(f"{spec.name}: no local copy found and loading from the Hub needs `datasets` "
                          "(pip install datasets), or set PCM_BENCHMARK_DIR") from None
    repo, config, split = spec.hub
    if spec.name == "livecodebench":
        raise FileNotFoundError("livecodebench: the problem window file must be local (PCM_BENCHMARK_DIR); "
                                "hidden tests may come from the Hub")
    ds = datasets.load_dataset(repo, config, split=split)
    rows = [dict(r) for r in ds]
    rows = [_normalise_hub_row(spec.name, r, i) for i, r in enumerate(rows)]
    if spec.name == "aime24":
        rows = [r for r in rows if str(r.get("year", "2024")).startswith("2024")]
    canon = "\n".join(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str) for r in rows)
    return rows, hashlib.sha256(canon.encode()).hexdigest()


def _normalise_hub_row(name: str, r: dict, i: int) -> dict:
    if name == "math500":
        return r
    if name in ("aime24", "aime25"):
        return {"id": str(r.get("id", r.get("ID", i))), "problem": r.get("problem", r.get("question")),
                "answer": str(r["answer"]).lstrip("0") or "0", "year": r.get("year")}
    if name == "olympiadbench":
        return {"id": r["id"], "question": r["question"], "final_answer": list(r["final_answer"]),
                "is_multiple_answer": r.get("is_multiple_answer"), "error": r.get("error"), "unit": r.get("unit"),
                "answer_type": r.get("answer_type")}
    if name == "humaneval":
        return r
    if name == "humanevalplus":
        out = dict(r)
        for k in ("base_input", "plus_input"):
            if isinstance(out.get(k), str):
                out[k] = json.loads(out[k])
        return out
    return r


def custom_benchmark(name: str, items: Iterable[dict | tuple], *, version: str = "custom") -> Benchmark:
    """A math benchmark from (id, problem, gold answer) triples or dicts with those keys (the demo's toy sets)."""
    problems = []
    for it in items:
        if isinstance(it, dict):
            pid, q, gold = it["id"], it["problem"], it["answer"]
        else:
            pid, q, gold = it
        problems.append(Problem(name, str(pid), q, True, str(gold)))
    if len({p.problem_id for p in problems}) != len(problems):
        raise ValueError(f"custom benchmark {name!r}: problem ids must be unique")
    canon = json.dumps([[p.problem_id, p.question, p.gold] for p in problems], ensure_ascii=False)
    return Benchmark(name, problems, "custom", version, hashlib.sha256(canon.encode()).hexdigest(),
                     {"prompt": _PROMPT_NOTES["math500"]})
