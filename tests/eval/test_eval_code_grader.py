"""Code grading: canonical solutions pass and broken ones fail on HumanEval and HumanEval+; LiveCodeBench on its
statement sample tests and on hand-made stdin/functional problems; safe decoding of LCB hidden tests."""

from __future__ import annotations

import base64
import json
import pickle
import zlib

import pytest

from promptcot_mamba.eval.benchmarks import Problem, load_benchmark
from promptcot_mamba.eval.code_grader import CodeGradeConfig, CodeGrader, extract_code
from promptcot_mamba.eval.livecodebench import (
    attach_hidden_tests,
    decode_test_cases,
    restricted_loads,
)
from promptcot_mamba.eval.livecodebench import tests_md5_candidates as md5_candidates


def _wrap(code: str) -> str:
    return f"Let me think.\n</think>\n\nHere it is:\n```python\n{code}\n```\n"


def _canonical(p) -> str:
    return _wrap(p.data["prompt"] + p.data["canonical_solution"])


def _broken(p) -> str:
    """The canonical solution with its return values replaced (a wrong but running program)."""
    body = p.data["canonical_solution"].replace("return ", "return None and ")
    return _wrap(p.data["prompt"] + body)


@pytest.fixture(scope="module")
def grader(tmp_path_factory):
    return CodeGrader(CodeGradeConfig(cache_dir=str(tmp_path_factory.mktemp("gt"))))


def test_extract_code_takes_the_last_python_block_after_think():
    c = "```python\nx = 1\n```\n</think>\n```text\nnot code\n```\n```python\ny = 2\n```\n```py\nz = 3\n```"
    assert extract_code(c) == "z = 3\n"
    assert extract_code("```python\nx = 1\n``` no close tag") is None
    assert extract_code("</think> no block") is None


def test_humaneval_all_canonical_solutions_pass(grader):
    bench = load_benchmark("humaneval")
    grades = grader.grade_many([(p, _canonical(p)) for p in bench.problems])
    bad = [(p.problem_id, g.verdict, g.detail) for p, g in zip(bench.problems, grades) if g.verdict != "correct"]
    assert not bad, bad[:5]
    assert all(g.paper_verdict == g.verdict for g in grades)  # the paper graded HumanEval by EvalPlus's rules


def test_humaneval_broken_variants_fail(grader):
    bench = load_benchmark("humaneval")
    probs = bench.problems[::8]
    grades = grader.grade_many([(p, _broken(p)) for p in probs])
    assert all(g.verdict in ("wrong", "runtime_error") for g in grades), [g.verdict for g in grades]
    g = grader.grade(probs[0], _wrap("def " + probs[0].data["entry_point"] + "(*a):\n    raise ValueError('x')\n"))
    assert g.verdict in ("wrong", "runtime_error")
    fast = CodeGrader(CodeGradeConfig(humaneval_timeout_s=1.5))
    g = fast.grade(probs[0], _wrap("def " + probs[0].data["entry_point"] + "(*a):\n    while True: pass\n"))
    assert g.verdict == "timeout"
    assert grader.grade(probs[0], "no think close ```python\nx=1\n```").verdict == "no_answer"


def _small_plus(bench, k=12):
    """HumanEval+ tasks with the fewest inputs (fast), always including HumanEval/32 (find_zero)."""
    by_size = sorted(bench.problems, key=lambda p: len(p.data["plus_input"]) + len(p.data["base_input"]))
    chosen = by_size[:k] + [p for p in bench.problems if p.problem_id == "HumanEval/32"]
    return {p.problem_id: p for p in chosen}


def test_humanevalplus_subset_canonical_pass_and_broken_fail(grader):
    bench = load_benchmark("humanevalplus")
    bench.problems = list(_small_plus(bench).values())
    grader.prepare(bench)
    grades = grader.grade_many([(p, _canonical(p)) for p in bench.problems])
    bad = [(p.problem_id, g.verdict, g.detail) for p, g in zip(bench.problems, grades) if g.verdict != "correct"]
    assert not bad, bad
    grades = grader.grade_many([(p, _broken(p)) for p in bench.problems])
    assert all(g.verdict != "correct" for g in grades), [(p.problem_id, g.verdict) for p, g in
                                                           zip(bench.problems, grades)]
    assert all(g.paper_verdict == g.verdict for g in grades)


def test_humanevalplus_32_uses_the_find_zero_oracle(grader):
    bench = load_benchmark("humanevalplus")
    bench.problems = [p for p in bench.problems if p.problem_id == "HumanEval/32"]
    grader.prepare(bench)
    p = bench.problems[0]
    # The canonical root polished by a Newton step: a different value from the expected output on most inputs
    # but still a root within atol, so it passes only because the |poly(x)| <= atol oracle is applied (the
    # OriginFmt test with swapped arguments would fail every solution: see ERRATA).
    head, _, tail = p.data["canonical_solution"].rpartition("return x")
    polished = (head + "return _polish(xs, x)" + tail +
                "\ndef _polish(xs, x):\n    d = sum(i * c * x ** (i - 1) for i, c in enumerate(xs) if i)\n"
                "    y = x - poly(xs, x) / d if d else x\n    return y if abs(poly(xs, y)) < abs(poly(xs, x)) else x\n")
    assert "return _polish(xs, x)" in polished
    assert grader.grade(p, _wrap(p.data["prompt"] + polished)).verdict == "correct"
    assert grader.grade(p, _wrap("def find_zero(xs):\n    return 0.0\n")).verdict == "wrong"


@pytest.mark.slow
def test_humanevalplus_all_canonical_solutions_pass(grader):
    bench = load_benchmark("humanevalplus")
    grader.prepare(bench)
    grades = grader.grade_many([(p, _canonical(p)) for p in bench.problems])
    bad = [(p.problem_id, g.verdict, g.detail) for p, g in zip(bench.problems, grades) if g.verdict != "correct"]
    assert not bad, bad[:5]


# ---------------------------------------------------------------------------------------- LiveCodeBench
ABC365_B_OK = "n = int(input())\na = list(map(int, input().split()))\nprint(sorted(range(n), key=lambda i: a[i])[-2] + 1)\n"
ABC365_B_WRONG = "n = int(input())\na = list(map(int, input().split()))\nprint(a.index(max(a)) + 1)\n"
Q3517_OK = """
class Solution:
    def shortestDistanceAfterQueries(self, n: int, queries: List[List[int]]) -> List[int]:
        adj = [[i + 1] for i in range(n - 1)] + [[]]
        out = []
        for u, v in queries:
            adj[u].append(v)
            dist = [-1] * n
            dist[0] = 0
            q = deque([0])
            while q:
                x = q.popleft()
                for y in adj[x]:
                    if dist[y] < 0:
                        dist[y] = dist[x] + 1
                        q.append(y)
            out.append(dist[n - 1])
        return out
"""


@pytest.fixture(scope="module")
def lcb():
    return load_benchmark("livecodebench", lcb_tests="samples").by_id()


def test_lcb_real_problems_on_statement_samples(grader, lcb):
    assert grader.grade(lcb["abc365_b"], _wrap(ABC365_B_OK)).verdict == "correct"
    assert grader.grade(lcb["abc365_b"], _wrap(ABC365_B_WRONG)).verdict == "wrong"
    assert grader.grade(lcb["3517"], _wrap(Q3517_OK)).verdict == "correct"
    wrong = Q3517_OK.replace("out.append(dist[n - 1])", "out.append(dist[n - 1] + 1)")
    assert grader.grade(lcb["3517"], _wrap(wrong)).verdict == "wrong"


def _stdin_problem(tests):
    return Problem("livecodebench", "hand/stdin", "", False, None, {"testtype": "stdin", "metadata": {},
                                                                      "tests": tests})


SUM_TESTS = [{"input": "3\n1 2 3\n", "output": "6\n", "testtype": "stdin"},
             {"input": "2\n10 -3\n", "output": "7", "testtype": "stdin"}]


@pytest.mark.parametrize("code", [
    "n = int(input())\nprint(sum(map(int, input().split())))\n",
    "import sys\ndata = sys.stdin.buffer.read().split()\nprint(sum(map(int, data[1:])))\n",
    "import sys\nn = int(sys.stdin.buffer.readline())\nprint(sum(map(int, sys.stdin.buffer.readline().split())))\n",
    "data = open(0).read().split()\nprint(sum(map(int, data[1:])))\n",
    "import os\nd = os.read(0, 1 << 20).split()\nos.write(1, str(sum(map(int, d[1:]))).encode() + b'\\n')\n",
    "import sys\ndef main():\n    input = sys.stdin.readline\n    n = int(input())\n    sys.stdout.write(str(sum(map(int, input().split()))) + '\\n')\n"
    "if __name__ == '__main__':\n    main()\n",
    "import sys, threading\ndef main():\n    n = int(input())\n    print(sum(map(int, input().split())))\n"
    "threading.stack_size(1 << 26)\nthreading.Thread(target=main).start()\n",
])
def test_lcb_stdin_reading_styles(grader, code):
    g = grader.grade(_stdin_problem(SUM_TESTS), _wrap(code))
    assert g.verdict == "correct", g.detail


def test_lcb_stdin_comparison_and_failures(grader):
    floats = [{"input": "", "output": "0.50 1\n", "testtype": "stdin"}]
    g = grader.grade(_stdin_problem(floats), _wrap("print('0.5', '1.0')"))
    # A judge compares tokens exactly when the statement allows no error; LCB's harness compares them as Decimal.
    assert g.verdict == "wrong" and g.paper_verdict == "correct"
    assert grader.grade(_stdin_problem(floats), _wrap("print('0.50', '1')")).verdict == "correct"
    assert grader.grade(_stdin_problem(floats), _wrap("print('0.50\\n1 ')")).verdict == "correct"  # whitespace
    g = grader.grade(_stdin_problem(floats), _wrap("print('0.5000001 1')"))
    assert g.verdict == "wrong" and g.paper_verdict == "wrong"
    assert grader.grade(_stdin_problem(floats), _wrap("print('0.5 1')\nprint('extra')")).verdict == "wrong"
    assert grader.grade(_stdin_problem(SUM_TESTS), _wrap("print(6)")).verdict == "wrong"  # passes test 0 only
    assert grader.grade(_stdin_problem(SUM_TESTS), _wrap("raise SystemExit(3)")).verdict == "runtime_error"
    assert grader.grade(_stdin_problem(SUM_TESTS), _wrap("import sys\nprint(6); sys.exit(0)")).verdict == "wrong"
    fast = CodeGrader(CodeGradeConfig(lcb_test_timeout_s=1))
    assert fast.grade(_stdin_problem(SUM_TESTS), _wrap("while True: pass")).verdict == "timeout"


def test_lcb_functional_rules(grader):
    prob = Problem("livecodebench", "hand/fn", "", False, None, {
        "testtype": "functional", "metadata": {"func_name": "pair"},
        "tests": [{"input": "3\n[1, 2]", "output": "[3, [1, 2]]", "testtype": "functional"}]})
    ok = "class Solution:\n    def pair(self, a: int, b: List[int]) -> List:\n        return (a, tuple(b))\n"
    assert grader.grade(prob, _wrap(ok)).verdict == "correct"  # tuples compare as lists (LCB rule)
    assert grader.grade(prob, _wrap(ok.replace("(a, tuple(b))", "[a, b[::-1]]"))).verdict == "wrong"
    assert grader.grade(prob, _wrap("class Solution:\n    pass\n")).verdict == "runtime_error"
    top_level = "def pair(a, b):\n    return [a, b]\n"
    assert grader.grade(prob, _wrap(top_level)).verdict == "correct"


def test_lcb_private_tests_decode_without_unpickling_code():
    row = json.loads(open(_bench_dir() / "livecodebench/format_example_1873_A.jsonl").readline())
    assert decode_test_cases(row["private_test_cases"]) == row["private_test_cases_decoded"]
    assert decode_test_cases(row["public_test_cases"])[0]["testtype"] == "stdin"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    evil = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        decode_test_cases(evil)
    assert restricted_loads(pickle.dumps({"a": [1, (2, 3)], "b": {4}})) == {"a": [1, (2, 3)], "b": {4}}
    bomb = base64.b64encode(zlib.compress(b"\0" * (1 << 22))).decode()
    with pytest.raises(ValueError, match="decompress"):
        decode_test_cases(bomb, max_bytes=1 << 20)


def _bench_dir():
    from promptcot_mamba.eval.benchmarks import default_benchmark_dir

    d = default_benchmark_dir()
    if d is None or not d.is_dir():
        pytest.skip("benchmark data not found; point PCM_BENCHMARK_DIR at a local copy to run this test")
    return d


def test_lcb_hidden_tests_are_md5_checked(tmp_path):
    bench = load_benchmark("livecodebench", lcb_tests="samples", limit=2)
    hidden = {p.problem_id: p.data["public_tests_from_statement"] + [
        {"input": "hidden input\n", "output": "hidden output\n", "testtype": p.data["testtype"]}]
        for p in bench.problems}

    def write(tests_by_id):
        path = tmp_path / "hf.jsonl"
        with open(path, "w") as f:
            for qid, tests in tests_by_id.items():
                priv = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests[2:])))).decode()
                f.write(json.dumps({"question_id": qid, "public_test_cases": json.dumps(tests[:2]),
                                    "private_test_cases": priv, "metadata": "{}"}) + "\n")
        return path

    path = write(hidden)
    with pytest.raises(ValueError, match="md5"):  # the real pinned md5 cannot match made-up tests
        attach_hidden_tests(bench, path)
    for p in bench.problems:  # pin our made-up test sets instead: now they load
        p.data["qwq_tests_md5"] = sorted(md5_candidates(hidden[p.problem_id], None))[0]
    attach_hidden_tests(bench, path)
    assert all(p.data["tests"] == hidden[p.problem_id] for p in bench.problems)
    assert "md5-checked" in bench.extra["tests"]


@pytest.mark.slow
def test_lcb_every_problem_grades_on_its_statement_samples(grader):
    """All 279 problems: the sample tests load and run; an empty program never passes, and a functional
    problem without the method is a runtime error, not a crash of the run."""
    bench = load_benchmark("livecodebench", lcb_tests="samples")
    # abc371_e's statement-derived samples have empty expected outputs (an extraction quirk of the offline
    # copy): any program that prints nothing passes them. Hidden tests do not have this problem.
    empty = {p.problem_id for p in bench.problems if all(not t["output"].strip() for t in p.data["tests"])}
    assert empty == {"abc371_e"}
    probs = [p for p in bench.problems if p.problem_id not in empty]
    grades = grader.grade_many([(p, _wrap("print()")) for p in probs])
    for p, g in zip(probs, grades):
        assert g.verdict in ("wrong", "runtime_error"), (p.problem_id, g.verdict, g.detail)
        assert g.paper_verdict in ("wrong", "runtime_error"), (p.problem_id, g.paper_verdict, g.detail)
        if p.data["testtype"] == "functional":
            assert g.verdict == g.paper_verdict == "runtime_error"
