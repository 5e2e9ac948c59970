"""The LLM prompts of the PromptCoT stages (paper §2.2) and the parsers of their answers.

Wording is ours; the structure follows the PromptCoT reference implementation
(github.com/inclusionAI/PromptCoT): concept extraction, its concept-combination prompt, rationale and
problem between BEGIN/END markers, a judge rating five criteria before a final verdict, and format
checks of the teacher's think block. Each prompt has a version string that is recorded in every record's provenance, so a change of wording is visible in
the data it produced. Parsers never guess: malformed output raises `ParseError` with the reason, and
the stage records that reason on the item.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter

PROMPT_VERSIONS = {
    "concepts": "concepts/v2",
    "problems": "problems/v1",
    "problems_paper": "problems-paper/v1",
    "judge": "judge/v1",
    "solutions": "solutions/v1",
    "tests": "tests/v1",
}

# The difficulty levels of the reference's concept_sampling.py.
MATH_LEVELS = ("AMC12", "HMMT-Nov", "HMMT-Feb", "AIME", "USAJMO", "USAMO", "USOJMO", "USOMO")
CODE_LEVELS = ("Codeforces Div. 2 A", "Codeforces Div. 2 B", "Codeforces Div. 2 C", "Codeforces Div. 2 D",
               "AtCoder ABC", "AtCoder ARC", "LeetCode Medium", "LeetCode Hard")

RATIONALE_BEGIN, RATIONALE_END = "<!-- BEGIN RATIONALE -->", "<!-- END RATIONALE -->"
PROBLEM_BEGIN, PROBLEM_END = "<!-- BEGIN PROBLEM -->", "<!-- END PROBLEM -->"
JUDGE_CRITERIA = ("FORMAT", "FACTUAL ACCURACY", "DIFFICULTY ALIGNMENT", "CONCEPT COVERAGE", "SOLVABILITY")
VERDICTS = ("perfect", "acceptable", "bad")


class ParseError(ValueError):
    """The model's answer does not have the required shape."""


def _subject(domain: str) -> str:
    return "competition mathematics" if domain == "math" else "competitive programming"


# ------------------------------------------------------------------------------------------------
# a. concept extraction
def concept_extraction_prompt(problem: str, num_concepts: int = 5, domain: str = "math") -> str:
    return (
        f"You are an experienced teacher and examiner in {_subject(domain)}. Read the problem below and "
        f"name the {num_concepts} foundational concepts a student must master to solve it.\n\n"
        f"Problem:\n{problem.strip()}\n\n"
        "Each concept should be a core curriculum topic or principle, stated precisely and generally "
        "(a reusable piece of knowledge, not a trick specific to this problem).\n"
        f"Answer with exactly {num_concepts} lines of the form\n"
        "Knowledge Point: <concept>\n"
        "and nothing else.\n"
    )


_KP = re.compile(r"^\s*(?:[-*\d.)\s]*)\**knowledge\s*point\s*\d*\**\s*[:：]\s*(.+?)\s*$", re.I | re.M)
_LISTITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(.+?)\s*$", re.M)


def _clean_concept(c: str) -> str:
    c = re.sub(r"\s+", " ", c.strip().strip("*").strip()).strip(" .;:,\"'`")
    return c


def parse_concepts(text: str, num_concepts: int = 5, min_concepts: int = 2) -> list[str]:
    """Concepts from an answer in any of the formats models actually use: `Knowledge Point:` lines
    (asked for), a Python/JSON list literal (the reference's other format), or a numbered/bulleted
    list. Deduplicated case-insensitively, at most `num_concepts`; fewer than `min_concepts` is an
    error."""
    cands: list[str] = [m.group(1) for m in _KP.finditer(text)]
    if not cands:
        for block in re.findall(r"```(?:python|json)?\s*(.*?)```", text, re.S) + [text]:
            m = re.search(r"\[[^\[\]]*\]", block, re.S)
            if not m:
                continue
            try:
                val = ast.literal_eval(m.group(0))
            except (ValueError, SyntaxError):
                try:
                    val = json.loads(m.group(0))
                except json.JSONDecodeError:
                    continue
            if isinstance(val, list) and all(isinstance(v, str) for v in val):
                cands = list(val)
                break
    if not cands:
        cands = [m.group(1) for m in _LISTITEM.finditer(text)]
    out: list[str] = []
    seen: set[str] = set()
    for c in cands:
        c = _clean_concept(c)
        if len(c) < 3 or len(c) > 300 or c.lower() in seen:
            continue
        seen.add(c.lower())
        out.append(c)
    if len(out) < min_concepts:
        raise ParseError(f"found {len(out)} concept(s), need at least {min_concepts}")
    return out[:num_concepts]


# ------------------------------------------------------------------------------------------------
# d. rationale + problem generation
def concept_prompt(concepts: list[str], level: str) -> str:
    """The reference's concept-combination prompt, word for word: one instruction line, the numbered
    concepts, the difficulty level. It is the exact input of a PromptCoT problem-generation model."""
    lines = "\n".join(f"{i}. {c}" for i, c in enumerate(concepts, 1))
    return ("Given foundational concepts and difficulty level, identify connections and develop a question "
            "that integrates these concepts with appropriate complexity.\n\n"
            f"Foundational Concepts:\n{lines}\n\nDifficulty Level: {level}")


def problem_generation_prompt(concepts: list[str], level: str, domain: str = "math") -> str:
    """For a general instruct model: the concept prompt plus the output format it must follow."""
    kind = "math problem with a single, checkable final answer" if domain == "math" else (
        "programming problem that reads from standard input and writes to standard output, with a precise "
        "input format, output format and constraints")
    return (
        f"{concept_prompt(concepts, level)}\n\n"
        f"You are designing a new {kind}. First write your design rationale: how the concepts connect, "
        "how the problem reaches the target difficulty, and why it is well posed. Then write the problem "
        "statement. Use exactly this format:\n"
        f"{RATIONALE_BEGIN}\n<your rationale>\n{RATIONALE_END}\n"
        f"{PROBLEM_BEGIN}\n<the problem statement only>\n{PROBLEM_END}"
    )


def parse_rationale_problem(text: str) -> tuple[str, str]:
    """(rationale, problem) between the markers. Rejects: a missing or unclosed block, the problem
    before the rationale, an empty block, or a block that still contains marker text."""
    def block(begin: str, end: str) -> tuple[str, int, int]:
        i = text.find(begin)
        if i < 0:
            raise ParseError(f"missing {begin}")
        j = text.find(end, i + len(begin))
        if j < 0:
            raise ParseError(f"missing {end}")
        body = text[i + len(begin):j].strip()
        if not body:
            raise ParseError(f"empty block after {begin}")
        if "<!--" in body:
            raise ParseError(f"nested or stray marker inside {begin} block")
        return body, i, j

    rationale, ri, _ = block(RATIONALE_BEGIN, RATIONALE_END)
    problem, pi, _ = block(PROBLEM_BEGIN, PROBLEM_END)
    if pi < ri:
        raise ParseError("problem block comes before the rationale block")
    if len(problem) < 10:
        raise ParseError(f"problem too short ({len(problem)} chars)")
    return rationale, problem


# ------------------------------------------------------------------------------------------------
# e. judge
def judge_prompt(concepts: list[str], level: str, rationale: str, problem: str, domain: str = "math") -> str:
    bullets = "\n".join(f"- {c}" for c in concepts)
    crit = "\n".join(f"{i}. {c}" for i, c in enumerate(JUDGE_CRITERIA, 1))
    return (
        f"You are a demanding reviewer of {_subject(domain)} problems. Evaluate the problem below together "
        "with the rationale its author wrote.\n\n"
        f"Foundational concepts it should integrate:\n{bullets}\n\nTarget difficulty: {level}\n\n"
        f"{RATIONALE_BEGIN}\n{rationale}\n{RATIONALE_END}\n{PROBLEM_BEGIN}\n{problem}\n{PROBLEM_END}\n\n"
        f"Rate each criterion as Perfect, Acceptable or Bad, with a one-sentence justification:\n{crit}\n"
        "(FORMAT: the rationale and problem use the markers correctly; FACTUAL ACCURACY: no mathematical or "
        "factual errors; DIFFICULTY ALIGNMENT: matches the target level; CONCEPT COVERAGE: uses the listed "
        "concepts; SOLVABILITY: well posed with a unique, reachable answer.)\n"
        "Answer one line per criterion as '<CRITERION>: <rating> - <justification>'.\n"
        "Overall verdict rules: 'perfect' needs FACTUAL ACCURACY and SOLVABILITY Perfect, at least two other "
        "criteria Perfect and none Bad; 'bad' if any criterion is Bad; otherwise 'acceptable'.\n"
        "End with the line: Final Judgement: <perfect|acceptable|bad>"
    )


def parse_judgement(text: str) -> dict:
    """{"verdict", "criteria": {name: rating}, "source": "final"|"criteria"}.

    The verdict is the word after the last `Final Judgement:` — matched as a whole word, so
    "imperfect" is not "perfect" (the reference tests for the substring "perfect", so it keeps problems
    judged "imperfect"). Without that line the verdict is
    recomputed from the per-criterion ratings with the prompt's rules; with neither, ParseError
    (the reference's fallback of counting words anywhere in the text is not reproduced)."""
    criteria: dict[str, str] = {}
    for name in JUDGE_CRITERIA:
        found = list(re.finditer(rf"{re.escape(name)}\W{{0,6}}\s*[:\-–]?\s*\**\s*(perfect|acceptable|bad)\b",
                                 text, re.I))
        if found:
            m = found[-1]
            criteria[name] = m.group(1).lower()
    finals = list(re.finditer(r"final\s+judg(?:e)?ment\s*[:：]\s*\**\s*\(?\s*([a-z]+)", text, re.I))
    if finals:
        word = finals[-1].group(1).lower()
        if word in VERDICTS:
            return {"verdict": word, "criteria": criteria, "source": "final"}
    if len(criteria) == len(JUDGE_CRITERIA):
        return {"verdict": verdict_from_criteria(criteria), "criteria": criteria, "source": "criteria"}
    raise ParseError("no 'Final Judgement: perfect|acceptable|bad' line and incomplete criteria "
                     f"({len(criteria)}/{len(JUDGE_CRITERIA)} rated)")


def verdict_from_criteria(criteria: dict[str, str]) -> str:
    vals = Counter(criteria.values())
    if vals.get("bad"):
        return "bad"
    core = criteria.get("FACTUAL ACCURACY") == "perfect" and criteria.get("SOLVABILITY") == "perfect"
    others = sum(1 for k, v in criteria.items() if k not in ("FACTUAL ACCURACY", "SOLVABILITY") and v == "perfect")
    return "perfect" if core and others >= 2 else "acceptable"


# ------------------------------------------------------------------------------------------------
# one worked example per stage, for small models (config `few_shot: true`)
# A model of ~100M parameters does not follow a format it is only told about: SmolLM2-135M-Instruct
# answered the concept prompt with prose in 6 of 6 seeds, but with `Knowledge Point:` lines in 3 of 3
# once shown one exchange (measured 2026-11-27). The example is a prior user/assistant turn built by
# the same prompt functions, so it always matches the current wording.
_EXAMPLES: dict[str, dict[str, tuple]] = {
    "concepts": {
        "math": ("What is the remainder when $2^{10}$ is divided by $7$?",
                 ["Modular arithmetic: congruences and remainders", "Powers and the laws of exponents",
                  "Periodicity of powers modulo n", "Euclidean division of integers", "Fermat's little theorem"]),
        "code": ("Given n integers, print the length of the longest strictly increasing contiguous run.",
                 ["Linear scans over arrays", "Tracking a running maximum", "Reading input from stdin",
                  "Off-by-one reasoning at sequence boundaries", "Time complexity analysis"]),
    },
    "problems": {
        "math": (["Modular arithmetic", "Powers and exponents"], "AMC12",
                 "The remainder of a power depends only on the base modulo n, and powers repeat with a period; "
                 "a large exponent forces the solver to find that period.",
                 "Find the remainder when $3^{100}$ is divided by $8$."),
        "code": (["Prefix sums", "Reading input from stdin"], "Codeforces Div. 2 A",
                 "Range sums asked many times reward precomputing prefix sums; reading all queries at once keeps "
                 "the input handling simple.",
                 "The first line holds n and q (1 <= n, q <= 10^5), the second n integers a_i (|a_i| <= 10^9). "
                 "Each of the next q lines holds l and r (1 <= l <= r <= n). For each query print "
                 "a_l + ... + a_r on its own line."),
    },
    "judge": {  # ratings per criterion (FORMAT … SOLVABILITY) and their one-sentence justifications
        d: (("Perfect", "Perfect", "Acceptable", "Perfect", "Perfect"),
            ("both blocks are present and in order.", "the statement is correct and unambiguous.",
             "a little easy for the target level.", "it uses every listed concept.",
             "it has one well-defined answer."))
        for d in ("math", "code")
    },
    "solutions": {
        "math": ("What is $2 + 3 \\cdot 4$?",
                 "<think>\nMultiplication comes before addition: 3 * 4 = 12, and 2 + 12 = 14.\n</think>\n\n"
                 "By the order of operations, $2 + 3 \\cdot 4 = 2 + 12 = 14$. The answer is $\\boxed{14}$."),
        "code": ("Read two integers a and b from one line and print their sum.",
                 "<think>\nRead the line, split it into two integers, print a + b.\n</think>\n\n"
                 "```python\na, b = map(int, input().split())\nprint(a + b)\n```"),
    },
}


def example_turns(stage: str, domain: str, user_prompt) -> tuple[dict[str, str], dict[str, str]]:
    """The (user, assistant) messages of `stage`'s worked example; `user_prompt` builds the user turn
    from the example's inputs exactly as the stage builds it for a real record."""
    ex = _EXAMPLES[stage][domain]
    if stage == "concepts":
        user, reply = user_prompt(ex[0]), "\n".join(f"Knowledge Point: {c}" for c in ex[1])
    elif stage == "problems":
        concepts, level, rationale, problem = ex
        user = user_prompt(concepts, level)
        reply = f"{RATIONALE_BEGIN}\n{rationale}\n{RATIONALE_END}\n{PROBLEM_BEGIN}\n{problem}\n{PROBLEM_END}"
    elif stage == "judge":  # judges the problems example
        concepts, level, rationale, problem = _EXAMPLES["problems"][domain]
        user = user_prompt(concepts, level, rationale, problem)
        reply = "\n".join(f"{c}: {r} - {why}" for c, r, why in zip(JUDGE_CRITERIA, ex[0], ex[1]))
        reply += "\nFinal Judgement: " + verdict_from_criteria(dict(zip(JUDGE_CRITERIA, (r.lower() for r in ex[0]))))
    else:
        user, reply = user_prompt(ex[0]), ex[1]
    return {"role": "user", "content": user}, {"role": "assistant", "content": reply}


def prompt_version(stage: str, *, few_shot: bool = False, prefill: bool = False) -> str:
    """The provenance string of a stage's prompt, with the variants that change what the model sees."""
    return PROMPT_VERSIONS[stage] + ("+1shot" if few_shot else "") + ("+prefill" if prefill else "")


# ------------------------------------------------------------------------------------------------
# g. teacher solutions and code test inputs
CODE_PREAMBLE = ("You will be given a question (problem specification) and will generate a correct Python "
                 "program that matches the specification and passes all tests.")
CODE_STDIN_INSTRUCTION = (
    "Read the inputs from stdin, solve the problem and write the answer to stdout (do not directly test on "
    "the sample inputs). Enclose your code within delimiters as follows.\n```python\n# YOUR CODE HERE\n```")


def code_user_prompt(problem: str) -> str:
    """LiveCodeBench's user turn for stdin problems (eval/benchmarks.py builds the same one), so the
    SFT data matches the evaluation prompt."""
    return f"{CODE_PREAMBLE}\n\nQuestion: {problem.strip()}\n\n{CODE_STDIN_INSTRUCTION}"


def test_inputs_prompt(problem: str, num_inputs: int = 5) -> str:
    return (
        "You are a careful tester of competitive-programming solutions. Write test inputs for the problem "
        "below: include small edge cases and a few typical cases, all valid under the stated constraints, and "
        "small enough to run in well under a second.\n\n"
        f"Problem:\n{problem.strip()}\n\n"
        f"Return exactly {num_inputs} inputs as a JSON list of strings (each string is the complete stdin "
        "contents) inside a ```json fenced block."
    )


def parse_test_inputs(text: str, max_inputs: int = 10) -> list[str]:
    blocks = re.findall(r"```(?:json)?\s*(.*?)```", text, re.S) or [text]
    for b in reversed(blocks):
        m = re.search(r"\[.*\]", b, re.S)
        if not m:
            continue
        try:
            val = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(val, list):
            ins = [v if isinstance(v, str) else json.dumps(v) for v in val]
            ins = [s if s.endswith("\n") else s + "\n" for s in ins if s.strip()]
            if ins:
                return list(dict.fromkeys(ins))[:max_inputs]
    raise ParseError("no JSON list of test inputs")


def extract_code(answer: str) -> str | None:
    """The last fenced code block of the answer part (LiveCodeBench grades the last ```python block)."""
    blocks = re.findall(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", answer, re.S)
    return blocks[-1] if blocks else None
