"""`pcm bench real-size` on the tiny shape: the random checkpoint is a real transformers checkpoint
(sharded, bf16, loads in both), every run reports what the README table reads, and the floor and the
ratios are the arithmetic they claim."""

import json
import subprocess
import sys

import pytest
import torch

from promptcot_mamba import Mamba2LM, named_config
from promptcot_mamba.bench import real_size


def test_random_checkpoint_is_sharded_bf16_and_loads_in_ours_and_transformers(tmp_path):
    folder = real_size.write_random_checkpoint("tiny", tmp_path / "tiny", shard_bytes=40_000)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((folder / s).is_file() for s in shards)
    assert json.loads((folder / "config.json").read_text())["torch_dtype"] == "bfloat16"
    ours = Mamba2LM.from_pretrained(folder)
    assert ours.dtype == torch.bfloat16  # dtype="auto": the checkpoint's own
    transformers = pytest.importorskip("transformers")
    theirs = transformers.Mamba2ForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        a, b = ours(ids).logits, theirs(ids).logits.float()
    assert a.argmax(-1).eq(b.argmax(-1)).float().mean() > 0.8  # same weights, bf16 rounding apart
    # written once: a second call finds the folder complete and leaves it alone
    mtime = (folder / "config.json").stat().st_mtime_ns
    real_size.write_random_checkpoint("tiny", folder)
    assert (folder / "config.json").stat().st_mtime_ns == mtime


def test_decode_weight_bytes_count_the_head_once():
    tied, untied = named_config("mamba2-2.7b"), named_config("mamba-codestral-7b")
    assert real_size.decode_weight_bytes(tied, 2) == tied.num_parameters() * 2
    emb = untied.vocab_size * untied.hidden_size
    assert real_size.decode_weight_bytes(untied, 1) == untied.num_parameters() - emb  # the lookup reads a row


def test_one_run_reports_what_the_table_reads(tmp_path):
    folder = real_size.write_random_checkpoint("tiny", tmp_path / "tiny")
    out = real_size.run_one("ours", "bf16", folder, prompt=20, steps=3, batch=2, device="cpu")
    for key in ("load_s", "prefill_s", "decode_b1_step_s", "decode_b2_step_s", "peak_rss_gb"):
        assert out[key] > 0, key
    assert len(out["greedy_tokens"]) == 4 and len(out["decode_b1_step_times"]) == 3


def test_the_command_runs_each_in_its_own_process_and_compares(tmp_path):
    out = tmp_path / "rs.json"
    p = subprocess.run([sys.executable, "-m", "promptcot_mamba.bench.real_size", "--shapes", "tiny",
                        "--runs", "ours:fp32", "ours:bf16", "hf:bf16", "--prompt", "16", "--steps", "3",
                        "--batch", "2", "--cache", str(tmp_path / "cache"), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())["shapes"]["tiny"]
    assert r["read_bandwidth_gb_s"] > 0
    runs = {(x["impl"], x["dtype"]): x for x in r["runs"]}
    assert set(runs) == {("ours", "fp32"), ("ours", "bf16"), ("hf", "bf16")}
    assert all("error" not in x for x in runs.values()), runs
    bf16 = runs["ours", "bf16"]
    assert bf16["decode_b1_vs_floor"] == pytest.approx(bf16["decode_b1_step_s"] / bf16["decode_floor_s"])
    assert bf16["decode_b1_speedup_vs_hf_bf16"] == pytest.approx(
        runs["hf", "bf16"]["decode_b1_step_s"] / bf16["decode_b1_step_s"])
    ref = runs["ours", "fp32"]
    assert r["reference"] == "ours:fp32" and r["runs"][0] is not None and r["runs"][0]["dtype"] == "fp32"  # first
    assert ref["greedy_equal_to_reference_prefix"] == ref["greedy_equal_to_reference_of"] == 4
    assert ref["top1_agreement_with_reference"] == 1.0 and ref["disagreements_reference_margin"] == []
    # every run scored the reference's tokens, teacher-forced
    assert all(x["forced_tokens"] == ref["greedy_tokens"] for x in runs.values())
    assert 0.0 <= bf16["top1_agreement_with_reference"] <= 1.0
    assert len(bf16["disagreements_reference_margin"]) == round(4 * (1 - bf16["top1_agreement_with_reference"]))
    # teacher forcing reproduces the reference's own greedy choices (prefill path = decode path), except
    # at a near-tie, where fp32 summation order (another CPU) may pick the other token
    for a, t, m in zip(ref["forced_argmax"], ref["greedy_tokens"], ref["forced_margin"]):
        assert a == t or m < 1e-3
    assert bf16["peak_rss_vs_weights_and_states"] < bf16["peak_rss_vs_weights"]
    # over the prompt, teacher-forced: the reference agrees with itself, bf16 mostly with fp32
    assert ref["prompt_top1_agreement_with_reference"] == 1.0 and ref["prompt_perplexity_change_vs_reference"] == 0.0
    assert bf16["prompt_top1_agreement_with_reference"] > 0.5 and abs(bf16["prompt_perplexity_change_vs_reference"]) < 0.05
    assert runs["hf", "bf16"]["prompt_top1_agreement_with_ours_bf16"] > 0.5
    assert all(x["prefill_first_s"] > 0 and x["prefill_s"] > 0 for x in runs.values())


def test_bad_run_and_shape_names_are_refused():
    with pytest.raises(SystemExit):
        real_size.main(["--runs", "hf:int8"])
    with pytest.raises(SystemExit):
        real_size.main(["--shapes", "13b"])


def test_targets_say_met_or_by_how_much():
    run = {"impl": "ours", "dtype": "bf16", "decode_b1_step_s": 0.3, "decode_b1_speedup_vs_hf_bf16": 1.3,
           "prefill_speedup_vs_hf_bf16": 2.2, "decode_b1_vs_floor": 1.5, "peak_rss_vs_weights_and_states": 1.02}
    t = {x["target"]: x for x in real_size.targets({"shapes": {"2.7b": {"runs": [run]}, "7b": {"runs": [run]}}})}
    assert t["2.7B bf16 decode b1 vs transformers bf16 (x faster)"] == {
        "target": "2.7B bf16 decode b1 vs transformers bf16 (x faster)", "measured": 1.3, "goal": 2.0, "met": False,
        "by": 0.65}
    assert t["2.7B bf16 prefill vs transformers bf16 (x faster)"]["met"]
    assert not t["7B bf16 decode b1 step / bandwidth floor"]["met"]  # lower is better: 1.5 > 1.25
    assert t["7b bf16 peak RSS / (weights + decoded states)"]["met"]
    assert not any("int8" in k for k in t)  # no int8 run, no int8 target claimed
