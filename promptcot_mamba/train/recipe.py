"""A training recipe: the whole curriculum as data (an ordered list of phases), validated on load.

The paper's recipe (§2.2, §3.4) is two phases that differ only in their data mixture and maximum
length; the trainer runs every phase the same way and never branches on a phase's name, so a new
curriculum is a new recipe, not new code. The specs below are typed configs
(`promptcot_mamba.common.config`): each default is written once, on its field, and a bad field
raises `RecipeError` naming the recipe and the field path, e.g.
`recipe 'paper': phases[1].optimizer.lr: input should be greater than 0 (got -1.0)`.

Layout (YAML or a dict; `recipes/*.yaml` are the shipped examples):

    name: paper-7b
    seed: 0
    model: {kind: mamba2, config: mamba-codestral-7b | {fields...}, path: FOLDER}
           {kind: hf, architecture: LlamaForCausalLM, config: {...}} | {kind: hf, path: FOLDER}
    tokenizer: FOLDER (tokenizer.json) | builtin:bytes
    run: {device, precision, micro_batch, activation_checkpointing, strategy, checkpoint_every, ...}
    optimizer: {lr, betas, weight_decay, eps, grad_clip, warmup_steps, warmup, schedule}  # defaults
    phases:
      - name: initialization
        datasets: [{kind: jsonl|parquet|hf|synthetic, path|name, schema, weight|count, ...}]
        max_length: 16384
        epochs: 1        # or steps: N
        global_batch: 64 # sequences (rows) per optimizer step; or global_batch_tokens (with packing)
        packing: false
        optimizer: {...} # merged over the recipe-level defaults
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from promptcot_mamba.common.config import (
    Bool,
    ConfigError,
    ConfigModel,
    Float,
    Int,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Shipped,
    Text,
    apply_overrides,
    config_error,
    load_yaml,
)

Schema = Literal["auto", "sft", "openthoughts2", "opencodereasoning", "openmathreasoning"]
SCHEMAS = get_args(Schema)
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
RECIPES = Shipped(RECIPES_DIR, "recipe")


class RecipeError(ConfigError):
    """A recipe that cannot run; the message names the recipe and the field path."""


def _empty_if_none(v: Any) -> Any:
    return {} if v is None else v  # `run:` or `optimizer:` left empty in YAML means "all defaults"


def _resolve(path: str, info: ValidationInfo, *, hub_ok: bool = False) -> str:
    """Relative paths resolve against the recipe's folder (the validation context's `base_dir`),
    then the working directory; with `hub_ok`, an `owner/name` that exists in neither place stays a
    Hugging Face Hub id. A spec built in code (no context) keeps its paths as given."""
    if not info.context or "base_dir" not in info.context:
        return path
    base = Path(info.context["base_dir"])
    p = Path(path).expanduser()
    if p.is_absolute() or "://" in path:
        return str(p)
    if (base / p).exists():
        return str(base / p)
    if p.exists():
        return str(p.resolve())
    if hub_ok and re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", path):
        return path
    return str(base / p)


def _validate(cls, raw: Any, label: str, base_dir: str | Path):
    try:
        return cls.model_validate(raw, context={"base_dir": Path(base_dir)})
    except ValidationError as err:
        raise RecipeError(str(config_error(err, cls, label))) from None


# ----------------------------------------------------------------------------------------------

class ModelSpec(ConfigModel):
    """Which network to train. `kind: mamba2` is our Mamba2LM (a named config, a dict of Mamba2Config
    fields, or a checkpoint folder); `kind: hf` is any transformers causal LM (an architecture name
    plus a config dict, or a checkpoint folder). A bare string is a named Mamba-2 config."""

    kind: Literal["mamba2", "hf"] = "mamba2"
    config: str | dict | None = None
    path: Text | None = None
    architecture: Text | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"  # master weights; bf16 compute comes from run.precision

    @classmethod
    def from_dict(cls, raw: Any, where: str, base_dir: str | Path) -> ModelSpec:
        return _validate(cls, raw, where, base_dir)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"kind": "mamba2", "config": data} if isinstance(data, str) else data

    @field_validator("config", mode="before")
    @classmethod
    def _config(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and not isinstance(v, (str, dict)):
            raise ValueError(f"must be a config name or a mapping, got {type(v).__name__}")
        if info.data.get("kind") == "hf" and isinstance(v, str):
            raise ValueError("a `kind: hf` config must be a mapping of the HF config fields")
        return copy.deepcopy(v)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else _resolve(v, info, hub_ok=True)

    @field_validator("architecture")
    @classmethod
    def _architecture(cls, v: str | None, info: ValidationInfo) -> str | None:
        d = info.data  # the fields before this one that validated
        from_config = d.get("config") is not None and "path" in d and d["path"] is None
        if v is None and d.get("kind") == "hf" and from_config:
            raise ValueError("a `kind: hf` model built from a config needs an architecture, "
                             "e.g. LlamaForCausalLM")
        return v

    @model_validator(mode="after")
    def _config_or_path(self) -> ModelSpec:
        if self.config is None and self.path is None:
            raise ValueError("needs `config` (a name or a mapping) or `path` (a checkpoint folder)")
        if self.config is not None and self.path is not None:
            raise ValueError("give either `config` or `path`, not both")
        return self


# `schema` (a record layout) is the recipes' word; as a field it shadows pydantic's deprecated
# BaseModel.schema(), which nothing here calls, and pydantic warns about that once at class creation
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class DatasetSpec(ConfigModel):
        """One source of a phase's mixture.

        kind: jsonl | parquet (a file, a folder or a glob: `path`), hf (`name` on the Hub or a local
        dataset folder, with `config`, `split`, `data_files`), synthetic (the built-in generator,
        `task` and `n`). schema: the record layout (train/adapters.py). weight: a multiplier on the
        number of usable records (1.0 = each once, 0.5 = a random half, 2.0 = each twice);
        count: an absolute number of examples instead (repeating when the source has fewer).
        """

        kind: Literal["jsonl", "parquet", "hf", "synthetic"]
        path: Text | None = None
        name: Text | None = None
        config: Text | None = None
        split: Text = "train"
        data_files: Any = None
        schema: Schema = "auto"
        weight: PosFloat | None = None
        count: PosInt | None = None
        limit: PosInt | None = None  # read at most this many raw records (for quick runs)
        task: Text = "arithmetic"  # synthetic only
        n: PosInt = 256  # synthetic only
        seed: NonNegInt = 0  # synthetic only
        # adapter options, e.g. {inference_mode: cot}
        options: Annotated[dict, BeforeValidator(_empty_if_none)] = {}

        @field_validator("path")
        @classmethod
        def _path(cls, v: str | None, info: ValidationInfo) -> str | None:
            if v is None and info.data.get("kind") in ("jsonl", "parquet"):
                raise ValueError(f"a `{info.data['kind']}` dataset needs a path")
            return None if v is None else _resolve(v, info)

        @field_validator("name")
        @classmethod
        def _name(cls, v: str | None, info: ValidationInfo) -> str | None:
            d = info.data
            if v is None and d.get("kind") == "hf" and "path" in d and d["path"] is None:
                raise ValueError("an `hf` dataset needs a Hub name or a local `path`")
            return v

        @model_validator(mode="after")
        def _weight_or_count(self) -> DatasetSpec:
            if self.weight is not None and self.count is not None:
                raise ValueError("give either `weight` or `count`, not both")
            return self

        def describe(self) -> str:
            if self.kind == "synthetic":
                return f"synthetic:{self.task}(n={self.n}, seed={self.seed})"
            return f"{self.kind}:{self.path or self.name}"


Beta = Annotated[Float, Field(ge=0, lt=1)]


class OptimizerSpec(ConfigModel):
    """AdamW with linear-or-log warmup then a constant rate. The defaults are the paper's settings
    (§3.4): lr 5e-6, betas (0.9, 0.95), weight decay 0.01, gradient clip 1.0, 100 warmup steps,
    then constant."""

    lr: PosFloat = 5e-6
    betas: tuple[Beta, Beta] = (0.9, 0.95)
    eps: PosFloat = 1e-8
    weight_decay: NonNegFloat = 0.01
    grad_clip: NonNegFloat = 1.0  # 0 = no clipping
    warmup_steps: NonNegInt = 100
    # log: the shape of DeepSpeed's WarmupLR (its default), which the authors' DeepSpeed config uses
    warmup: Literal["linear", "log"] = "linear"
    schedule: Literal["constant", "cosine", "linear"] = "constant"  # decay to min_lr_ratio * lr after warmup
    min_lr_ratio: NonNegFloat = 0.0

    @field_validator("betas", mode="before")
    @classmethod
    def _two(cls, v: Any) -> Any:
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError(f"must be two numbers, got {v!r}")
        return v


class PhaseSpec(ConfigModel):
    """One phase of the curriculum. `optimizer` lists only what differs from the recipe-level
    optimizer; the built phase carries the merged result."""

    name: Text
    datasets: tuple[DatasetSpec, ...]
    max_length: Annotated[Int, Field(ge=2)]  # the longest example in tokens, e.g. 16384
    optimizer: Annotated[OptimizerSpec, BeforeValidator(_empty_if_none)] = OptimizerSpec()
    epochs: PosFloat | None = 1.0  # None when `steps` is given
    steps: PosInt | None = None
    packing: Bool = False
    global_batch_tokens: PosInt | None = None  # a token budget: global_batch = tokens // max_length rows
    global_batch: PosInt = 64  # sequences (rows) per optimizer step
    init: Literal["previous", "model"] = "previous"  # previous phase's final weights | the recipe's model
    drop_over_length: Bool = True  # False: truncate over-length examples instead of dropping them

    @model_validator(mode="before")
    @classmethod
    def _either_or(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("steps") is not None:
            if "epochs" in data:
                raise ValueError("give either `epochs` or `steps`, not both")
            data = {**data, "epochs": None}
        if data.get("global_batch_tokens") is not None and "global_batch" in data:
            raise ValueError("give either `global_batch` or `global_batch_tokens`, not both")
        return data

    @field_validator("datasets")
    @classmethod
    def _some_data(cls, v: tuple[DatasetSpec, ...]) -> tuple[DatasetSpec, ...]:
        if not v:  # a validator, not min_length: pydantic would also report a list whose items failed
            raise ValueError("must be a non-empty list of dataset entries")
        return v

    @field_validator("global_batch_tokens")
    @classmethod
    def _needs_packing(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("packing") is False:
            raise ValueError("a token budget needs `packing: true` (rows are then full max_length rows)")
        return v

    @field_validator("global_batch")
    @classmethod
    def _from_token_budget(cls, v: int, info: ValidationInfo) -> int:
        tokens, max_length = info.data.get("global_batch_tokens"), info.data.get("max_length")
        return v if tokens is None or max_length is None else max(1, tokens // max_length)


class RunSpec(ConfigModel):
    """Run-level knobs: how to run, not what to learn. The CLI may override these."""

    device: Text = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    micro_batch: PosInt = 1  # rows per forward/backward on each process
    activation_checkpointing: Bool = False
    strategy: Literal["fsdp2", "ddp", "none"] = "fsdp2"  # a single process ignores it
    cpu_offload: Bool = False  # FSDP2 CPUOffloadPolicy: parameters, gradients, optimizer state on host
    # False = ZeRO-2 (the layout of the paper's DeepSpeed training), True = ZeRO-3
    reshard_after_forward: Bool = False
    checkpoint_every: NonNegInt = 500  # optimizer steps; 0 = only at the end of a phase
    keep_checkpoints: PosInt = 2
    log_every: PosInt = 1
    max_bad_steps: NonNegInt = 10  # non-finite loss/grad steps skipped before the run stops
    tensorboard: Bool = True  # when torch.utils.tensorboard imports
    wandb: Bool = False  # when wandb imports and this is on
    peak_flops: PosFloat | None = None  # per device, for MFU; guessed for known GPUs when None
    progress: Bool = True
    compile: Bool = False  # torch.compile each block (GPU)
    threads: PosInt | None = None  # torch threads during run_recipe (restored after); None leaves them

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not (v in ("auto", "cpu", "cuda") or v.startswith("cuda:")):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v


class Recipe(ConfigModel):
    """A validated recipe. `raw` is the mapping it was built from (written to run.json and used by
    `with_overrides`), `base_dir` the folder its relative paths resolve against, `source` its file."""

    name: Text
    description: Annotated[str, BeforeValidator(str)] = ""
    seed: NonNegInt = 0
    model: ModelSpec
    tokenizer: Text | None = None  # default: the model's checkpoint folder, which usually carries one
    run: Annotated[RunSpec, BeforeValidator(_empty_if_none)] = RunSpec()
    optimizer: Annotated[OptimizerSpec, BeforeValidator(_empty_if_none)] = OptimizerSpec()  # phase defaults
    phases: tuple[PhaseSpec, ...]

    _source: str = PrivateAttr("<dict>")
    _raw: dict = PrivateAttr(default_factory=dict)
    _base_dir: str = PrivateAttr(".")

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            model = info.data.get("model")
            if model is None:  # the model's own error is reported
                return None
            if model.path is None:
                raise ValueError("missing (a folder with tokenizer.json, or builtin:bytes)")
            v = model.path
        if v.startswith("builtin:"):
            if v != "builtin:bytes":
                raise ValueError(f"unknown built-in tokenizer {v!r} (known: builtin:bytes)")
            return v
        return _resolve(v, info, hub_ok=True)

    @field_validator("phases")
    @classmethod
    def _phases(cls, phases: tuple[PhaseSpec, ...], info: ValidationInfo) -> tuple[PhaseSpec, ...]:
        if not phases:
            raise ValueError("must be a non-empty list of phases")
        names = [p.name for p in phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        defaults = info.data.get("optimizer")  # validated first (field order); None when it failed
        if defaults is None:
            return phases
        return tuple(p.model_copy(update={"optimizer": defaults.model_copy(
            update={k: getattr(p.optimizer, k) for k in p.optimizer.model_fields_set})}) for p in phases)

    @property
    def source(self) -> str:
        return self._source

    @property
    def raw(self) -> dict:
        return self._raw

    @property
    def base_dir(self) -> str:
        return self._base_dir

    @classmethod
    def from_dict(cls, raw: Any, *, base_dir: str | Path | None = None, source: str = "<dict>") -> Recipe:
        """Build and validate a recipe; relative paths resolve against `base_dir` (default: cwd)."""
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        if not isinstance(raw, dict):
            raise RecipeError(f"recipe {source}: must be a mapping, got {type(raw).__name__}")
        name = str(raw.get("name") or Path(source).stem)
        label = f"recipe {name!r}" + ("" if source in ("<dict>", name) else f" ({source})")
        recipe = _validate(cls, {**copy.deepcopy(raw), "name": name}, label, base)
        recipe._source, recipe._raw, recipe._base_dir = source, copy.deepcopy(raw), str(base)
        return recipe

    @classmethod
    def from_yaml(cls, path: str | Path) -> Recipe:
        """Read a recipe file; a bare name (`tiny-cpu`) finds a shipped recipe."""
        p = find_recipe(path)
        try:
            raw = load_yaml(p)
        except ConfigError as err:
            raise RecipeError(f"recipe {err}") from None
        return cls.from_dict(raw, base_dir=p.parent, source=str(p))

    def with_overrides(self, overrides: dict[str, Any] | list[str]) -> Recipe:
        """A copy with dotted-path overrides applied (`{"run.micro_batch": 4}`, or `["phases.0.steps=10"]`
        as given to `pcm train --set`), validated again."""
        try:
            raw = apply_overrides(self.raw, overrides, source=f"recipe {self.name!r}")
        except ConfigError as err:
            raise RecipeError(str(err)) from None
        return Recipe.from_dict(raw, base_dir=self.base_dir, source=self.source)


def find_recipe(name_or_path: str | Path) -> Path:
    try:
        return RECIPES.find(name_or_path)
    except ConfigError as err:
        raise RecipeError(str(err)) from None


def list_recipes() -> list[str]:
    return RECIPES.names()
