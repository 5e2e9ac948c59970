"""A training recipe: the whole curriculum as data (an ordered list of phases), validated on load.

The paper's recipe (§2.2, §3.4) is two phases that differ only in their data mixture and maximum
length; the trainer runs every phase the same way and never branches on a phase's name (STYLE.md
§14). Every field is checked when the recipe is built, and a bad one raises `RecipeError` naming its
path, e.g. `recipe 'paper': phases[1].optimizer.lr: must be > 0, got -1.0`.

Layout (YAML or a dict; `recipes/*.yaml` are the shipped examples):

    name: paper-7b
    seed: 0
    model: {kind: mamba2, config: mamba-codestral-7b | {fields...}, path: FOLDER}
           {kind: hf, architecture: LlamaForCausalLM, config: {...}} | {kind: hf, path: FOLDER}
    tokenizer: FOLDER (tokenizer.json) | builtin:bytes
    run: {device, precision, micro_batch, activation_checkpointing, distributed, checkpoint_every, ...}
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
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMAS = ("auto", "sft", "openthoughts2", "opencodereasoning", "openmathreasoning")


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the recipe and the field path."""


# ----------------------------------------------------------------------------------------------
# small validation helpers: each raises RecipeError with the field path

def _err(where: str, msg: str) -> RecipeError:
    return RecipeError(f"{where}: {msg}")


def _take(raw: dict, where: str, allowed: set[str]) -> dict:
    if not isinstance(raw, dict):
        raise _err(where, f"must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _err(f"{where}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return raw


def _int(v: Any, where: str, *, lo: int = 0, none_ok: bool = False) -> int | None:
    if v is None and none_ok:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _err(where, f"must be an integer >= {lo}, got {v!r}")
    return v


def _float(v: Any, where: str, *, lo: float | None = None, strict: bool = False, none_ok: bool = False):
    if v is None and none_ok:
        return None
    if isinstance(v, str):  # YAML 1.1 reads "5e-6" as a string
        try:
            v = float(v)
        except ValueError:
            raise _err(where, f"must be a number, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(where, f"must be a finite number, got {v!r}")
    if lo is not None and (v <= lo if strict else v < lo):
        raise _err(where, f"must be {'>' if strict else '>='} {lo}, got {v!r}")
    return float(v)


def _str(v: Any, where: str, *, choices: tuple[str, ...] | None = None, none_ok: bool = False) -> str | None:
    if v is None and none_ok:
        return None
    if not isinstance(v, str) or not v:
        raise _err(where, f"must be a non-empty string, got {v!r}")
    if choices is not None and v not in choices:
        raise _err(where, f"must be one of {list(choices)}, got {v!r}")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _err(where, f"must be true or false, got {v!r}")
    return v


# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """Which network to train. `kind: mamba2` is our Mamba2LM (a named config, a dict of Mamba2Config
    fields, or a checkpoint folder); `kind: hf` is any transformers causal LM (an architecture name
    plus a config dict, or a checkpoint folder)."""

    kind: str = "mamba2"
    config: str | dict | None = None
    path: str | None = None
    architecture: str | None = None
    dtype: str = "float32"  # master weights; bf16 compute comes from run.precision

    @classmethod
    def from_dict(cls, raw: Any, where: str, base_dir: Path) -> ModelSpec:
        if isinstance(raw, str):  # shorthand: a named Mamba-2 config
            raw = {"kind": "mamba2", "config": raw}
        raw = _take(raw, where, {f.name for f in fields(cls)})
        kind = _str(raw.get("kind", "mamba2"), f"{where}.kind", choices=("mamba2", "hf"))
        config = raw.get("config")
        path = _str(raw.get("path"), f"{where}.path", none_ok=True)
        if path is not None:
            path = _resolve(path, base_dir, hub_ok=True)
        if config is not None and not isinstance(config, (str, dict)):
            raise _err(f"{where}.config", f"must be a config name or a mapping, got {type(config).__name__}")
        if config is None and path is None:
            raise _err(where, "needs `config` (a name or a mapping) or `path` (a checkpoint folder)")
        if config is not None and path is not None:
            raise _err(where, "give either `config` or `path`, not both")
        arch = _str(raw.get("architecture"), f"{where}.architecture", none_ok=True)
        if kind == "hf" and path is None and arch is None:
            raise _err(f"{where}.architecture", "a `kind: hf` model built from a config needs an "
                       "architecture, e.g. LlamaForCausalLM")
        if kind == "hf" and isinstance(config, str):
            raise _err(f"{where}.config", "a `kind: hf` config must be a mapping of the HF config fields")
        dtype = _str(raw.get("dtype", "float32"), f"{where}.dtype", choices=("float32", "bfloat16"))
        return cls(kind=kind, config=copy.deepcopy(config), path=path, architecture=arch, dtype=dtype)


@dataclass(frozen=True)
class DatasetSpec:
    """One source of a phase's mixture.

    kind: jsonl | parquet (a file, a folder or a glob: `path`), hf (`name` on the Hub or a local
    dataset folder, with `config`, `split`, `data_files`), synthetic (the built-in generator,
    `task` and `n`). schema: the record layout (train/adapters.py). weight: a multiplier on the
    number of usable records (1.0 = each once, 0.5 = a random half, 2.0 = each twice);
    count: an absolute number of examples instead (repeating when the source has fewer).
    """

    kind: str
    path: str | None = None
    name: str | None = None
    config: str | None = None
    split: str = "train"
    data_files: Any = None
    schema: str = "auto"
    weight: float | None = None
    count: int | None = None
    limit: int | None = None  # read at most this many raw records (for quick runs)
    task: str = "arithmetic"  # synthetic only
    n: int = 256  # synthetic only
    seed: int = 0  # synthetic only
    options: dict = field(default_factory=dict)  # adapter options, e.g. {inference_mode: cot}

    @classmethod
    def from_dict(cls, raw: Any, where: str, base_dir: Path) -> DatasetSpec:
        raw = _take(raw, where, {f.name for f in fields(cls)})
        kind = _str(raw.get("kind"), f"{where}.kind", choices=("jsonl", "parquet", "hf", "synthetic"))
        path = _str(raw.get("path"), f"{where}.path", none_ok=True)
        name = _str(raw.get("name"), f"{where}.name", none_ok=True)
        if kind in ("jsonl", "parquet") and path is None:
            raise _err(f"{where}.path", f"a `{kind}` dataset needs a path")
        if kind == "hf" and name is None and path is None:
            raise _err(f"{where}.name", "an `hf` dataset needs a Hub name or a local `path`")
        if path is not None:
            path = _resolve(path, base_dir)
        weight = _float(raw.get("weight"), f"{where}.weight", lo=0.0, strict=True, none_ok=True)
        count = _int(raw.get("count"), f"{where}.count", lo=1, none_ok=True)
        if weight is not None and count is not None:
            raise _err(where, "give either `weight` or `count`, not both")
        options = raw.get("options", {}) or {}
        if not isinstance(options, dict):
            raise _err(f"{where}.options", "must be a mapping")
        return cls(kind=kind, path=path, name=name,
                   config=_str(raw.get("config"), f"{where}.config", none_ok=True),
                   split=_str(raw.get("split", "train"), f"{where}.split"),
                   data_files=raw.get("data_files"),
                   schema=_str(raw.get("schema", "auto"), f"{where}.schema", choices=SCHEMAS),
                   weight=weight, count=count,
                   limit=_int(raw.get("limit"), f"{where}.limit", lo=1, none_ok=True),
                   task=_str(raw.get("task", "arithmetic"), f"{where}.task"),
                   n=_int(raw.get("n", 256), f"{where}.n", lo=1),
                   seed=_int(raw.get("seed", 0), f"{where}.seed"),
                   options=dict(options))

    def describe(self) -> str:
        if self.kind == "synthetic":
            return f"synthetic:{self.task}(n={self.n}, seed={self.seed})"
        return f"{self.kind}:{self.path or self.name}"


@dataclass(frozen=True)
class OptimizerSpec:
    """AdamW with linear-or-log warmup then a constant rate (the paper: lr 5e-6, betas (0.9, 0.95),
    weight decay 0.01, clip 1.0, 100 warmup steps, constant; notes/promptcot_repo.md §1.7, §2.3)."""

    lr: float = 5e-6
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 100
    warmup: str = "linear"  # linear | log (DeepSpeed WarmupLR's default shape, as the reference run)
    schedule: str = "constant"  # constant | cosine | linear (decay to min_lr_ratio * lr after warmup)
    min_lr_ratio: float = 0.0

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> OptimizerSpec:
        raw = _take(raw, where, {f.name for f in fields(cls)})
        betas = raw.get("betas", (0.9, 0.95))
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise _err(f"{where}.betas", f"must be two numbers, got {betas!r}")
        b1, b2 = (_float(b, f"{where}.betas", lo=0.0) for b in betas)
        if not (b1 < 1 and b2 < 1):
            raise _err(f"{where}.betas", f"must lie in [0, 1), got {list(betas)}")
        return cls(lr=_float(raw.get("lr", 5e-6), f"{where}.lr", lo=0.0, strict=True),
                   betas=(b1, b2),
                   eps=_float(raw.get("eps", 1e-8), f"{where}.eps", lo=0.0, strict=True),
                   weight_decay=_float(raw.get("weight_decay", 0.01), f"{where}.weight_decay", lo=0.0),
                   grad_clip=_float(raw.get("grad_clip", 1.0), f"{where}.grad_clip", lo=0.0),
                   warmup_steps=_int(raw.get("warmup_steps", 100), f"{where}.warmup_steps"),
                   warmup=_str(raw.get("warmup", "linear"), f"{where}.warmup", choices=("linear", "log")),
                   schedule=_str(raw.get("schedule", "constant"), f"{where}.schedule",
                                 choices=("constant", "cosine", "linear")),
                   min_lr_ratio=_float(raw.get("min_lr_ratio", 0.0), f"{where}.min_lr_ratio", lo=0.0))


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    datasets: tuple[DatasetSpec, ...]
    max_length: int
    optimizer: OptimizerSpec
    epochs: float | None = 1.0
    steps: int | None = None
    global_batch: int = 64
    global_batch_tokens: int | None = None
    packing: bool = False
    init: str = "previous"  # previous (the last phase's final weights) | model (the recipe's model)
    drop_over_length: bool = True  # False: truncate over-length examples instead of dropping them

    @classmethod
    def from_dict(cls, raw: Any, where: str, base_dir: Path, default_optim: dict) -> PhaseSpec:
        allowed = {f.name for f in fields(cls)}
        raw = _take(raw, where, allowed)
        name = _str(raw.get("name"), f"{where}.name")
        ds = raw.get("datasets")
        if not isinstance(ds, list) or not ds:
            raise _err(f"{where}.datasets", "must be a non-empty list of dataset entries")
        datasets = tuple(DatasetSpec.from_dict(d, f"{where}.datasets[{i}]", base_dir) for i, d in enumerate(ds))
        if "max_length" not in raw:
            raise _err(f"{where}.max_length", "missing (the longest example in tokens, e.g. 16384)")
        max_length = _int(raw["max_length"], f"{where}.max_length", lo=2)
        optim_raw = dict(default_optim)
        phase_optim = raw.get("optimizer", {}) or {}
        _take(phase_optim, f"{where}.optimizer", {f.name for f in fields(OptimizerSpec)})
        optim_raw.update(phase_optim)
        optimizer = OptimizerSpec.from_dict(optim_raw, f"{where}.optimizer")
        steps = _int(raw.get("steps"), f"{where}.steps", lo=1, none_ok=True)
        epochs = _float(raw.get("epochs", None if steps else 1.0), f"{where}.epochs", lo=0.0, strict=True,
                        none_ok=True)
        if steps is not None and "epochs" in raw:
            raise _err(where, "give either `epochs` or `steps`, not both")
        tokens = _int(raw.get("global_batch_tokens"), f"{where}.global_batch_tokens", lo=1, none_ok=True)
        packing = _bool(raw.get("packing", False), f"{where}.packing")
        if tokens is not None:
            if "global_batch" in raw:
                raise _err(where, "give either `global_batch` or `global_batch_tokens`, not both")
            if not packing:
                raise _err(f"{where}.global_batch_tokens", "a token budget needs `packing: true` "
                           "(rows are then full max_length rows)")
            global_batch = max(1, tokens // max_length)
        else:
            global_batch = _int(raw.get("global_batch", 64), f"{where}.global_batch", lo=1)
        return cls(name=name, datasets=datasets, max_length=max_length, optimizer=optimizer,
                   epochs=epochs, steps=steps, global_batch=global_batch, global_batch_tokens=tokens,
                   packing=packing,
                   init=_str(raw.get("init", "previous"), f"{where}.init", choices=("previous", "model")),
                   drop_over_length=_bool(raw.get("drop_over_length", True), f"{where}.drop_over_length"))


@dataclass(frozen=True)
class RunSpec:
    """Run-level knobs: how to run, not what to learn. The CLI may override these."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    micro_batch: int = 1  # rows per forward/backward on each process
    activation_checkpointing: bool = False
    strategy: str = "fsdp2"  # fsdp2 | ddp | none (single process ignores it)
    cpu_offload: bool = False  # FSDP2 CPUOffloadPolicy: parameters, gradients, optimizer state on host
    reshard_after_forward: bool = False  # False = ZeRO-2 (the paper's DeepSpeed config), True = ZeRO-3
    checkpoint_every: int = 500  # optimizer steps; 0 = only at the end of a phase
    keep_checkpoints: int = 2
    log_every: int = 1
    max_bad_steps: int = 10  # non-finite loss/grad steps skipped before the run stops
    tensorboard: bool = True  # when torch.utils.tensorboard imports
    wandb: bool = False  # when wandb imports and this is on
    peak_flops: float | None = None  # per device, for MFU; guessed for known GPUs when None
    progress: bool = True
    compile: bool = False  # torch.compile each block (GPU)
    threads: int | None = None  # torch.set_num_threads for this run; None leaves torch's default

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> RunSpec:
        raw = _take(raw or {}, where, {f.name for f in fields(cls)})
        dev = _str(raw.get("device", "auto"), f"{where}.device")
        if not (dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:")):
            raise _err(f"{where}.device", f"must be auto, cpu, cuda or cuda:N, got {dev!r}")
        return cls(device=dev,
                   precision=_str(raw.get("precision", "auto"), f"{where}.precision",
                                  choices=("auto", "bf16", "fp32")),
                   micro_batch=_int(raw.get("micro_batch", 1), f"{where}.micro_batch", lo=1),
                   activation_checkpointing=_bool(raw.get("activation_checkpointing", False),
                                                  f"{where}.activation_checkpointing"),
                   strategy=_str(raw.get("strategy", "fsdp2"), f"{where}.strategy",
                                 choices=("fsdp2", "ddp", "none")),
                   cpu_offload=_bool(raw.get("cpu_offload", False), f"{where}.cpu_offload"),
                   reshard_after_forward=_bool(raw.get("reshard_after_forward", False),
                                               f"{where}.reshard_after_forward"),
                   checkpoint_every=_int(raw.get("checkpoint_every", 500), f"{where}.checkpoint_every"),
                   keep_checkpoints=_int(raw.get("keep_checkpoints", 2), f"{where}.keep_checkpoints", lo=1),
                   log_every=_int(raw.get("log_every", 1), f"{where}.log_every", lo=1),
                   max_bad_steps=_int(raw.get("max_bad_steps", 10), f"{where}.max_bad_steps"),
                   tensorboard=_bool(raw.get("tensorboard", True), f"{where}.tensorboard"),
                   wandb=_bool(raw.get("wandb", False), f"{where}.wandb"),
                   peak_flops=_float(raw.get("peak_flops"), f"{where}.peak_flops", lo=0.0, strict=True,
                                     none_ok=True),
                   progress=_bool(raw.get("progress", True), f"{where}.progress"),
                   compile=_bool(raw.get("compile", False), f"{where}.compile"),
                   threads=_int(raw.get("threads"), f"{where}.threads", lo=1, none_ok=True))


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelSpec
    tokenizer: str
    phases: tuple[PhaseSpec, ...]
    run: RunSpec = field(default_factory=RunSpec)
    seed: int = 0
    description: str = ""
    source: str = "<dict>"  # where the recipe came from, for messages
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    base_dir: str = "."  # relative paths in `raw` resolve against this folder

    @classmethod
    def from_dict(cls, raw: Any, *, base_dir: str | Path | None = None, source: str = "<dict>") -> Recipe:
        """Build and validate a recipe; relative paths resolve against `base_dir` (default: cwd)."""
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        if not isinstance(raw, dict):
            raise RecipeError(f"recipe {source}: must be a mapping, got {type(raw).__name__}")
        name = raw.get("name") or Path(source).stem
        where = f"recipe {name!r}"
        allowed = {"name", "description", "seed", "model", "tokenizer", "run", "optimizer", "phases"}
        _take(raw, where, allowed)
        if "model" not in raw:
            raise _err(f"{where}: model", "missing (e.g. {kind: mamba2, config: tiny})")
        model = ModelSpec.from_dict(raw["model"], f"{where}: model", base)
        tok = raw.get("tokenizer")
        if tok is None:
            if model.path is None:
                raise _err(f"{where}: tokenizer", "missing (a folder with tokenizer.json, or builtin:bytes)")
            tok = model.path  # a checkpoint folder usually carries its tokenizer
        tok = _str(tok, f"{where}: tokenizer")
        if not tok.startswith("builtin:"):
            tok = _resolve(tok, base, hub_ok=True)
        elif tok != "builtin:bytes":
            raise _err(f"{where}: tokenizer", f"unknown built-in tokenizer {tok!r} (known: builtin:bytes)")
        default_optim = raw.get("optimizer", {}) or {}
        _take(default_optim, f"{where}: optimizer", {f.name for f in fields(OptimizerSpec)})
        OptimizerSpec.from_dict(default_optim, f"{where}: optimizer")
        phases_raw = raw.get("phases")
        if not isinstance(phases_raw, list) or not phases_raw:
            raise _err(f"{where}: phases", "must be a non-empty list of phases")
        phases = tuple(PhaseSpec.from_dict(p, f"{where}: phases[{i}]", base, default_optim)
                       for i, p in enumerate(phases_raw))
        names = [p.name for p in phases]
        if len(set(names)) != len(names):
            raise _err(f"{where}: phases", f"phase names must be unique, got {names}")
        return cls(name=str(name), model=model, tokenizer=tok, phases=phases,
                   run=RunSpec.from_dict(raw.get("run"), f"{where}: run"),
                   seed=_int(raw.get("seed", 0), f"{where}: seed"),
                   description=str(raw.get("description", "")), source=source, raw=copy.deepcopy(raw),
                   base_dir=str(base))

    @classmethod
    def from_yaml(cls, path: str | Path) -> Recipe:
        """Read a recipe file; a bare name (`tiny-cpu`) finds a shipped recipe."""
        import yaml

        p = find_recipe(path)
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise RecipeError(f"recipe {p}: not valid YAML: {err}") from None
        return cls.from_dict(raw, base_dir=p.parent, source=str(p))

    def with_overrides(self, overrides: dict[str, Any]) -> Recipe:
        """A copy with dotted-path overrides applied (`run.micro_batch=4`, `phases.0.steps=10`),
        validated again."""
        raw = copy.deepcopy(self.raw)
        for key, value in overrides.items():
            _set_dotted(raw, key, value)
        return Recipe.from_dict(raw, base_dir=self.base_dir, source=self.source)


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise RecipeError(f"override {key!r}: no list item {part!r}") from None
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise RecipeError(f"override {key!r}: {'.'.join(parts[:i + 1])} is not a mapping or list")
    last = parts[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise RecipeError(f"override {key!r}: no list item {last!r}") from None
    else:
        node[last] = value


def _resolve(path: str, base: Path, *, hub_ok: bool = False) -> str:
    """Relative paths resolve against the recipe's folder, then the working directory; with
    `hub_ok`, an `owner/name` that exists in neither place stays a Hugging Face Hub id."""
    p = Path(path).expanduser()
    if p.is_absolute() or "://" in path:
        return str(p)
    cand = base / p
    if cand.exists():
        return str(cand)
    if p.exists():
        return str(p.resolve())
    if hub_ok and re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", path):
        return path
    return str(cand)


RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def find_recipe(name_or_path: str | Path) -> Path:
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    for cand in (RECIPES_DIR / f"{name_or_path}.yaml", RECIPES_DIR / str(name_or_path)):
        if cand.exists():
            return cand
    known = sorted(f.stem for f in RECIPES_DIR.glob("*.yaml"))
    raise RecipeError(f"recipe {name_or_path}: no such file, and not a shipped recipe (known: {known})")


def list_recipes() -> list[str]:
    return sorted(f.stem for f in RECIPES_DIR.glob("*.yaml"))
