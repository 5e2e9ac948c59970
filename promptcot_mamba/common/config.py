"""Typed configs from YAML: one mechanism for training recipes, synthesis configs and demo presets.

A config is a pydantic model deriving from `ConfigModel`: fields carry their types, defaults and
bounds once, unknown keys are errors (a typo must not fall back to a default silently), and a
validated config is frozen. Around it this module gives every config kind the same four things:

    load_config(Recipe, "tiny-cpu", shipped=RECIPES)    a shipped name or a file → validated config
    apply_overrides(raw, ["phases.0.steps=5"])          dotted `--set a.b=v` overrides (YAML values)
    ConfigError                                         "recipe.yaml: phases[1].optimizer.lr: must be > 0 (got -1.0)"
    Shipped(folder, "recipe").find(name) / .names()     the one lookup of files shipped with the package

Field types for YAML: `Int`/`PosInt` take integers only (not `true`, `"4"` or `4.0`), `Bool` takes
true/false only, and `Float`/`PosFloat` accept the strings YAML 1.1 leaves unparsed (`5e-6` without a
dot is a string to PyYAML).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError

C = TypeVar("C", bound="ConfigModel")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file (or source) and the field path."""


class ConfigModel(BaseModel):
    """Base of every typed config: unknown keys are errors, values are validated on construction,
    and a built config is immutable (`model_copy(update=...)` or `apply_overrides` make new ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, protected_namespaces=())


# ---------------------------------------------------------------------------------- field types
def _int(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int):  # not "4", 4.0 or true: a typo should not pass
        raise ValueError(f"must be an integer, got {v!r}")
    return v


def _float(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"must be a number, got {v!r}")
    if isinstance(v, str):  # YAML 1.1 reads "5e-6" as a string
        try:
            v = float(v)
        except ValueError:
            raise ValueError(f"must be a number, got {v!r}") from None
    if isinstance(v, (int, float)) and not math.isfinite(v):
        raise ValueError(f"must be a finite number, got {v!r}")
    return v


Int = Annotated[int, BeforeValidator(_int)]
PosInt = Annotated[int, BeforeValidator(_int), Field(ge=1)]
NonNegInt = Annotated[int, BeforeValidator(_int), Field(ge=0)]
Float = Annotated[float, BeforeValidator(_float)]
PosFloat = Annotated[float, BeforeValidator(_float), Field(gt=0)]
NonNegFloat = Annotated[float, BeforeValidator(_float), Field(ge=0)]
Fraction = Annotated[float, BeforeValidator(_float), Field(ge=0, le=1)]
Bool = StrictBool  # true/false only, not 1 or "yes"
Text = Annotated[str, Field(min_length=1)]  # a non-empty string


# ---------------------------------------------------------------------------------- errors
def _field_path(loc: Iterable[Any]) -> str:
    """('phases', 1, 'optimizer', 'lr') → 'phases[1].optimizer.lr'; union-member tags dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not any(ch in part for ch in "[(,") and part not in _TYPE_TAGS:
            out += f".{part}" if out else part
    return out


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "tuple", "none", "literal"}


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The config class that owns the last element of `loc` (for 'allowed fields' hints)."""
    model: Any = cls
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        f = model.model_fields.get(part)
        if f is None:
            return None
        model = _inner_model(f.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(tp: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in getattr(tp, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _message(err: dict, cls: type[BaseModel]) -> str:
    kind, msg = err.get("type", ""), str(err.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if kind == "extra_forbidden":
        owner = _model_at(cls, tuple(err.get("loc", ())))
        allowed = f" (allowed: {', '.join(owner.model_fields)})" if owner is not None else ""
        return f"unknown field{allowed}"
    if kind == "missing":
        return "missing (required)"
    if kind in ("value_error", "assertion_error") or "input" not in err:
        return msg
    got = err["input"]
    shown = repr(got) if len(repr(got)) <= 80 else f"a {type(got).__name__}"
    return f"{msg[:1].lower() + msg[1:]} (got {shown})"


def config_error(err: ValidationError, cls: type[BaseModel], source: str) -> ConfigError:
    """One readable ConfigError from pydantic's errors: every failing field, by path."""
    lines = []
    for e in err.errors():
        path = _field_path(e.get("loc", ()))
        lines.append(f"{source}: {path + ': ' if path else ''}{_message(e, cls)}")
    return ConfigError("\n".join(dict.fromkeys(lines)))


def validate_config(cls: type[C], raw: Any, *, source: str = "<dict>", context: dict | None = None) -> C:
    """`cls` built from `raw` (a mapping read from YAML or made in code); a ConfigError names the
    source and every failing field."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: must be a mapping, got {type(raw).__name__}")
    try:
        return cls.model_validate(dict(raw), context=context)
    except ValidationError as err:
        raise config_error(err, cls, source) from None


# ---------------------------------------------------------------------------------- files
def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file's top-level mapping; a syntax error or a non-mapping names the file."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


class Shipped:
    """The YAML files shipped in one package folder (recipes, presets, configs), found by name."""

    def __init__(self, folder: Path, what: str):
        self.folder = Path(folder)
        self.what = what

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.yaml"))

    def find(self, name_or_path: str | Path) -> Path:
        """An existing file as given, else `<folder>/<name>.yaml`; a miss lists the shipped names."""
        p = Path(name_or_path).expanduser()
        if p.is_file():
            return p
        name = Path(str(name_or_path)).name
        for cand in (self.folder / f"{name}.yaml", self.folder / name):
            if cand.is_file():
                return cand
        raise ConfigError(f"{self.what} {str(name_or_path)!r}: no such file, and not a shipped {self.what} "
                          f"(shipped: {', '.join(self.names())})")


def load_config(cls: type[C], name_or_path: str | Path, *, shipped: Shipped | None = None,
                overrides: Mapping[str, Any] | Iterable[str] = (), context: dict | None = None) -> C:
    """Read a config file (or a shipped one by name), apply dotted overrides, validate."""
    path = shipped.find(name_or_path) if shipped is not None else Path(name_or_path)
    if shipped is None and not path.is_file():
        raise ConfigError(f"{path}: no such file")
    raw = apply_overrides(load_yaml(path), overrides, source=str(path))
    return validate_config(cls, raw, source=str(path), context=context)


# ---------------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=v` → ("a.b", v) with v read as a YAML value (`5` → 5, `[1, 2]` → a list, `x` → "x")."""
    import yaml

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. run.micro_batch=4")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        return key, value


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any] | Iterable[str] = (), *,
                    source: str = "<dict>") -> dict[str, Any]:
    """A deep copy of `raw` with each dotted-path override set (`phases.0.steps`: list items by index;
    missing mappings on the way are created). The result still has to be validated."""
    out = copy.deepcopy(dict(raw))
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    for key, value in items:
        _set_dotted(out, key, value, source)
    return out


def _set_dotted(raw: dict, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[:i + 1])
        if isinstance(node, list):
            try:
                idx = int(part)
                node[idx]  # noqa: B018 — bounds check
            except (ValueError, IndexError):
                raise ConfigError(f"{source}: override {key!r}: {where}: no list item {part!r} "
                                  f"(the list has {len(node)})") from None
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"{source}: override {key!r}: {'.'.join(parts[:i])} is a value, not a "
                              f"mapping or list")
