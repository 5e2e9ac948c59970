"""End-to-end single-process runs: the loss falls, phase 2 starts from phase 1's export, a
transformers model trains through the same recipe, and non-finite steps are skipped and bounded."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from promptcot_mamba.train import run_recipe
from promptcot_mamba.train import trainer as trainer_mod
from promptcot_mamba.train.metrics import read_metrics
from promptcot_mamba.train.trainer import TrainingError

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_recipe(steps=(120, 30), model=None, **run) -> dict:
    phases = [{"name": "init", "datasets": [{"kind": "synthetic", "task": "arithmetic", "n": 512, "seed": 1,
                                               "options": {"max_operand": 9}}],
               "max_length": 128, "global_batch": 8, "steps": steps[0]}]
    if len(steps) > 1:
        phases.append({"name": "adv", "datasets": [{"kind": "synthetic", "task": "count", "n": 256, "seed": 2,
                                                     "options": {"max_len": 6}}],
                       "max_length": 256, "global_batch": 4, "steps": steps[1], "packing": True})
    return {"name": "unit", "seed": 3, "model": model or {"kind": "mamba2", "config": "tiny"},
            "tokenizer": "builtin:bytes",
            "run": {"device": "cpu", "precision": "fp32", "micro_batch": 8, "checkpoint_every": 0,
                    "tensorboard": False, **run},
            "optimizer": {"lr": 3e-3, "warmup_steps": 10}, "phases": phases}


def test_loss_falls_and_phase_two_starts_from_phase_one(tmp_path, monkeypatch):
    seen = {}
    real_build = trainer_mod.build_model

    def spy(spec, tok, from_folder=None):
        model = real_build(spec, tok, from_folder=from_folder)
        seen[from_folder] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return model

    monkeypatch.setattr(trainer_mod, "build_model", spy)
    res = run_recipe(tiny_recipe(), tmp_path / "run", progress=False)
    rows = read_metrics(res.metrics_path)
    assert [r["step"] for r in rows] == list(range(1, 151))
    init = [r["loss"] for r in rows if r["phase"] == "init"]
    assert sum(init[-10:]) / 10 < 0.5 * sum(init[:10]) / 10, (init[:10], init[-10:])
    assert all(r["lr"] > 0 and r["grad_norm"] is not None and r["tokens_per_s"] > 0 for r in rows)
    assert rows[0]["lr"] == pytest.approx(3e-4) and rows[20]["lr"] == pytest.approx(3e-3)  # warmup, constant
    # the hand-off: phase 2 was built from phase 1's HF export, with exactly its weights
    p1 = res.phases[0].export_dir
    assert res.checkpoints == {"init": p1, "adv": res.phases[1].export_dir}
    assert p1 in seen
    exported = load_file(f"{p1}/model.safetensors")
    for k, v in exported.items():
        torch.testing.assert_close(seen[p1][k], v, rtol=0, atol=0)
    # phase 2 starts near phase 1's final loss level rather than from scratch (ln 264 ≈ 5.6)
    adv = [r["loss"] for r in rows if r["phase"] == "adv"]
    assert adv[0] < 4.0
    for p in res.phases:
        assert (tmp_path / "run" / "phases").exists()
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            assert (res.out_dir / "phases").exists() and (p.export_dir and __import__("os").path.exists(f"{p.export_dir}/{f}"))
    from promptcot_mamba.model.lm import Mamba2LM

    m = Mamba2LM.from_pretrained(res.final_checkpoint)
    assert m.tokenizer is not None and m.tokenizer.eos_token == "<|im_end|>"
    # a second run on the same folder finds both phases finished and trains nothing
    again = run_recipe(tiny_recipe(), tmp_path / "run", progress=False)
    assert [p.export_dir for p in again.phases] == [p.export_dir for p in res.phases]
    assert len(read_metrics(res.metrics_path)) == 150


def test_transformers_model_trains_through_the_same_recipe(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = {"kind": "hf", "architecture": "LlamaForCausalLM",
             "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}}
    recipe = tiny_recipe(steps=(40,), model=model, activation_checkpointing=True)
    res = run_recipe(recipe, tmp_path / "llama", progress=False)
    rows = read_metrics(res.metrics_path)
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
    loaded = transformers.AutoModelForCausalLM.from_pretrained(res.final_checkpoint)
    assert type(loaded).__name__ == "LlamaForCausalLM"
    tok = transformers.AutoTokenizer.from_pretrained(res.final_checkpoint)
    assert tok.decode(tok("<|im_start|>hi")["input_ids"]) == "<|im_start|>hi"


def test_non_finite_steps_are_skipped_counted_and_bounded(tmp_path, monkeypatch):
    from promptcot_mamba.train import models as models_mod

    real = models_mod.token_losses
    calls = {"n": 0}

    def flaky(logits, labels):
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("nan") if calls["n"] in (3, 4) else loss  # micro-batches of steps 3 and 4

    monkeypatch.setattr(models_mod, "token_losses", flaky)
    res = run_recipe(tiny_recipe(steps=(8,)), tmp_path / "nan", progress=False)
    rows = read_metrics(res.metrics_path)
    assert [r["loss"] is None for r in rows] == [False, False, True, True, False, False, False, False]
    assert rows[-1]["skipped_steps"] == 2 and res.phases[0].skipped_steps == 2
    assert all(r["loss"] is None or r["loss"] == r["loss"] for r in rows)

    calls["n"] = 0
    monkeypatch.setattr(models_mod, "token_losses", lambda lg, lb: real(lg, lb) * float("inf"))
    with pytest.raises(TrainingError, match="max_bad_steps"):
        run_recipe(tiny_recipe(steps=(8,), max_bad_steps=3), tmp_path / "inf", progress=False)
    events = [json.loads(x) for x in (tmp_path / "inf" / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "data"


def test_run_threads_and_warning_filters_do_not_outlive_the_run(tmp_path, monkeypatch):
    import warnings

    seen = []
    real_build = trainer_mod.build_model

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_build(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "build_model", spy)
    before = torch.get_num_threads()
    run_recipe(tiny_recipe(steps=(2,), threads=before + 1), tmp_path / "run", progress=False)
    assert seen == [before + 1]  # run.threads holds during the run ...
    assert torch.get_num_threads() == before  # ... and only then
    # the trainer's own filters (third-party modules imported on the way may add theirs at import)
    ours = [f for f in warnings.filters if f[1] is not None and
            any(s in f[1].pattern for s in ("FSDP2", "lr_scheduler", "single process"))]
    assert not ours


def test_fsdp_view_warning_is_ignored_only_inside_the_block():
    import warnings

    from promptcot_mamba.train.parallel import fsdp_view_warning_ignored

    msg = "FSDP2-wrapped module (Mamba2Block) returned a view tensor. An in-place op ..."
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with fsdp_view_warning_ignored():
            warnings.warn(msg, UserWarning, stacklevel=1)
            warnings.warn("another warning", UserWarning, stacklevel=1)
        warnings.warn(msg, UserWarning, stacklevel=1)
    assert [str(w.message)[:14] for w in seen] == ["another warnin", "FSDP2-wrapped "]
    assert warnings.filters == filters
