"""Data: the three open-dataset schemas and ours, rendering and loss mask, bad-record counting,
packing layout. The sample files are written here, in the layouts of the Hub dataset cards."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promptcot_mamba.train.adapters import BadRecord, adapt, detect_schema
from promptcot_mamba.train.batches import IGNORE, BatchStream
from promptcot_mamba.train.byte_tokenizer import byte_tokenizer
from promptcot_mamba.train.examples import Renderer, build_phase_examples
from promptcot_mamba.train.recipe import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")

OT2 = {"conversations": [{"from": "user", "value": "What is 2+2?"},
                         {"from": "assistant", "value": "<think>\n2+2=4\n</think>\n\n\\boxed{4}"}],
       "question": "What is 2+2?", "source": "ai2-adapt-dev/openmath-2-math"}
OCR = {"id": "abc", "input": "Print hello.", "output": "<think>\nEasy.\n</think>\n\n```python\nprint('hello')\n```",
       "source": "codeforces", "license": "cc-by-4.0", "dataset": "code_contests", "split": "train",
       "difficulty": "1", "solution": "print('hello')"}
OMR = {"expected_answer": "4", "problem_type": "has_answer_extracted", "problem_source": "aops_c4",
       "generation_model": "DeepSeek-R1", "pass_rate_72b_tir": "0.9", "problem": "Compute 2+2.",
       "generated_solution": "<think>\nadd\n</think>\n\\boxed{4}", "inference_mode": "cot"}
SFT = {"id": "s1", "prompt": "Compute 3+3.", "response": "<think>\n6\n</think>\n\n\\boxed{6}",
       "source": "promptcot", "provenance": {}}


def test_adapters_read_each_schema():
    p = adapt(OT2, "openthoughts2")
    assert p.prompt == "What is 2+2?" and p.response.startswith("<think>")
    assert adapt({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
                 "openthoughts2").response == "a"
    p = adapt(OCR, "opencodereasoning")
    assert p.prompt == "Print hello." and "print('hello')" in p.response
    p = adapt(OMR, "openmathreasoning")
    assert p.prompt.startswith("Compute 2+2.") and "Please reason step by step" in p.prompt
    p = adapt(SFT, "sft")
    assert (p.prompt, p.response) == (SFT["prompt"], SFT["response"])
    assert adapt({"prompt": "q", "completion": "c"}, "sft").response == "c"
    for rec, schema in ((OT2, "openthoughts2"), (OCR, "opencodereasoning"), (OMR, "openmathreasoning"),
                        (SFT, "sft")):
        assert detect_schema(rec) == schema
        assert adapt(rec, "auto") == adapt(rec, schema)


def test_adapters_reject_bad_records_with_a_reason():
    cases = [({"id": "x", "response": "r"}, "sft", "missing_prompt"),
             ({"prompt": "p", "response": "   "}, "sft", "empty_completion"),
             (dict(OCR, input="-"), "opencodereasoning", "missing_question"),
             (dict(OMR, inference_mode="tir"), "openmathreasoning", "other_inference_mode"),
             ({"conversations": [{"from": "user", "value": "q"}]}, "openthoughts2", "missing_response"),
             ({"foo": 1}, "auto", "unknown_schema")]
    for rec, schema, reason in cases:
        with pytest.raises(BadRecord) as info:
            adapt(rec, schema)
        assert info.value.reason == reason


def test_rendering_and_loss_mask():
    tok = byte_tokenizer()
    ex = Renderer(tok).render_many([adapt(SFT, "sft")])[0]
    text = tok.decode(ex.ids)
    assert text == f"<|im_start|>user\n{SFT['prompt']}<|im_end|>\n<|im_start|>assistant\n{SFT['response']}<|im_end|>"
    assert tok.decode(ex.ids[:ex.n_prompt]).endswith("<|im_start|>assistant\n")
    # shifted labels: exactly the completion tokens (response + <|im_end|>, the EOS) carry loss
    from promptcot_mamba.train.batches import example_arrays

    inputs, labels = example_arrays(ex)
    labelled = labels[labels != IGNORE]
    assert tok.decode(labelled.tolist()) == SFT["response"] + "<|im_end|>"
    assert labelled[-1] == tok.eos_token_id
    assert (labels[: ex.n_prompt - 1] == IGNORE).all() and (labels[ex.n_prompt - 1:] != IGNORE).all()


def _write_jsonl(path, rows):
    with open(path, "w") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def test_bad_records_are_counted_not_crashes(tmp_path):
    long = dict(SFT, response="x" * 500)
    rows = [SFT, {"id": "m", "response": "r"}, {"prompt": "p", "response": ""}, long, "{not json", "[1, 2]",
            dict(SFT, id="s2")]
    _write_jsonl(tmp_path / "d.jsonl", rows)
    raw = {"name": "t", "model": "tiny", "tokenizer": "builtin:bytes",
           "phases": [{"name": "a", "max_length": 128, "global_batch": 2, "steps": 1,
                       "datasets": [{"kind": "jsonl", "path": str(tmp_path / "d.jsonl"), "schema": "sft"}]}]}
    phase = Recipe.from_dict(raw).phases[0]
    examples, report = build_phase_examples(phase, byte_tokenizer(), 0)
    t = report.totals
    assert len(examples) == 2
    assert t["records"] == 7 and t["kept"] == 2 and t["missing_prompt"] == 1 and t["empty_completion"] == 1
    assert t["over_length"] == 1 and t["unparsable"] == 2
    assert "over_length" in report.summary()
    # truncation instead of dropping, as the authors' training code does
    raw["phases"][0]["drop_over_length"] = False
    examples, report = build_phase_examples(Recipe.from_dict(raw).phases[0], byte_tokenizer(), 0)
    assert report.totals["truncated"] == 1 and max(len(e.ids) for e in examples) == 128


def test_parquet_and_mixture_counts(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([dict(OMR, problem=f"Compute {i}+{i}.") for i in range(10)]
                                        + [dict(OMR, inference_mode="genselect")]), tmp_path / "omr.parquet")
    _write_jsonl(tmp_path / "ocr.jsonl", [dict(OCR, id=str(i)) for i in range(4)])
    _write_jsonl(tmp_path / "ot2.jsonl", [OT2] * 3)
    raw = {"name": "t", "model": "tiny", "tokenizer": "builtin:bytes",
           "phases": [{"name": "a", "max_length": 512, "global_batch": 2, "steps": 1, "datasets": [
               {"kind": "parquet", "path": str(tmp_path / "omr.parquet"), "schema": "openmathreasoning", "count": 5},
               {"kind": "jsonl", "path": str(tmp_path / "ocr.jsonl"), "schema": "opencodereasoning", "weight": 2.0},
               {"kind": "jsonl", "path": str(tmp_path / "ot2.jsonl"), "schema": "auto", "weight": 0.5}]}]}
    examples, report = build_phase_examples(Recipe.from_dict(raw).phases[0], byte_tokenizer(), 0)
    per = report.to_dict()["per_dataset"]
    omr = next(v for k, v in per.items() if "omr" in k)
    assert omr["records"] == 11 and omr["other_inference_mode"] == 1 and omr["selected"] == 5
    assert next(v for k, v in per.items() if "ocr" in k)["selected"] == 8
    assert next(v for k, v in per.items() if "ot2" in k)["selected"] == 2
    assert len(examples) == 15


def test_packing_layout_and_determinism():
    tok = byte_tokenizer()
    pairs = [adapt(dict(SFT, prompt=f"Q{i}" * (i % 4 + 1)), "sft") for i in range(12)]
    exs = Renderer(tok).render_many(pairs)
    s = BatchStream(exs, max_length=120, global_batch=3, seed=5, packing=True)
    rows = s.global_batch_rows(0)
    assert rows == BatchStream(exs, max_length=120, global_batch=3, seed=5, packing=True).global_batch_rows(0)
    mb = s.collate(rows)
    assert mb.seq_idx is not None and mb.input_ids.shape == mb.labels.shape == mb.seq_idx.shape
    for r, row in enumerate(rows):
        assert s.row_length(row) <= 120
        docs = mb.seq_idx[r].tolist()
        assert docs[: s.row_length(row)] == sorted(docs[: s.row_length(row)])  # documents in order
        # no label crosses a document boundary: the last position of each document predicts that
        # document's own EOS, never the next document's first token
        lab = mb.labels[r].numpy()
        ends = np.nonzero(np.diff(np.asarray(docs)))[0]
        assert (lab[ends[: len(row) - 1]] == tok.eos_token_id).all()
        assert (mb.input_ids[r].numpy()[ends[: len(row) - 1] + 1] == tok.token_to_id("<|im_start|>")).all()
    assert mb.n_loss == s.loss_tokens(rows)
    # every example appears once per epoch
    epoch = [i for row in s.rows_of_epoch(0) for i in row]
    assert sorted(epoch) == list(range(12))


def test_hf_datasets_local_or_a_clear_error(tmp_path):
    import importlib.util

    from promptcot_mamba.train.recipe import DatasetSpec
    from promptcot_mamba.train.sources import DataError, preflight, read_records

    if importlib.util.find_spec("datasets") is None:
        spec = DatasetSpec(kind="hf", name="nvidia/OpenMathReasoning", split="cot")
        with pytest.raises(DataError, match=r"promptcot-mamba\[train\]"):
            preflight([("phases[0].datasets[0]", spec)])
        with pytest.raises(DataError, match="datasets"):
            list(read_records(spec))
        return
    import datasets

    datasets.Dataset.from_list([OMR, dict(OMR, problem="Compute 5.")]).save_to_disk(str(tmp_path / "omr"))
    spec = DatasetSpec(kind="hf", path=str(tmp_path / "omr"), schema="openmathreasoning")
    recs = list(read_records(spec))
    assert [adapt(r, "openmathreasoning").prompt.split("\n")[0] for r in recs] == ["Compute 2+2.", "Compute 5."]
