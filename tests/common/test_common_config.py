"""The typed-config mechanism: errors name the file and the field, overrides are dotted, shipped files
are found by name."""

import pytest
from pydantic import ValidationError

from promptcot_mamba.common.config import (
    ConfigError,
    ConfigModel,
    Float,
    PosFloat,
    PosInt,
    Shipped,
    apply_overrides,
    load_config,
    parse_override,
    validate_config,
)


class Opt(ConfigModel):
    lr: PosFloat = 5e-6
    betas: tuple[Float, Float] = (0.9, 0.95)


class Phase(ConfigModel):
    name: str
    steps: PosInt | None = None
    optimizer: Opt = Opt()


class Run(ConfigModel):
    phases: list[Phase]
    seed: int = 0


def error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(Run, raw, source="run.yaml")
    return str(info.value)


def test_errors_name_the_source_and_the_field_path():
    assert error({"phases": [{"name": "a", "optimizer": {"lr": -1}}]}).startswith(
        "run.yaml: phases[0].optimizer.lr: input should be greater than 0 (got -1)")
    assert error({"phases": [{"name": "a", "optimizer": {"lrr": 1}}]}) == (
        "run.yaml: phases[0].optimizer.lrr: unknown field (allowed: lr, betas)")
    assert error({"phases": [{"steps": 3}]}) == "run.yaml: phases[0].name: missing (required)"
    assert error([1, 2]) == "run.yaml: must be a mapping, got list"
    both = error({"phases": [{"name": "a", "steps": 0}], "seed": "x"})
    assert "phases[0].steps" in both and "seed" in both  # every failing field, one per line


def test_yaml_friendly_field_types():
    assert "must be an integer, got True" in error({"phases": [{"name": "a", "steps": True}]})
    run = validate_config(Run, {"phases": [{"name": "a", "optimizer": {"lr": "5e-6"}}]})  # YAML 1.1 string
    assert run.phases[0].optimizer.lr == 5e-6
    assert "finite" in error({"phases": [{"name": "a", "optimizer": {"lr": float("inf")}}]})


def test_configs_are_frozen_and_defaults_live_on_the_fields():
    run = validate_config(Run, {"phases": [{"name": "a"}]})
    assert run.phases[0].optimizer == Opt() and run.seed == 0
    with pytest.raises(ValidationError, match="frozen"):
        run.seed = 3  # type: ignore[misc]


def test_dotted_overrides():
    raw = {"phases": [{"name": "a"}, {"name": "b"}]}
    out = apply_overrides(raw, ["phases.1.steps=5", "phases.0.optimizer.lr=1.0e-3", "extra.list=[1, 2]"])
    assert out["phases"][1]["steps"] == 5 and out["phases"][0]["optimizer"] == {"lr": 1e-3}
    assert out["extra"] == {"list": [1, 2]} and raw == {"phases": [{"name": "a"}, {"name": "b"}]}  # a copy
    assert apply_overrides(raw, {"seed": 7})["seed"] == 7
    with pytest.raises(ConfigError, match="no list item '5'"):
        apply_overrides(raw, ["phases.5.steps=1"], source="r.yaml")
    with pytest.raises(ConfigError, match="is a value, not a mapping"):
        apply_overrides({"seed": 1}, ["seed.x=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("seed")
    assert parse_override("name=x: y") == ("name", {"x": "y"})  # a YAML value


def test_shipped_lookup_and_load_config(tmp_path):
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "small.yaml").write_text("phases: [{name: a, steps: 2}]\n")
    shipped = Shipped(folder, "preset")
    assert shipped.names() == ["small"] and shipped.find("small") == folder / "small.yaml"
    with pytest.raises(ConfigError, match=r"preset 'big': no such file, and not a shipped preset \(shipped: small\)"):
        shipped.find("big")
    run = load_config(Run, "small", shipped=shipped, overrides=["phases.0.steps=4"])
    assert run.phases[0].steps == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("phases: [{name: a, steps: -1}]\n")
    with pytest.raises(ConfigError, match=rf"{bad}: phases\[0\]\.steps"):
        load_config(Run, bad)
    bad.write_text("phases: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, bad)
