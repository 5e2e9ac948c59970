"""The demo's typed settings, read from a shipped preset (demo/recipes/<name>.yaml) or a file.

A preset holds everything a run needs and nothing about where it runs: problem-set sizes, the
training recipe of the Mamba-2 model (train/recipe.py format, with dataset paths relative to the
run's data folder), the Transformer baseline's architecture, the evaluation protocol and the
efficiency lengths. The command line overrides only the seed and the output folder.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).with_name("recipes")


class SettingsError(ValueError):
    """A demo preset that cannot run; the message names the file and the field."""


def _pos_int(raw: dict, key: str, where: str, default: int | None = None, lo: int = 1) -> int:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise SettingsError(f"{where}.{key}: must be an integer >= {lo}, got {v!r}")
    return v


def _num(raw: dict, key: str, where: str, default: float, lo: float = 0.0) -> float:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo:
        raise SettingsError(f"{where}.{key}: must be a number >= {lo}, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class DataSettings:
    train_foundational: int  # phase 1 problems
    composed: int  # phase 2 problems requested from the PromptCoT chain
    seeds: int  # composed seed problems for concept extraction
    combos: int  # combinations requested from the sampler
    test_foundational: int
    test_composed: int
    tokenizer_vocab: int = 384
    replay: float = 0.25  # share of phase 1 pairs replayed in phase 2 (the first ones: a fixed choice)


@dataclass(frozen=True)
class EvalSettings:
    samples: int  # k of avg@k
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class EfficiencySettings:
    lengths: tuple[int, ...]
    batch: int


@dataclass(frozen=True)
class DemoSettings:
    name: str
    seed: int
    data: DataSettings
    eval: EvalSettings
    efficiency: EfficiencySettings
    recipe: dict[str, Any]  # train/recipe.py layout; datasets relative to the run's data folder
    baseline: dict[str, Any]  # {architecture, config, match_parameters}
    threads: int = 1  # torch threads per process
    workers: int = 2  # processes: Mamba and Transformer train / evaluate side by side
    source: str = "<dict>"
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "<dict>") -> DemoSettings:
        where = f"demo preset {source}"
        if not isinstance(raw, dict):
            raise SettingsError(f"{where}: must be a mapping")
        allowed = {"name", "description", "seed", "data", "eval", "efficiency", "recipe", "baseline", "run"}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise SettingsError(f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")
        for key in ("data", "eval", "efficiency", "recipe", "baseline"):
            if not isinstance(raw.get(key), dict):
                raise SettingsError(f"{where}.{key}: missing or not a mapping")
        d, e, f, r = raw["data"], raw["eval"], raw["efficiency"], raw.get("run") or {}
        data = DataSettings(
            train_foundational=_pos_int(d, "train_foundational", f"{where}.data"),
            composed=_pos_int(d, "composed", f"{where}.data"),
            seeds=_pos_int(d, "seeds", f"{where}.data", 48),
            combos=_pos_int(d, "combos", f"{where}.data", 16),
            test_foundational=_pos_int(d, "test_foundational", f"{where}.data"),
            test_composed=_pos_int(d, "test_composed", f"{where}.data"),
            tokenizer_vocab=_pos_int(d, "tokenizer_vocab", f"{where}.data", 384, lo=261),
            replay=_num(d, "replay", f"{where}.data", 0.25))
        ev = EvalSettings(samples=_pos_int(e, "samples", f"{where}.eval", lo=2),
                          temperature=_num(e, "temperature", f"{where}.eval", 0.5),
                          top_p=_num(e, "top_p", f"{where}.eval", 0.95),
                          max_new_tokens=_pos_int(e, "max_new_tokens", f"{where}.eval"))
        lengths = f.get("lengths")
        if not isinstance(lengths, list) or not lengths or not all(isinstance(x, int) and x > 0 for x in lengths):
            raise SettingsError(f"{where}.efficiency.lengths: must be a list of positive integers, got {lengths!r}")
        eff = EfficiencySettings(tuple(sorted(set(lengths))), _pos_int(f, "batch", f"{where}.efficiency", 4))
        b = raw["baseline"]
        if not isinstance(b.get("architecture"), str) or not isinstance(b.get("config"), dict):
            raise SettingsError(f"{where}.baseline: needs `architecture` (e.g. LlamaForCausalLM) and `config`")
        if "phases" not in raw["recipe"] or "model" not in raw["recipe"]:
            raise SettingsError(f"{where}.recipe: needs `model` and `phases` (train/recipe.py layout)")
        seed = raw.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SettingsError(f"{where}.seed: must be an integer >= 0, got {seed!r}")
        return cls(name=str(raw.get("name") or Path(source).stem), seed=seed, data=data, eval=ev, efficiency=eff,
                   recipe=copy.deepcopy(raw["recipe"]), baseline=copy.deepcopy(b),
                   threads=_pos_int(r, "threads", f"{where}.run", 1),
                   workers=_pos_int(r, "workers", f"{where}.run", 2),
                   source=source, raw=copy.deepcopy(raw))

    @classmethod
    def load(cls, preset: str | Path) -> DemoSettings:
        """A shipped preset name (`default`, `quick`, `tiny`) or a YAML file."""
        import yaml

        p = Path(preset)
        if not p.exists():
            p = PRESET_DIR / f"{preset}.yaml"
        if not p.exists():
            names = sorted(x.stem for x in PRESET_DIR.glob("*.yaml"))
            raise SettingsError(f"demo preset {preset!r} not found (shipped: {', '.join(names)})")
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise SettingsError(f"demo preset {p}: not valid YAML: {err}") from None
        return cls.from_dict(raw, source=str(p))
