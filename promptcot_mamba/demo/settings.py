"""The demo's typed settings, read from a shipped preset (demo/recipes/<name>.yaml) or a file.

A preset holds everything a run needs and nothing about where it runs: problem-set sizes, the
training recipe of the Mamba-2 model (train/recipe.py format, with dataset paths relative to the
run's data folder), the Transformer baseline's architecture, the evaluation protocol and the
efficiency lengths. The command line overrides only the seed, the number of training seeds and the
output folder.

Every default lives on its field below; a field the preset does not know (a typo) is an error that
names the field and the file, like any other bad value (common/config.py).

A preset may be written as another one plus changes, in the sweep files' dotted form:

    extends: default
    name: composed
    description: …
    set: {recipe.phases.1.steps: 1920}

Its own top-level fields (name, description, chosen_by, …) replace the parent's; `set` is applied to
the parent's fields, which may extend another preset in turn.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from promptcot_mamba.common.config import (
    ConfigError,
    ConfigModel,
    Fraction,
    Int,
    NonNegFloat,
    NonNegInt,
    PosInt,
    Shipped,
    apply_overrides,
    load_yaml,
    validate_config,
)

PRESETS = Shipped(Path(__file__).with_name("recipes"), "demo preset")


class SettingsError(ConfigError):
    """A demo preset that cannot run; the message names the file and the field."""


class DataSettings(ConfigModel):
    train_foundational: PosInt  # phase 1 problems
    composed: PosInt  # phase 2 problems requested from the PromptCoT chain
    seeds: PosInt = 48  # composed seed problems for concept extraction
    combos: PosInt = 16  # combinations requested from the concept sampler
    test_foundational: PosInt
    test_composed: PosInt
    # 256 byte tokens + the 5 special tokens of demo/tokenizer_builder.py, at least
    tokenizer_vocab: Annotated[Int, Field(ge=261)] = 384
    replay: Fraction = 0.25  # share of phase 1 pairs replayed in phase 2 (the first ones: a fixed choice)
    # one-step solutions open with `step 1 a OP b` as composed ones do (Problem.reasoning): the teacher
    # restates the statement's numbers before reading their digits
    restate: bool = False


class EvalSettings(ConfigModel):
    samples: Annotated[Int, Field(ge=2)]  # k of avg@k
    temperature: NonNegFloat = 0.5
    top_p: Fraction = 0.95
    max_new_tokens: PosInt


class EfficiencySettings(ConfigModel):
    lengths: Annotated[tuple[PosInt, ...], Field(min_length=1)]  # generated tokens at which to measure
    batch: PosInt = 4

    @field_validator("lengths")
    @classmethod
    def _ascending(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(v)))


class RunSettings(ConfigModel):
    threads: PosInt = 1  # torch threads per process
    workers: PosInt = 2  # processes training / evaluating side by side, one (architecture, seed) each
    seeds: PosInt = 3  # training seeds per architecture: every cell is their mean with a 95% interval


class BaselineSettings(ConfigModel):
    """The Transformer row of Table 1: a transformers causal LM built from a config."""

    architecture: str  # e.g. LlamaForCausalLM
    config: dict[str, Any]  # its config fields (vocab_size comes from the run's tokenizer)
    match_parameters: bool = True  # choose intermediate_size so the count matches the Mamba-2 model


class DemoSettings(ConfigModel):
    name: str  # default: the preset file's name
    description: str = ""
    chosen_by: str = ""  # how the sizes were chosen (a sweep's record under demo/recipes/sweeps/), for the report
    seed: NonNegInt = 0
    data: DataSettings
    eval: EvalSettings
    efficiency: EfficiencySettings
    run: RunSettings = RunSettings()
    baseline: BaselineSettings
    recipe: dict[str, Any]  # train/recipe.py layout without `tokenizer`; datasets relative to the data folder
    _source: str = PrivateAttr("<dict>")

    @property
    def source(self) -> str:
        """The file (or label) the settings came from, for messages and the report."""
        return self._source

    @model_validator(mode="before")
    @classmethod
    def _name_from_source(cls, raw: Any, info: ValidationInfo) -> Any:
        if isinstance(raw, dict) and not raw.get("name"):
            raw = {**raw, "name": Path((info.context or {}).get("source", "<dict>")).stem}
        return raw

    @model_validator(mode="after")
    def _remember_source(self, info: ValidationInfo) -> DemoSettings:
        self._source = (info.context or {}).get("source", "<dict>")
        return self

    def _check_recipe(self) -> None:
        """The recipe section is checked when the preset loads, not after minutes of synthesis; the
        run sets the tokenizer it trains, so a stand-in takes its place here."""
        from promptcot_mamba.train.recipe import Recipe

        recipe = Recipe.from_dict({"tokenizer": "builtin:bytes", **copy.deepcopy(self.recipe)},
                                  source=f"{self.source}: recipe")
        if recipe.model.kind == "mamba2" and isinstance(recipe.model.config, dict):  # its shapes too (heads × head_dim = expand × hidden, …)
            from promptcot_mamba.model.config import Mamba2Config

            Mamba2Config.from_dict({"vocab_size": 512, **recipe.model.config}, source=f"{self.source}: recipe.model.config")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "<dict>") -> DemoSettings:
        with _settings_errors():
            settings = validate_config(cls, raw, source=source, context={"source": source})
            settings._check_recipe()
        return settings

    @classmethod
    def load(cls, preset: str | Path) -> DemoSettings:
        """A shipped preset name (`default`, `quick`) or a YAML file."""
        try:
            path = PRESETS.find(preset)
        except ConfigError:
            raise SettingsError(f"demo preset {str(preset)!r} not found (shipped: {', '.join(PRESETS.names())})") \
                from None
        with _settings_errors():
            raw = _read_preset(path)
            settings = validate_config(cls, raw, source=str(path), context={"source": str(path)})
            settings._check_recipe()
        return settings


def _read_preset(path: Path, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The preset file's fields, with `extends` / `set` resolved (module docstring)."""
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: a preset is a mapping of fields, got {type(raw).__name__}")
    parent, changes = raw.pop("extends", None), raw.pop("set", None)
    if parent is None:
        if changes is not None:
            raise SettingsError(f"{path}: `set` changes another preset: name it with `extends: <preset>`")
        return raw
    if str(path.resolve()) in chain:
        raise SettingsError(f"{path}: `extends` loops ({' -> '.join((*chain, str(path.resolve())))})")
    try:
        parent_path = PRESETS.find(parent)
    except ConfigError:
        raise SettingsError(f"{path}: extends {parent!r}, which is not a file or a shipped preset "
                            f"(shipped: {', '.join(PRESETS.names())})") from None
    if changes is not None and not isinstance(changes, dict):
        raise SettingsError(f"{path}: `set` must map dotted fields to values, got {type(changes).__name__}")
    base = apply_overrides(_read_preset(parent_path, (*chain, str(path.resolve()))), changes or {},
                           source=str(path))
    base.pop("name", None)  # the child is its own preset: its name, else its file's
    return {**base, **raw}


@contextmanager
def _settings_errors():
    """Any config error of a preset (train's RecipeError included) as a SettingsError."""
    try:
        yield
    except SettingsError:
        raise
    except ConfigError as err:
        raise SettingsError(str(err)) from None
