"""Budget forcing of teacher samples whose reasoning never closed: the reply so far, `</think>` and the
answer opening go back to the model, which writes the answer; in chat mode as the assistant prefix,
in completion mode appended to the prompt. Checked with a client that records what it is sent."""

from __future__ import annotations

import json

import pytest

from promptcot_mamba.llm.base import Generation
from promptcot_mamba.synth.records import read_jsonl
from promptcot_mamba.synth.stages import run_stage
from promptcot_mamba.text.reasoning import split_reasoning


class RamblingTeacher:
    """Never closes its think block by itself; answers "<n>}$." once the answer has been opened."""

    name = "rambler"

    def __init__(self):
        self.requests = []

    def generate(self, requests):
        out = []
        for r in requests:
            self.requests.append(r)
            context = r.prefix if r.messages is not None else r.prompt
            if context.endswith("\\boxed{"):
                text = f"{7 + len(self.requests) % 2}}}$."
            else:
                text = "Let me think about this for a very long time and" + (" never stop" if r.seed % 2 else "")
            out.append([Generation(text=text, finish_reason="length", completion_tokens=12) for _ in range(r.n)])
        return out


def _problems(path, n=2):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "problem": f"What is {i} + 7?", "status": "done", "reason": None,
                                "stage": "decontam"}) + "\n")
    return path


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_unclosed_reasoning_is_forced_to_an_answer(tmp_path, mode):
    client = RamblingTeacher()
    cfg = {"seed": 0, "teacher": {"k": 2, "mode": mode, "prefill": mode == "chat", "max_tokens": 12,
                                  "min_agreement": 0.0, "format_retries": 0, "budget_forcing": True,
                                  "forced_answer_tokens": 8}}
    man = run_stage("solutions", _problems(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", client, cfg, progress=False)
    assert man["counts"]["done"] == 2
    for rec in read_jsonl(tmp_path / "s.jsonl"):
        assert all(s["valid"] and s["forced"] for s in rec["samples"])
        assert rec["provenance"]["solutions"]["budget_forcing"] == {"answer_tokens": 8, "forced": 2}
        resp = rec["responses"][0]["response"]
        split = split_reasoning(resp)
        assert split.closed and split.reasoning.startswith("Let me think") and "<think>" not in split.answer
        assert split.answer.startswith("The final answer is $\\boxed{") and rec["answer"] in ("7", "8")
    # one first call and one forced call per sample; the forced call continues the same reply
    assert len(client.requests) == 8
    forced = [r for r in client.requests if r.max_tokens == 8]
    assert len(forced) == 4
    for r in forced:
        ctx = r.prefix if mode == "chat" else r.prompt
        assert "Let me think" in ctx and ctx.endswith("</think>\n\nThe final answer is $\\boxed{")
        if mode == "chat":
            assert r.prefix.startswith("<think>\n") and r.messages[-1]["role"] == "user"


def test_without_budget_forcing_the_samples_are_invalid(tmp_path):
    cfg = {"seed": 0, "teacher": {"k": 2, "mode": "chat", "max_tokens": 12, "format_retries": 0}}
    man = run_stage("solutions", _problems(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", RamblingTeacher(), cfg,
                    progress=False)
    assert man["counts"]["filtered"] == 2
    for rec in read_jsonl(tmp_path / "s.jsonl"):
        assert "no closing </think>" in rec["reason"]


class MumblingJudge:
    """A judge whose answers never parse."""

    name = "mumbler"

    def generate(self, requests):
        return [[Generation(text="FORMAT: Perfect - and then something else entirely", finish_reason="stop")
                 for _ in range(r.n)] for r in requests]


@pytest.mark.parametrize("policy", ["keep_all", "all_perfect"])
def test_unparsable_judgements_fail_except_under_keep_all(tmp_path, policy):
    src = tmp_path / "p.jsonl"
    with open(src, "w") as f:
        f.write(json.dumps({"id": "p0", "problem": "What is 1 + 1?", "concepts": ["sums"], "level": "AMC12",
                            "rationale": "r", "status": "done", "reason": None, "stage": "problems"}) + "\n")
    cfg = {"seed": 0, "judge": {"keep_policy": policy, "parse_retries": 0}}
    run_stage("judge", src, tmp_path / "j.jsonl", MumblingJudge(), cfg, progress=False)
    (rec,) = read_jsonl(tmp_path / "j.jsonl")
    if policy == "keep_all":  # recorded, not filtered: the judgement says why it has no verdict
        assert rec["status"] == "done" and rec["judgements"][0]["verdict"] is None
        assert "Final Judgement" in rec["judgements"][0]["error"]
    else:
        assert rec["status"] == "failed" and rec["reason"].startswith("judge 0: parse:")
