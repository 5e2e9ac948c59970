"""Prompt parsers: robust to the formats models use, strict about malformed output."""

from __future__ import annotations

import pytest

from promptcot_mamba.synth import prompts as P
from promptcot_mamba.synth.solutions import check_sample, code_consensus, group_answers, normalize_answer


def test_parse_concepts_formats():
    kp = "Reasoning...\nKnowledge Point: Modular arithmetic.\n**Knowledge Point 2:** Prime numbers\nKnowledge Point: modular arithmetic"
    assert P.parse_concepts(kp) == ["Modular arithmetic", "Prime numbers"]
    code = "```python\nconcepts = ['Vieta formulas', \"Quadratic equations\", 'Discriminant']\n```"
    assert P.parse_concepts(code) == ["Vieta formulas", "Quadratic equations", "Discriminant"]
    numbered = "1. Similar triangles\n2. Area ratios\n3) Angle bisector theorem\n- Ceva's theorem\n5. Mass points\n6. extra"
    assert P.parse_concepts(numbered, 5) == ["Similar triangles", "Area ratios", "Angle bisector theorem",
                                             "Ceva's theorem", "Mass points"]
    with pytest.raises(P.ParseError):
        P.parse_concepts("I cannot help with that.")


def test_parse_rationale_problem_accepts_and_rejects():
    good = (f"noise\n{P.RATIONALE_BEGIN}\nWhy this design.\n{P.RATIONALE_END}\n"
            f"{P.PROBLEM_BEGIN}\nFind the number of primes below 100.\n{P.PROBLEM_END}\ntrailing")
    assert P.parse_rationale_problem(good) == ("Why this design.", "Find the number of primes below 100.")
    bad = {
        "missing problem": f"{P.RATIONALE_BEGIN}\nr\n{P.RATIONALE_END}",
        "unclosed": f"{P.RATIONALE_BEGIN}\nr\n{P.RATIONALE_END}\n{P.PROBLEM_BEGIN}\nFind the number of x.",
        "empty": f"{P.RATIONALE_BEGIN}\n \n{P.RATIONALE_END}\n{P.PROBLEM_BEGIN}\nFind the number of x.\n{P.PROBLEM_END}",
        "order": f"{P.PROBLEM_BEGIN}\nFind the number of x.\n{P.PROBLEM_END}\n{P.RATIONALE_BEGIN}\nr\n{P.RATIONALE_END}",
        "nested": (f"{P.RATIONALE_BEGIN}\nr {P.PROBLEM_BEGIN}\n{P.RATIONALE_END}\n{P.PROBLEM_BEGIN}\n"
                   f"Find the number of x.\n{P.PROBLEM_END}"),
        "too short": f"{P.RATIONALE_BEGIN}\nr\n{P.RATIONALE_END}\n{P.PROBLEM_BEGIN}\nx=?\n{P.PROBLEM_END}",
    }
    for why, text in bad.items():
        with pytest.raises(P.ParseError):
            P.parse_rationale_problem(text)
            pytest.fail(why)


def test_parse_judgement_rules():
    crit = "\n".join(f"{c}: Perfect - fine" for c in P.JUDGE_CRITERIA)
    assert P.parse_judgement(crit + "\nFinal Judgement: perfect")["verdict"] == "perfect"
    # the reference's substring match would call this "perfect"
    with pytest.raises(P.ParseError):
        P.parse_judgement("FORMAT: Perfect\nFinal Judgement: imperfect")
    assert P.parse_judgement("Final Judgement: **Bad**")["verdict"] == "bad"
    # the last final line wins
    assert P.parse_judgement("Final Judgement: perfect\n...\nFinal Judgment: acceptable")["verdict"] == "acceptable"
    # no final line: recomputed from complete criteria
    mixed = crit.replace("CONCEPT COVERAGE: Perfect", "CONCEPT COVERAGE: Bad")
    j = P.parse_judgement(mixed)
    assert j["verdict"] == "bad" and j["source"] == "criteria" and j["criteria"]["CONCEPT COVERAGE"] == "bad"
    assert P.verdict_from_criteria({**dict.fromkeys(P.JUDGE_CRITERIA, "perfect"), "SOLVABILITY": "acceptable"}) \
        == "acceptable"
    with pytest.raises(P.ParseError):
        P.parse_judgement("Looks good to me.")


def test_teacher_sample_format_checks():
    ok = check_sample("Add them: 3.\n</think>\n\nSo the answer is \\boxed{3}.")
    assert ok["final"] == "3" and ok["response"] == "<think>\nAdd them: 3.\n</think>\n\nSo the answer is \\boxed{3}."
    for bad in ["never closes \\boxed{3}", "</think>\n\n\\boxed{3}", "x\n</think>\n\n", "x\n</think>\n\nno box",
                "x\n</think><think>y</think>\n\\boxed{1}"]:
        with pytest.raises(P.ParseError):
            check_sample(bad)
    code = check_sample("plan\n</think>\n\n```python\nprint(1)\n```", "code")
    assert code["final"] == "print(1)"


def test_answer_grouping_and_code_consensus():
    assert normalize_answer("\\dfrac{1}{2}") == normalize_answer(" \\frac{1}{2} ") == "\\frac{1}{2}"
    assert normalize_answer("12.0") == "12"
    groups = group_answers(["12", "12.0", "13", "\\text{12}"])
    assert sorted(groups[0]) == [0, 1, 3] and groups[1] == [2]
    ok = {"status": "ok", "stdout": "3\n"}
    runs = [[ok, {"status": "ok", "stdout": "7"}], [ok, {"status": "ok", "stdout": "7\n"}],
            [ok, {"status": "ok", "stdout": "8"}], [{"status": "error", "stdout": ""}, ok]]
    passed, majority = code_consensus(runs)
    assert passed == [True, True, False, False] and majority == ["3", "7"]


def test_test_inputs_parser():
    assert P.parse_test_inputs('```json\n["1 2", "3 4\\n", [5]]\n```') == ["1 2\n", "3 4\n", "[5]\n"]
    with pytest.raises(P.ParseError):
        P.parse_test_inputs("no inputs here")
