"""The code path of the teacher stage: generated test inputs, solutions run in the evaluation
sandbox, self-consistency on outputs, SFT export in the LiveCodeBench prompt format."""

from __future__ import annotations

import json

import pytest

from promptcot_mamba.llm.base import Generation
from promptcot_mamba.synth.prompts import CODE_PREAMBLE
from promptcot_mamba.synth.records import make_record, read_jsonl
from promptcot_mamba.synth.stages import run_stage
from promptcot_mamba.text.reasoning import split_reasoning

SUM = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n"
PROD = "import sys\nimport math\nprint(math.prod(int(x) for x in sys.stdin.read().split()))\n"
CRASH = "raise SystemExit(3)\n"


class CodeClient:
    name = "code-scripted"

    def generate(self, requests):
        out = []
        for r in requests:
            md = r.metadata
            if md["stage"] == "tests":
                text = "```json\n" + json.dumps(["1 2\n", "5 7\n", "3 3\n"]) + "\n```"
            else:
                kind = md["problem"].split(":")[0]
                i = md["sample_index"]
                code = {"agree": [SUM, SUM, PROD], "split": [SUM, PROD, CRASH], "noformat": [None] * 3}[kind][i]
                text = "no think block here" if code is None else f"Plan: read and combine.\n</think>\n\n```python\n{code}```"
            out.append([Generation(text=text, finish_reason="stop", seed=r.seed)])
        return out


def test_code_solutions_keep_consistent_ones(tmp_path):
    src = tmp_path / "problems.jsonl"
    with open(src, "w") as f:
        for kind in ("agree", "split", "noformat"):
            f.write(json.dumps(make_record(f"q-{kind}", "decontam", problem=f"{kind}: read integers, print their sum.",
                                           concepts=["io"], level="ABC")) + "\n")
    cfg = {"domain": "code", "teacher": {"k": 3, "format_retries": 0, "min_agreement": 0.5, "num_test_inputs": 3,
                                         "test_timeout_s": 10}}
    man = run_stage("solutions", src, tmp_path / "sol.jsonl", CodeClient(), cfg, progress=False)
    recs = {r["id"]: r for r in read_jsonl(tmp_path / "sol.jsonl")}
    assert man["counts"] == {"done": 1, "failed": 0, "filtered": 2}
    agree = recs["q-agree"]
    assert agree["status"] == "done" and agree["passed"] == [0, 1] and agree["agreement"] == pytest.approx(2 / 3, abs=1e-3)
    assert [t["majority_output"] for t in agree["tests"]] == ["3", "12", "6"]
    assert recs["q-split"]["status"] == "filtered" and "pass the generated tests" in recs["q-split"]["reason"]
    assert recs["q-noformat"]["status"] == "filtered" and "0 valid" in recs["q-noformat"]["reason"]
    run_stage("export", tmp_path / "sol.jsonl", tmp_path / "sft.jsonl", None, cfg, progress=False)
    sft = list(read_jsonl(tmp_path / "sft.jsonl"))
    assert len(sft) == 1 and sft[0]["prompt"].startswith(CODE_PREAMBLE) and sft[0]["source"] == "promptcot-synth/code"
    split = split_reasoning(sft[0]["response"])
    assert split.closed and "```python" in split.answer
