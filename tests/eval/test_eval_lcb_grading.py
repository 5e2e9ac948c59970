"""LiveCodeBench grading against ground truth: on the labelled corpus (tests/eval/data/lcb_grading_corpus.jsonl,
70 programs on 16 problems, statement sample tests) the strict verdict equals what a judge says (`truth`) and
the paper verdict equals the authors' copy of the LiveCodeBench harness (`authors_copy_verdict`); the float
tolerance read from statements; the paper mode's quirks on more programs, each with the authors' verdict."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from promptcot_mamba.eval.benchmarks import Problem, load_benchmark
from promptcot_mamba.eval.code_grader import CodeGradeConfig, CodeGrader, paper_extract_code
from promptcot_mamba.eval.livecodebench import statement_float_tolerance

CORPUS = Path(__file__).parent / "data" / "lcb_grading_corpus.jsonl"
# The corpus's one slow program never terminates, so its verdict is the same under any limit; 5 s instead of
# the default 30 s (both modes) keeps the run short, and every other program finishes in well under 1 s.
FAST = CodeGradeConfig(lcb_test_timeout_s=5, lcb_paper_timeout_s=5, jobs=2)


def _completion(program: str) -> str:
    """As the corpus's reference runs received each program: a thought, `</think>`, one fenced block."""
    return ("I need to read the input, compute the answer and print it.\n</think>\n\n"
            "Here is the solution:\n\n```python\n" + program + "```\n")


def _passfail(verdict: str) -> str:
    return "pass" if verdict == "correct" else "fail"


@pytest.fixture(scope="module")
def lcb():
    return load_benchmark("livecodebench", lcb_tests="samples").by_id()


@pytest.fixture(scope="module")
def corpus(lcb):
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    grades = CodeGrader(FAST).grade_many([(lcb[r["problem_id"]], _completion(r["program"])) for r in rows])
    return rows, grades


def test_corpus_covers_the_kinds_the_issue_names(corpus):
    rows, _ = corpus
    kinds = Counter(r["kind"] for r in rows)
    assert len(rows) >= 50 and {r["testtype"] for r in rows} == {"stdin", "functional"}
    for kind in ("stdin_buffer_readline", "for_line_in_stdin", "os_read", "open0_read", "global_helper",
                 "float_tolerance", "sys_exit"):
        assert kinds[kind] >= 1, kind


def test_strict_equals_the_truth_on_every_program(corpus):
    rows, grades = corpus
    wrong = [(r["id"], r["truth"], g.verdict, g.detail.get("error")) for r, g in zip(rows, grades)
             if _passfail(g.verdict) != r["truth"]]
    assert not wrong, wrong


def test_paper_equals_the_authors_copy_on_every_program(corpus):
    """The paper's numbers came from the authors' copy (LCB testing_util at 15808c7, 30 s): our paper mode
    reproduces it. LiveCodeBench's head (`paper_verdict` in the corpus) differs from that copy on exactly the
    programs its newer stdin mock treats differently (`sys.stdin.buffer`, iterating over `sys.stdin`)."""
    rows, grades = corpus
    wrong = [(r["id"], r["authors_copy_verdict"], g.paper_verdict, g.detail["paper"].get("error"))
             for r, g in zip(rows, grades) if _passfail(g.paper_verdict) != r["authors_copy_verdict"]]
    assert not wrong, wrong
    head_differs = {r["kind"] for r, g in zip(rows, grades) if _passfail(g.paper_verdict) != r["paper_verdict"]}
    assert head_differs == {"stdin_buffer_readline", "stdin_buffer_read", "for_line_in_stdin"}
    assert sum(_passfail(g.paper_verdict) != r["paper_verdict"] for r, g in zip(rows, grades)) == 5


def test_float_tolerance_is_recorded_in_the_verdict(corpus):
    rows, grades = corpus
    for r, g in zip(rows, grades):
        if r["problem_id"] == "abc375_b":
            assert g.detail["float_tolerance"] == {"abs": 1e-6, "rel": 1e-6}
        else:
            assert "float_tolerance" not in g.detail
    tol = {r["kind"]: g.verdict for r, g in zip(rows, grades) if r["kind"] == "float_tolerance"}
    assert set(tol.values()) == {"correct"}


# ------------------------------------------------------------------------------------ float tolerance
def test_statement_tolerance_in_the_window(lcb):
    found = {pid: p.data["float_tolerance"] for pid, p in lcb.items() if p.data["float_tolerance"]}
    assert found == {"abc374_d": {"abs": 1e-6, "rel": 1e-6}, "abc375_b": {"abs": 1e-6, "rel": 1e-6},
                     "abc385_f": {"abs": 1e-9, "rel": 1e-9}}


@pytest.mark.parametrize("text, expected", [
    ("Your output will be considered correct if the absolute or relative error from the true value is at most "
     "10^{-6}.", {"abs": 1e-6, "rel": 1e-6}),
    ("Answers with an absolute or relative error of at most 10^{-9} from the true answer will be considered "
     "correct.", {"abs": 1e-9, "rel": 1e-9}),
    ("Your answer is correct if the absolute error or relative error is $10^{−6}$ or less.", {"abs": 1e-6, "rel": 1e-6}),
    ("Answers within 10^-5 of the actual answer will be accepted.", {"abs": 1e-5, "rel": None}),
    ("Answers within 10⁻⁵ of the actual value will be accepted as correct.", {"abs": 1e-5, "rel": None}),
    ("The answer is accepted if its relative error does not exceed 1e-4.", {"abs": None, "rel": 1e-4}),
    ("Print it with an absolute error of at most 2 \\times 10^{-3}.", {"abs": 2e-3, "rel": None}),
    ("An error of at most 0.000001 is allowed.", {"abs": 1e-6, "rel": 1e-6}),
    ("Print the minimum absolute difference between two chosen integers.", None),
    ("It is guaranteed that the relative order is kept. 1 \\leq N \\leq 10^5.", None),
    ("If the input has an error, print -1.", None),
])
def test_statement_tolerance_phrasings(text, expected):
    assert statement_float_tolerance(text) == expected


def _stdin_problem(tests, **data):
    return Problem("livecodebench", "hand/stdin", "", False, None, {"testtype": "stdin", "metadata": {},
                                                                      "tests": tests, **data})


def test_tolerance_compares_numbers_within_it_and_tokens_exactly_otherwise():
    grader = CodeGrader(FAST)
    tests = [{"input": "", "output": "1000000.0 0.5 Yes\n", "testtype": "stdin"}]
    tol = _stdin_problem(tests, float_tolerance={"abs": 1e-6, "rel": 1e-6})
    exact = _stdin_problem(tests, float_tolerance=None)
    within = "print('1000000.9 0.5000009 Yes')"  # relative error 9e-7, absolute error 9e-7
    assert grader.grade(tol, _completion(within + "\n")).verdict == "correct"
    assert grader.grade(exact, _completion(within + "\n")).verdict == "wrong"
    for outside in ("print('1000002 0.5 Yes')", "print('1000000 0.500002 Yes')", "print('1000000 0.5 yes')",
                    "print('1000000 0.5')", "print('nan 0.5 Yes')"):
        assert grader.grade(tol, _completion(outside + "\n")).verdict == "wrong", outside
    assert grader.grade(exact, _completion("print('1000000.0', '0.5', 'Yes')\n")).verdict == "correct"
    # the statement is read when the problem data has no `float_tolerance` key (a hand-made problem)
    stated = _stdin_problem(tests, question_content="Your answer is accepted if the absolute or relative error "
                                                    "is at most 10^{-6}.")
    g = grader.grade(stated, _completion(within + "\n"))
    assert g.verdict == "correct" and g.detail["float_tolerance"] == {"abs": 1e-6, "rel": 1e-6}
    assert g.paper_verdict == "wrong"  # the paper's harness has no tolerance


def test_strict_timeout_holds_when_the_program_swallows_it():
    grader = CodeGrader(CodeGradeConfig(lcb_test_timeout_s=1, lcb_paper_timeout_s=1))
    prog = "import time\ntry:\n    while True:\n        time.sleep(0.05)\nexcept:\n    pass\nprint(1)\n"
    g = grader.grade(_stdin_problem([{"input": "", "output": "1\n", "testtype": "stdin"}]), _completion(prog))
    assert g.verdict == "timeout" and g.paper_verdict == "timeout"


# ------------------------------------------------------------------------------------------ paper mode
def test_paper_extraction_is_the_authors_rule():
    assert paper_extract_code("t\n</think>\n\n```python\na = 1\n```\n") == "a = 1"
    # no "\n</think>\n\n": the whole text, so a draft in the thought can be graded
    assert paper_extract_code("```python\ndraft\n```\nmore") == "draft"
    # the last two lines holding ``` whatever their language; fewer than two: nothing
    assert paper_extract_code("x\n</think>\n\n```python\na\n```\n```text\nb\n```") == "b"
    assert paper_extract_code("x\n</think>\n\n```python\na = 1\n") == ""
    g = CodeGrader(FAST).grade(_stdin_problem([{"input": "", "output": "1\n", "testtype": "stdin"}]),
                               "no thought closed\n```python\nprint(1)\n```\n")
    assert g.verdict == "no_answer" and g.paper_verdict == "correct"


# More programs on corpus problems, each with the verdict the authors' copy (calc_acc_lcb.py, unmodified,
# 30 s, same statement sample tests as the corpus) gave it: each checks one behaviour of that harness.
LEAP = "print(366 if (Y % 4 == 0 and Y % 100 != 0) or Y % 400 == 0 else 365)\n"
SNAKE = "        return sum({'UP': -n, 'DOWN': n, 'LEFT': -1, 'RIGHT': 1}[c] for c in commands)\n"
DOUBLE = ("        for _ in range(k):\n            i = min(range(len(nums)), key=lambda j: (nums[j], j))\n"
          "            nums[i] *= multiplier\n")
AUTHORS = [
    ("abc365_a", "from __future__ import annotations\nY = int(input())\n" + LEAP, "fail"),
    ("abc365_a", "Y = int(input())\n" + LEAP + "quit()\n", "fail"),  # quit is None there
    ("abc365_a", "Y = int(input())\n" + LEAP + "exit(0)\n", "pass"),
    ("abc365_a", "import sys\nY = int(input())\n" + LEAP + "sys.exit(1)\n", "pass"),  # any SystemExit ends a test
    ("abc365_a", "import resource\nY = int(input())\n" + LEAP, "fail"),
    ("abc365_a", "from sys import stdin\nY = int(stdin.readline())\n" + LEAP, "pass"),
    ("abc365_a", "Y = int(stdin.readline())\n" + LEAP, "pass"),  # `stdin` from the star import of sys
    ("abc365_a", "def main():\n    Y = int(input())\n    " + LEAP + "if '__main__' == __name__:\n    main()\n", "fail"),
    ("abc365_a", "def main():\n    Y = int(input())\n    " + LEAP + "if __name__ == '__main__':\n    main()\nX = 1\n",
     "fail"),
    ("abc365_a", "import builtins\nY = int(builtins.open(0).read())\n" + LEAP, "pass"),
    ("abc365_a", "import io\nY = int(io.open(0).read())\n" + LEAP, "fail"),
    ("abc365_a", "Y = int(input())\nif Y % 400 == 0 or (Y % 4 == 0 and Y % 100 != 0):\n    print(366)\n    return\n"
     "print(365)\n", "pass"),
    ("abc365_a", "Y = int(input())\n" + LEAP + "x = yield\n", "fail"),
    ("abc365_a", "Y = int(input())\ns = str(10 ** 6000)\n" + LEAP, "pass"),
    ("abc365_a", "import sys\nY = int(input())\n" + LEAP + "sys.stdout.close()\n", "fail"),
    ("abc365_a", "for line in open(0):\n    Y = int(line)\n" + LEAP, "fail"),
    ("abc365_a", "import sys\n", "fail"),
    ("abc365_a", "import os\nos.getcwd()\nY = int(input())\n" + LEAP, "fail"),
    ("abc365_a", "import sys\nsys.stdin.fileno()\nY = int(input())\n" + LEAP, "fail"),
    ("abc365_a", "import sys\nY = int(sys.stdin.read())\nassert sys.stdin.read() == ''\n" + LEAP, "pass"),
    ("abc365_a", "Y = int(input())\nprint(366 if (globals()['Y'] % 4 == 0 and Y % 100 != 0) or Y % 400 == 0 "
     "else 365)\n", "fail"),
    ("abc365_a", "import time\nY = int(input())\ntry:\n    while True:\n        time.sleep(0.5)\nexcept Exception:\n"
     "    pass\n" + LEAP, "fail"),
    ("abc365_b", "import sys\nit = iter(sys.stdin)\nn = int(next(it)); a = list(map(int, next(it).split()))\n"
     "print(sorted(range(n), key=lambda i: a[i])[-2] + 1)\n", "pass"),
    ("abc365_b", "n = int(input()); a = list(map(int, input().split()))\n"
     "print(float(sorted(range(n), key=lambda i: a[i])[-2] + 1))\n", "pass"),  # 3.0 for 3: Decimal compare
    ("3533", "class Solution:\n    def finalPositionOfSnake(self, n: int, commands: List[str]) -> int:\n"
     "        exit()\n", "fail"),
    ("3533", "def finalPositionOfSnake(n, commands):\n" + SNAKE[4:], "pass"),
    ("3533", "class Solution:\n    def finalPositionOfSnake(self, n: int, commands: List[str]) -> int:\n" + SNAKE
     + "import resource\n", "fail"),
    ("3555", "import numpy as np\nclass Solution:\n    def getFinalState(self, nums, k, multiplier):\n"
     "        a = np.array(nums)\n        for _ in range(k):\n            i = int(np.argmin(a))\n"
     "            a[i] *= multiplier\n        return list(a)\n", "pass"),
    ("3555", "from __future__ import annotations\nclass Solution:\n"
     "    def getFinalState(self, nums: List[int], k: int, multiplier: int) -> List[int]:\n" + DOUBLE
     + "        return nums\n", "fail"),
    ("3555", "class Solution:\n    def getFinalState(self, nums, k, multiplier):\n" + DOUBLE
     + "        return tuple(nums)\n", "pass"),
]


def test_paper_mode_reproduces_the_authors_harness_quirks(lcb):
    grades = CodeGrader(FAST).grade_many([(lcb[pid], _completion(prog)) for pid, prog, _ in AUTHORS])
    wrong = [(pid, prog, want, g.paper_verdict, g.detail["paper"].get("error"))
             for (pid, prog, want), g in zip(AUTHORS, grades) if _passfail(g.paper_verdict) != want]
    assert not wrong, wrong
