"""`pcm train`: the command writes metrics.jsonl and checkpoints under --out, reruns resume, and a
malformed recipe gets one clear error naming the field (exit code 2, no traceback)."""

from __future__ import annotations

import pytest
import yaml

from promptcot_mamba.cli import main
from promptcot_mamba.train.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pcm_train_tiny_cpu_with_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "tiny-cpu", "--out", str(out), "--max-steps", "3", "--seed", "7", "--no-progress",
               "--set", "run.checkpoint_every=2", "--set", "phases.1.global_batch=4"])
    assert rc == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all({"step", "loss", "lr", "grad_norm", "tokens_per_s", "skipped_steps", "mfu"} <= set(r) for r in rows)
    assert [r["phase"] for r in rows] == ["initialization"] * 3 + ["advanced"] * 3
    assert rows[3]["tokens"] <= 4 * 256
    for name in ("01-initialization", "02-advanced"):
        assert (out / "phases" / name / "hf" / "config.json").exists()
        assert (out / "phases" / name / "checkpoints" / "step-00000003" / "COMPLETE").exists()
        assert (out / "phases" / name / "data_report.json").exists()
    assert "phase advanced: 3 steps" in capsys.readouterr().out
    # the same command again: everything is finished, nothing is retrained
    assert main(["train", "tiny-cpu", "--out", str(out), "--max-steps", "3", "--seed", "7", "--no-progress"]) == 0
    assert len(read_metrics(out / "metrics.jsonl")) == 6


def test_pcm_train_malformed_recipe_one_clear_error(tmp_path, capsys):
    raw = yaml.safe_load(open(__import__("promptcot_mamba.train.recipe", fromlist=["x"]).RECIPES_DIR
                              / "tiny-cpu.yaml"))
    raw["phases"][1]["optimizer"] = {"lr": "fast"}
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(raw))
    assert main(["train", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "phases[1].optimizer.lr" in err[0] and "Traceback" not in err[0]
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_bf16_autocast_runs_on_cpu(tmp_path):
    out = tmp_path / "bf16"
    assert main(["train", "tiny-cpu", "--out", str(out), "--max-steps", "2", "--precision", "bf16",
                 "--no-progress", "--set", "phases=[{name: a, datasets: [{kind: synthetic, n: 16}], "
                 "max_length: 128, global_batch: 4, steps: 2}]"]) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert len(rows) == 2 and all(r["loss"] is not None and r["loss"] == r["loss"] for r in rows)


def test_pcm_train_bad_override_is_one_clear_error(capsys):
    assert main(["train", "tiny-cpu", "--set", "run.micro_batch"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["train", "tiny-cpu", "--set", "run.micro_bach=2"]) == 2
    err = capsys.readouterr().err
    assert "run.micro_bach: unknown field" in err and "Traceback" not in err
