"""A deterministic, procedural stand-in for every LLM role of the synthesis pipeline.

It answers each stage in the format the parsers expect, as a pure function of the request (stage
inputs + seed), so tests and benchmarks can check the plumbing — resumption, fault handling,
throughput, counts — without a model. Two faces over one answer function:
- `ScriptedSynthClient`: an in-process LLMClient that reads `GenerationRequest.metadata` (the
  structured inputs every stage attaches, the way the demo's procedural client does);
- `scripted_responder`: for the scripted HTTP endpoint (llm/scripted_server.py), which only sees
  the prompt text, so it recovers the stage and its inputs from our own prompt wording.
Some answers are deliberately bad (a judge says "bad", a teacher sample disagrees, an answer is
malformed) at fixed, seeded rates so that every filter has something to do.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from promptcot_mamba.llm.base import Generation, GenerationRequest
from promptcot_mamba.synth import prompts as P
from promptcot_mamba.text.prompts import MATH_SUFFIX

CONCEPT_POOL = [
    "modular arithmetic", "prime factorization", "greatest common divisor", "arithmetic sequences",
    "geometric series", "binomial coefficients", "pigeonhole principle", "inclusion-exclusion",
    "Vieta's formulas", "quadratic equations", "AM-GM inequality", "Pythagorean theorem",
    "similar triangles", "area of polygons", "coordinate geometry", "complex numbers",
    "roots of unity", "recurrence relations", "expected value", "conditional probability",
    "logarithms", "trigonometric identities", "polynomial remainder theorem", "floor functions",
]


def _h(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()[:8], "big")


def answer(stage: str, inputs: dict, seed: int | None, *, bad_rate: float = 0.1) -> str:
    """The scripted model's text for one sample of `stage` given the stage's structured inputs."""
    s = seed or 0
    if stage == "concepts":
        problem = inputs.get("problem", "")
        k = int(inputs.get("num_concepts", 5))
        start = _h(problem) % len(CONCEPT_POOL)
        step = 1 + _h(problem, "step") % 3
        picks = [CONCEPT_POOL[(start + i * step) % len(CONCEPT_POOL)] for i in range(k)]
        return "Let me think about what this needs.\n" + "\n".join(f"Knowledge Point: {c}" for c in picks)
    if stage == "problems":
        concepts = inputs.get("concepts") or []
        a, b = 2 + _h(concepts, s) % 97, 3 + _h(concepts, s, "b") % 89
        if _h(concepts, s, "malformed") % 100 < bad_rate * 100 / 2:
            return f"{P.RATIONALE_BEGIN}\nforgot to close the rationale"
        rationale = (f"Combine {', '.join(concepts[:2]) or 'the concepts'} at level {inputs.get('level')}: "
                     f"ask for a sum that needs both ideas.")
        problem = (f"Using {' and '.join(concepts[:2]) or 'basic facts'}, let a = {a} and b = {b}. "
                   f"Compute the value of a + b. (variant {_h(concepts, s) % 100000})")
        return (f"{P.RATIONALE_BEGIN}\n{rationale}\n{P.RATIONALE_END}\n"
                f"{P.PROBLEM_BEGIN}\n{problem}\n{P.PROBLEM_END}")
    if stage == "judge":
        problem = inputs.get("problem", "")
        verdict = "bad" if _h(problem, inputs.get("judge_index", 0), "judge") % 100 < bad_rate * 100 else "perfect"
        rating = "Perfect" if verdict == "perfect" else "Bad"
        lines = [f"{c}: {rating} - scripted review" for c in P.JUDGE_CRITERIA]
        return "\n".join(lines) + f"\nFinal Judgement: {verdict}"
    if stage == "solutions":
        problem = inputs.get("problem", "")
        nums = [int(x) for x in re.findall(r"= (\d+)", problem)]
        total = sum(nums) if nums else 0
        if _h(problem, s, "wrong") % 100 < bad_rate * 100:
            total += 1  # a disagreeing sample
        body = f"The problem asks for a sum. Adding the given values gives {total}.\n</think>\n\n" \
               f"The answer is \\boxed{{{total}}}."
        if inputs.get("mode") == "chat":
            body = "<think>\n" + body
        if inputs.get("domain") == "code":
            code = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n"
            body = f"Read numbers and add them.\n</think>\n\n```python\n{code}```"
            if inputs.get("mode") == "chat":
                body = "<think>\n" + body
        return body
    if stage == "tests":
        return "```json\n" + json.dumps(["1 2\n", "5 7\n", "0 0\n"]) + "\n```"
    return f"scripted: unknown stage {stage!r}"


class ScriptedSynthClient:
    """In-process LLMClient over `answer` (reads request.metadata)."""

    def __init__(self, name: str = "scripted-synth", bad_rate: float = 0.1):
        self.name = name
        self.bad_rate = bad_rate
        self.calls = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]:
        out = []
        for r in requests:
            self.calls += 1
            stage = r.metadata.get("stage", "")
            gens = []
            for i in range(r.n):
                seed = None if r.seed is None else r.seed + i
                text = _continue(answer(stage, r.metadata, seed, bad_rate=self.bad_rate), r.prefix)
                gens.append(Generation(text=text, finish_reason="stop", seed=r.seed))
            out.append(gens)
        return out


def _continue(text: str, prefix: str) -> str:
    """What a model prefilled with `prefix` would add: the scripted answer without that opening (an
    answer that does not start with it is returned whole, as a model ignoring the prefill would)."""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


# ------------------------------------------------------------------------------------------------
# the same answers from prompt text only (HTTP)
def _between(text: str, start: str, end: str) -> str:
    i = text.find(start)
    if i < 0:
        return ""
    i += len(start)
    j = text.find(end, i)
    return text[i:j if j >= 0 else None].strip()


def infer_stage(text: str) -> tuple[str, dict]:
    """Recover (stage, inputs) from one of our prompts."""
    if "name the" in text and "foundational concepts a student must master" in text:
        return "concepts", {"problem": _between(text, "Problem:\n", "\n\nEach concept"),
                            "num_concepts": int(re.search(r"name the (\d+)", text).group(1))}
    if "Foundational Concepts:" in text and "Difficulty Level:" in text and "demanding reviewer" not in text:
        concepts = re.findall(r"^\d+\. (.+)$", _between(text, "Foundational Concepts:\n", "\n\nDifficulty"), re.M)
        level = re.search(r"Difficulty Level: (.+)", text).group(1).strip()
        return "problems", {"concepts": concepts, "level": level}
    if "demanding reviewer" in text:
        return "judge", {"problem": _between(text, P.PROBLEM_BEGIN, P.PROBLEM_END), "judge_index": 0}
    if "Write test inputs" in text:
        return "tests", {}
    if "<|im_start|>user\n" in text:  # the paper prompt of the teacher (completion mode)
        user = _between(text, "<|im_start|>user\n", "<|im_end|>")
        return "solutions", {"problem": user.replace(MATH_SUFFIX, ""), "mode": "completion"}
    if "Think through the problem step by step inside <think>" in text:
        return "solutions", {"problem": text.split(MATH_SUFFIX)[0], "mode": "chat"}
    return "unknown", {}


def scripted_responder(route: str, body: dict, i: int) -> str:
    """Responder for llm.scripted_server.ScriptedEndpoint."""
    prefix = ""
    if route == "chat":
        msgs = body.get("messages") or [{}]
        if body.get("continue_final_message") and len(msgs) > 1:
            prefix, msgs = msgs[-1].get("content", ""), msgs[:-1]
        text = msgs[-1].get("content", "")
    else:
        text = body.get("prompt", "")
    stage, inputs = infer_stage(text)
    if stage == "judge":
        # judge_index is not in the prompt; the model name tells judges apart on a real endpoint
        inputs["judge_index"] = 0
    seed = body.get("seed")
    return _continue(answer(stage, inputs, None if seed is None else seed + i), prefix)
