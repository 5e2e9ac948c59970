"""Teacher solutions (paper §2.2): k long chain-of-thought samples per problem, each
checked for the `<think> … </think> answer` layout, then kept by self-consistency.

- Format (text/reasoning.py is the one place that splits reasoning): the sample must close its
  think block, with non-empty reasoning and a non-empty answer after the last `</think>`, and no
  further `<think>` in the answer. Math answers need a `\\boxed{}`; code answers a fenced block. A
  malformed sample is re-drawn with a new seed up to `format_retries` times (the reference's
  infer_longcot re-sampling), then counted invalid.
- Math: the boxed answers of the valid samples are grouped (normalised strings, merged with
  math-verify when it is installed); the problem is kept when the largest group holds at least
  `min_agreement` of the valid samples; the responses are drawn from that group, and the agreement
  is recorded.
- Code: the teacher model also writes test inputs; every valid solution runs on every input in the
  evaluation sandbox (eval/sandbox.py). With no reference outputs, a solution passes when it runs
  cleanly on all inputs and its outputs equal the majority output on each input (self-consistency
  across independent samples, as CodeT-style filters do); the problem is kept when the passing share
  reaches `min_agreement`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from promptcot_mamba.llm.base import Generation, GenerationRequest
from promptcot_mamba.synth.prompts import ParseError, extract_code
from promptcot_mamba.synth.runner import FollowUp
from promptcot_mamba.text.reasoning import THINK_CLOSE, THINK_OPEN, split_reasoning


class UnclosedThink(ParseError):
    """The sample stopped inside its think block (what budget forcing can repair)."""


def check_sample(text: str, domain: str = "math", *, prefilled_think: bool = True) -> dict:
    """Validate one teacher sample; returns {"response", "reasoning", "answer", "final"} or raises
    ParseError. `response` is the normalised SFT response `<think>\\n…\\n</think>\\n\\n…`."""
    body = text
    if prefilled_think and not body.lstrip().startswith(THINK_OPEN):
        body = THINK_OPEN + "\n" + body  # the prompt ended with "<think>\n" (text/prompts.py paper_prompt)
    split = split_reasoning(body)
    if not split.closed:
        raise UnclosedThink("no closing </think> (unfinished reasoning)")
    if body.count(THINK_OPEN) != 1 or body.count(THINK_CLOSE) != 1:
        raise ParseError("nested or repeated <think> tags")
    if not split.reasoning:
        raise ParseError("empty reasoning")
    if not split.answer:
        raise ParseError("empty answer after </think>")
    if domain == "math":
        from promptcot_mamba.eval.math_grader import last_boxed  # the grader's reading of the answer

        final = last_boxed(split.answer)
        if final is None or not final.strip():
            raise ParseError("no \\boxed{} answer after </think>")
    else:
        final = extract_code(split.answer)
        if not final or not final.strip():
            raise ParseError("no fenced code block after </think>")
    response = f"{THINK_OPEN}\n{split.reasoning}\n{THINK_CLOSE}\n\n{split.answer}"
    return {"response": response, "reasoning_chars": len(split.reasoning), "final": final.strip()}


def parse_sample(domain: str, prefilled: bool):
    def parse(gens: Sequence[Generation]) -> dict:
        g = gens[0]
        out = check_sample(g.text, domain, prefilled_think=prefilled)
        out["finish_reason"] = g.finish_reason
        out["completion_tokens"] = g.completion_tokens
        return out

    return parse


# What follows a forced </think>: the opening of the answer the format checks look for.
FORCED_OPENING = {"math": "The final answer is $\\boxed{", "code": "```python\n"}


def parse_or_force(request: GenerationRequest, domain: str, prefilled: bool, answer_tokens: int):
    """`parse_sample`, with budget forcing for a reasoning that never closed: the reply so far, then
    `\n</think>\n\n` and the answer opening, continued by the model for `answer_tokens` more
    tokens (chat: as the assistant prefix; completion: appended to the prompt). Other format errors
    are not forced."""
    base = parse_sample(domain, prefilled)

    def parse(gens: Sequence[Generation]):
        try:
            return base(gens)
        except UnclosedThink:
            pass
        # chat: the runner already put request.prefix back on the text; completion: the prompt
        # ended inside the think block
        head = gens[0].text.rstrip() + f"\n{THINK_CLOSE}\n\n" + FORCED_OPENING[domain]
        chat = request.messages is not None
        nxt = dataclasses.replace(request, max_tokens=answer_tokens,
                                  **({"prefix": head} if chat else {"prompt": request.prompt + head}))

        def finish(more: Sequence[Generation]) -> dict:
            g = more[0]
            full = g.text if chat else head + g.text
            out = base([dataclasses.replace(g, text=full)])
            out["forced"] = True
            out["completion_tokens"] = (gens[0].completion_tokens or 0) + (g.completion_tokens or 0)
            return out

        return FollowUp(nxt, finish)

    return parse


# ------------------------------------------------------------------------------------------------
# math: answer agreement
def normalize_answer(a: str) -> str:
    s = a.strip().strip("$").strip()
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    for t in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\displaystyle", "^\\circ", "^{\\circ}", "\\%", "%"):
        s = s.replace(t, "")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac")
    s = re.sub(r"\s+", "", s).rstrip(".")
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


def _equivalent(a: str, b: str) -> bool:
    if len(a) > 200 or len(b) > 200:
        return False
    try:
        from promptcot_mamba.eval.math_grader import equivalent

        return bool(equivalent(a, b))
    except Exception:  # math-verify missing or failing: string identity only
        return False


def group_answers(finals: Sequence[str]) -> list[list[int]]:
    """Indices of equal answers, largest group first (ties: first seen)."""
    groups: list[tuple[str, list[int]]] = []
    for i, f in enumerate(finals):
        key = normalize_answer(f)
        for gkey, members in groups:
            if gkey == key:
                members.append(i)
                break
        else:
            for _gkey, members in groups:
                if _equivalent(finals[members[0]], f):
                    members.append(i)
                    break
            else:
                groups.append((key, [i]))
    order = sorted(range(len(groups)), key=lambda g: (-len(groups[g][1]), g))
    return [groups[g][1] for g in order]


# ------------------------------------------------------------------------------------------------
# code: run solutions on generated inputs
def run_solutions(codes: Sequence[str], inputs: Sequence[str], timeout_s: float = 5.0,
                  workers: int = 2) -> list[list[dict]]:
    """out[s][t] = {"status", "stdout"} of solution s on input t, in the evaluation sandbox."""
    from promptcot_mamba.eval.sandbox import SandboxLimits, run_python

    limits = SandboxLimits(timeout_s=timeout_s, memory_bytes=1 << 30)

    def one(job: tuple[int, int]) -> dict:
        s, t = job
        r = run_python(codes[s], stdin=inputs[t], limits=limits)
        return {"status": r.status, "stdout": r.stdout}

    jobs = [(s, t) for s in range(len(codes)) for t in range(len(inputs))]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        flat = list(pool.map(one, jobs))
    return [flat[s * len(inputs):(s + 1) * len(inputs)] for s in range(len(codes))]


def _norm_out(s: str) -> str:
    return "\n".join(line.rstrip() for line in s.strip().splitlines())


def code_consensus(results: Sequence[Sequence[dict]]) -> tuple[list[bool], list[str | None]]:
    """Per solution whether it passes (ok on every input, and on each input equal to the majority
    output, which needs ≥ 2 agreeing solutions unless there is only one), and the majority outputs."""
    n_sol = len(results)
    n_in = len(results[0]) if results else 0
    majority: list[str | None] = []
    for t in range(n_in):
        counts: dict[str, int] = {}
        for s in range(n_sol):
            if results[s][t]["status"] == "ok":
                o = _norm_out(results[s][t]["stdout"])
                counts[o] = counts.get(o, 0) + 1
        best = max(counts.items(), key=lambda kv: kv[1], default=(None, 0))
        majority.append(best[0] if best[1] >= 2 or n_sol == 1 else None)
    passed = []
    for s in range(n_sol):
        ok = n_in > 0
        for t in range(n_in):
            r = results[s][t]
            if r["status"] != "ok" or majority[t] is None or _norm_out(r["stdout"]) != majority[t]:
                ok = False
                break
        passed.append(ok)
    return passed, majority
