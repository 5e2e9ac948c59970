"""Recipes: the curriculum as data, validated on load with errors that name the field."""

from __future__ import annotations

import pytest
import yaml

from promptcot_mamba.train import Recipe, RecipeError, list_recipes, run_recipe
from promptcot_mamba.train.recipe import RECIPES_DIR
from promptcot_mamba.train.sources import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


def base() -> dict:
    return {
        "name": "t", "model": {"kind": "mamba2", "config": "tiny"}, "tokenizer": "builtin:bytes",
        "optimizer": {"lr": 1e-3, "warmup_steps": 2},
        "phases": [{"name": "a", "datasets": [{"kind": "synthetic", "n": 8}], "max_length": 64,
                    "global_batch": 4, "steps": 2}],
    }


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["phases"][0]["optimizer"].update(lr=-1.0) if "optimizer" in r["phases"][0]
     else r["phases"][0].update(optimizer={"lr": -1.0}), "phases[0].optimizer.lr"),
    (lambda r: r["phases"][0].pop("max_length"), "phases[0].max_length"),
    (lambda r: r["phases"][0].update(max_lenght=5), "phases[0].max_lenght"),
    (lambda r: r["phases"][0]["datasets"][0].update(kind="csv"), "phases[0].datasets[0].kind"),
    (lambda r: r["phases"][0]["datasets"][0].update(schema="alpaca"), "phases[0].datasets[0].schema"),
    (lambda r: r["phases"][0]["datasets"][0].update(weight=1.0, count=3), "phases[0].datasets[0]"),
    (lambda r: r.update(model={"kind": "hf", "config": {"hidden_size": 8}}), "model.architecture"),
    (lambda r: r.update(run={"micro_batch": 0}), "run.micro_batch"),
    (lambda r: r.update(run={"precision": "fp8"}), "run.precision"),
    (lambda r: r["optimizer"].update(betas=[0.9]), "optimizer.betas"),
    (lambda r: r.update(phases=[]), "phases"),
    (lambda r: r.pop("tokenizer"), "tokenizer"),
    (lambda r: r["phases"].append(dict(r["phases"][0])), "phases"),
])
def test_malformed_recipe_names_the_field(mutate, field):
    raw = base()
    mutate(raw)
    with pytest.raises(RecipeError) as info:
        Recipe.from_dict(raw)
    assert field in str(info.value), str(info.value)
    assert "recipe 't'" in str(info.value)


def test_valid_recipe_and_defaults():
    r = Recipe.from_dict(base())
    ph = r.phases[0]
    assert ph.optimizer.lr == 1e-3 and ph.optimizer.betas == (0.9, 0.95)
    assert ph.optimizer.weight_decay == 0.01 and ph.optimizer.grad_clip == 1.0
    assert ph.global_batch == 4 and ph.steps == 2 and ph.init == "previous"


def test_phase_optimizer_merges_over_recipe_defaults():
    raw = base()
    raw["phases"][0]["optimizer"] = {"weight_decay": 0.0}
    ph = Recipe.from_dict(raw).phases[0]
    assert ph.optimizer.lr == 1e-3 and ph.optimizer.weight_decay == 0.0


def test_token_budget_needs_packing():
    raw = base()
    del raw["phases"][0]["global_batch"]
    raw["phases"][0]["global_batch_tokens"] = 256
    with pytest.raises(RecipeError, match="packing"):
        Recipe.from_dict(raw)
    raw["phases"][0]["packing"] = True
    assert Recipe.from_dict(raw).phases[0].global_batch == 4  # 256 tokens / 64 per row


def test_overrides_are_validated():
    r = Recipe.from_dict(base()).with_overrides({"run.micro_batch": 2, "phases.0.steps": 5})
    assert r.run.micro_batch == 2 and r.phases[0].steps == 5
    with pytest.raises(RecipeError, match="run.micro_batch"):
        r.with_overrides({"run.micro_batch": -3})


def test_shipped_recipes_load_and_paper_settings():
    names = list_recipes()
    for required in ("tiny-cpu", "paper-7b", "paper-7b-math", "ablation-no-promptcot",
                     "ablation-no-promptcot-ot", "ablation-no-promptcot-ocr"):
        assert required in names
    for n in names:
        Recipe.from_yaml(n)
    paper = Recipe.from_yaml("paper-7b")
    p1, p2 = paper.phases
    assert (p1.max_length, p2.max_length) == (16384, 20480)
    for ph in paper.phases:
        o = ph.optimizer
        assert (o.lr, o.betas, o.weight_decay, o.grad_clip, o.warmup_steps, o.schedule) == \
            (5e-6, (0.9, 0.95), 0.01, 1.0, 100, "constant")
        assert ph.global_batch == 64
    assert paper.run.precision == "bf16" and paper.run.activation_checkpointing
    assert {d.schema for d in p1.datasets} == {"opencodereasoning", "openthoughts2"}
    assert {d.schema for d in p2.datasets} == {"sft", "opencodereasoning", "openmathreasoning"}
    math = Recipe.from_yaml("paper-7b-math")
    assert [d.schema for d in math.phases[0].datasets] == ["openmathreasoning"]


def test_repo_root_recipe_is_the_shipped_one():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "recipes" / "tiny-cpu.yaml"
    assert root.exists()
    assert yaml.safe_load(root.read_text()) == yaml.safe_load((RECIPES_DIR / "tiny-cpu.yaml").read_text())


def test_missing_data_file_fails_before_training(tmp_path):
    raw = base()
    raw["phases"].append({"name": "b", "datasets": [{"kind": "jsonl", "path": str(tmp_path / "nope.jsonl")}],
                          "max_length": 64, "global_batch": 4, "steps": 1})
    with pytest.raises(DataError, match="nope.jsonl"):
        run_recipe(raw, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "metrics.jsonl").exists()  # nothing trained


def test_bad_yaml_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\nphases: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        Recipe.from_yaml(f)


def test_relative_paths_keep_their_base_through_overrides(tmp_path):
    (tmp_path / "d.jsonl").write_text("")
    raw = base()
    raw["phases"][0]["datasets"] = [{"kind": "jsonl", "path": "d.jsonl"}]
    r = Recipe.from_dict(raw, base_dir=tmp_path)
    assert r.phases[0].datasets[0].path == str(tmp_path / "d.jsonl")
    r2 = r.with_overrides({"run.micro_batch": 2})
    assert r2.phases[0].datasets[0].path == str(tmp_path / "d.jsonl")


def test_recipe_error_is_a_config_error():
    from promptcot_mamba.common.config import ConfigError

    assert issubclass(RecipeError, ConfigError) and issubclass(RecipeError, ValueError)


def test_override_of_an_unknown_field_names_it():
    r = Recipe.from_dict(base())
    with pytest.raises(RecipeError) as info:
        r.with_overrides({"run.micro_bach": 2})
    assert "recipe 't'" in str(info.value) and "run.micro_bach: unknown field" in str(info.value)
    assert "micro_batch" in str(info.value)  # the allowed fields are listed
    with pytest.raises(RecipeError, match="no list item '3'"):
        r.with_overrides({"phases.3.steps": 1})
    # the `pcm train --set` form: values read as YAML
    r2 = r.with_overrides(["phases.0.optimizer.lr=5e-6", "run.activation_checkpointing=true"])
    assert r2.phases[0].optimizer.lr == 5e-6 and r2.run.activation_checkpointing is True


def test_yaml_1_1_float_strings_load_and_bools_are_not_numbers(tmp_path):
    f = tmp_path / "r.yaml"
    raw = base()
    raw["optimizer"] = {"lr": "5e-6", "eps": "1e-8"}  # what PyYAML returns for `lr: 5e-6`
    f.write_text(yaml.safe_dump(raw).replace("'5e-6'", "5e-6").replace("'1e-8'", "1e-8"))
    assert yaml.safe_load(f.read_text())["optimizer"]["lr"] == "5e-6"  # a string to PyYAML
    r = Recipe.from_yaml(f)
    assert r.phases[0].optimizer.lr == 5e-6 and r.phases[0].optimizer.eps == 1e-8
    for key, value in (("run.micro_batch", True), ("optimizer.lr", True), ("run.progress", "yes"),
                       ("optimizer.lr", "fast")):
        with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
            r.with_overrides({key: value})


def test_defaults_are_written_once():
    from promptcot_mamba.train.recipe import OptimizerSpec, RunSpec

    raw = base()
    del raw["optimizer"]
    r = Recipe.from_dict(raw)
    assert r.phases[0].optimizer == OptimizerSpec() == r.optimizer
    assert r.run == RunSpec()
    # a YAML section left empty (`run:` / `optimizer:`) means all defaults
    raw.update(run=None, optimizer=None)
    assert Recipe.from_dict(raw).run == RunSpec()
    # epochs is 1.0 unless steps is given
    raw = base()
    del raw["phases"][0]["steps"]
    assert Recipe.from_dict(raw).phases[0].epochs == 1.0
    assert Recipe.from_dict(base()).phases[0].epochs is None


def test_phase_optimizer_fields_override_only_what_they_name():
    raw = base()
    raw["optimizer"].update(betas=[0.8, 0.9], warmup="log")
    raw["phases"].append({"name": "b", "datasets": [{"kind": "synthetic"}], "max_length": 64,
                          "optimizer": {"lr": 2e-3, "betas": ["0.5", "0.6"]}})
    a, b = Recipe.from_dict(raw).phases
    assert (a.optimizer.lr, a.optimizer.betas, a.optimizer.warmup) == (1e-3, (0.8, 0.9), "log")
    assert (b.optimizer.lr, b.optimizer.betas, b.optimizer.warmup) == (2e-3, (0.5, 0.6), "log")
    assert b.optimizer.warmup_steps == 2


def test_shorthand_model_and_tokenizer_defaults(tmp_path):
    raw = base()
    raw["model"] = "tiny"
    assert Recipe.from_dict(raw).model.config == "tiny"
    # no tokenizer: the model's checkpoint folder (a Hub id stays a Hub id)
    raw.pop("tokenizer")
    raw["model"] = {"kind": "mamba2", "path": "org/some-model"}
    assert Recipe.from_dict(raw, base_dir=tmp_path).tokenizer == "org/some-model"
    (tmp_path / "ckpt").mkdir()
    raw["model"] = {"path": "ckpt"}
    r = Recipe.from_dict(raw, base_dir=tmp_path)
    assert r.model.path == r.tokenizer == str(tmp_path / "ckpt")
    raw["tokenizer"] = "builtin:words"
    with pytest.raises(RecipeError, match="tokenizer: unknown built-in tokenizer"):
        Recipe.from_dict(raw)


def test_errors_from_a_file_name_the_file(tmp_path):
    raw = base()
    raw["run"] = {"micro_batch": 0}
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(f)
    assert str(info.value).startswith(f"recipe 't' ({f}): run.micro_batch:")
    with pytest.raises(RecipeError, match="not a shipped recipe"):
        Recipe.from_yaml("no-such-recipe")
