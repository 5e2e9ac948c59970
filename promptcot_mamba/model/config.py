"""Typed, validated configuration of a Mamba-2 language model, read from either checkpoint dialect.

Field names follow transformers' `Mamba2Config` (the dialect we write); the paper's symbols are in
the comments. `from_dict` also reads the mamba_ssm dialect (`d_model`, `n_layer`, `ssm_cfg`) and
Mistral's `params.json` (`dim`, `n_layers`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# a config that cannot describe a valid Mamba-2 model raises the project's one ConfigError (a
# ValueError); the message names the field, and the file when it came from one
from promptcot_mamba.common.config import ConfigError


@dataclass(frozen=True)
class Mamba2Config:
    vocab_size: int = 32768
    hidden_size: int = 4096  # d (d_model)
    num_hidden_layers: int = 64
    state_size: int = 128  # N
    head_dim: int = 64  # P
    num_heads: int = 128  # H = expand * d / P
    n_groups: int = 8  # G: groups of B and C shared by H / G heads
    expand: int = 2
    conv_kernel: int = 4  # K, the depthwise causal conv width
    chunk_size: int = 256  # Q, chunk length of the scan
    layer_norm_epsilon: float = 1e-5
    use_bias: bool = False
    use_conv_bias: bool = True
    time_step_limit: tuple[float, float] = (0.0, math.inf)
    time_step_min: float = 0.001
    time_step_max: float = 0.1
    time_step_floor: float = 1e-4
    tie_word_embeddings: bool = False
    residual_in_fp32: bool = True
    initializer_range: float = 0.02
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        positive = ["vocab_size", "hidden_size", "num_hidden_layers", "state_size", "head_dim",
                    "num_heads", "n_groups", "expand", "conv_kernel", "chunk_size"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Mamba2Config.{name} must be a positive integer, got {value!r}")
        if self.num_heads * self.head_dim != self.expand * self.hidden_size:
            raise ConfigError(
                f"Mamba2Config: num_heads * head_dim ({self.num_heads} * {self.head_dim}) must equal "
                f"expand * hidden_size ({self.expand} * {self.hidden_size})")
        if self.num_heads % self.n_groups:
            raise ConfigError(f"Mamba2Config: num_heads ({self.num_heads}) must be a multiple of "
                              f"n_groups ({self.n_groups})")
        lo, hi = self.time_step_limit
        if not (0.0 <= lo < hi):
            raise ConfigError(f"Mamba2Config.time_step_limit must satisfy 0 <= min < max, got {self.time_step_limit}")
        if not self.layer_norm_epsilon > 0:
            raise ConfigError(f"Mamba2Config.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon}")

    # derived sizes -------------------------------------------------------------------------
    @property
    def d_inner(self) -> int:  # E·d = H·P
        return self.num_heads * self.head_dim

    @property
    def conv_dim(self) -> int:  # channels of xBC
        return self.d_inner + 2 * self.n_groups * self.state_size

    @property
    def in_proj_dim(self) -> int:  # rows of in_proj: z | x | B | C | dt
        return 2 * self.d_inner + 2 * self.n_groups * self.state_size + self.num_heads

    def num_parameters(self) -> int:
        d, L = self.hidden_size, self.num_hidden_layers
        per_layer = (d * self.in_proj_dim + (self.in_proj_dim if self.use_bias else 0)
                     + self.conv_dim * self.conv_kernel + (self.conv_dim if self.use_conv_bias else 0)
                     + 3 * self.num_heads + self.d_inner + self.d_inner * d
                     + (d if self.use_bias else 0) + d)
        emb = self.vocab_size * d
        return L * per_layer + emb + d + (0 if self.tie_word_embeddings else emb)

    # serialisation -------------------------------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        """transformers' Mamba2Config fields (what transformers and vLLM read)."""
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out["time_step_limit"] = list(self.time_step_limit)
        out.update({
            "model_type": "mamba2",
            "architectures": ["Mamba2ForCausalLM"],
            "intermediate_size": self.d_inner,
            "hidden_act": "silu",
            "rms_norm": True,
            "norm_before_gate": False,
            "time_step_rank": math.ceil(self.hidden_size / 16),
            "use_cache": True,
            "rescale_prenorm_residual": False,
        })
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> Mamba2Config:
        """Read a transformers, mamba_ssm or Mistral config dict."""
        raw = dict(raw)
        mt = raw.get("model_type")
        if mt is not None and mt not in ("mamba2", "mamba"):
            raise ConfigError(f"{source}: model_type {mt!r} is not a Mamba-2 model")
        try:
            if "d_model" in raw or "dim" in raw:
                kw = _from_ssm_dialect(raw)
            else:
                kw = _from_hf_dialect(raw)
        except KeyError as err:
            raise ConfigError(f"{source}: missing required field {err.args[0]!r}") from None
        known = {f.name for f in fields(cls)}
        extra = {k: v for k, v in raw.items() if k not in known}
        try:
            return cls(**{k: v for k, v in kw.items() if k in known}, extra=extra)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        except TypeError as err:
            raise ConfigError(f"{source}: {err}") from None


def _tuple_limit(value) -> tuple[float, float]:
    if value is None:
        return (0.0, math.inf)
    lo, hi = (_json_float(v) for v in value)
    return (lo, hi)


def _json_float(v) -> float:
    # transformers >= 5 writes non-finite floats as {"__float__": "Infinity"}; older files use the
    # bare Infinity token that Python's json accepts.
    if isinstance(v, dict) and "__float__" in v:
        return float(v["__float__"])
    return float(v)


def _from_hf_dialect(raw: dict[str, Any]) -> dict[str, Any]:
    kw = {k: raw[k] for k in raw}
    kw["hidden_size"] = raw["hidden_size"]
    if "num_heads" not in raw:
        kw["num_heads"] = raw.get("expand", 2) * raw["hidden_size"] // raw.get("head_dim", 64)
    kw["time_step_limit"] = _tuple_limit(raw.get("time_step_limit"))
    return kw


def _from_ssm_dialect(raw: dict[str, Any]) -> dict[str, Any]:
    ssm = dict(raw.get("ssm_cfg") or {})
    d = raw.get("d_model", raw.get("dim"))
    if d is None:
        raise KeyError("d_model")
    n_layer = raw.get("n_layer", raw.get("n_layers"))
    if n_layer is None:
        raise KeyError("n_layer")
    vocab = raw["vocab_size"]
    mult = raw.get("pad_vocab_size_multiple", 8)
    if mult and vocab % mult:
        vocab += mult - vocab % mult  # mamba_ssm pads the embedding rows
    expand = ssm.get("expand", raw.get("expand", 2))
    headdim = ssm.get("headdim", raw.get("head_dim", 64))
    return {
        "vocab_size": vocab,
        "hidden_size": d,
        "num_hidden_layers": n_layer,
        "state_size": ssm.get("d_state", raw.get("d_state", 128)),
        "head_dim": headdim,
        "num_heads": expand * d // headdim,
        "n_groups": ssm.get("ngroups", raw.get("n_groups", 1)),
        "expand": expand,
        "conv_kernel": ssm.get("d_conv", 4),
        "chunk_size": ssm.get("chunk_size", 256),
        "layer_norm_epsilon": raw.get("norm_eps", 1e-5),
        "use_bias": ssm.get("bias", False),
        "use_conv_bias": ssm.get("conv_bias", True),
        "time_step_limit": _tuple_limit(ssm.get("dt_limit")),
        "tie_word_embeddings": raw.get("tie_embeddings", True),
        "residual_in_fp32": raw.get("residual_in_fp32", True),
    }


# Named configs -----------------------------------------------------------------------------
NAMED_CONFIGS: dict[str, Mamba2Config] = {
    # mistralai/Mamba-Codestral-7B-v0.1: in_proj rows 2·8192 + 2·8·128 + 128 = 18560, ~7.3B parameters
    "mamba-codestral-7b": Mamba2Config(),
    # PromptCoT-Mamba-7B is fine-tuned from Codestral; same shape (its own config.json wins on load)
    "promptcot-mamba-7b": Mamba2Config(),
    # the ~130M shape used by the CPU benchmarks (state-spaces/mamba2-130m style, G = 1, tied)
    "mamba2-130m": Mamba2Config(vocab_size=50288, hidden_size=768, num_hidden_layers=24, num_heads=24,
                                n_groups=1, tie_word_embeddings=True),
    # ~1.3B shape for GPU MFU measurements
    "mamba2-1.3b": Mamba2Config(vocab_size=50288, hidden_size=2048, num_hidden_layers=48, num_heads=64,
                                n_groups=1, tie_word_embeddings=True),
    # state-spaces/mamba2-2.7b as converted to the transformers format (G = 1, tied), ~2.7B parameters
    "mamba2-2.7b": Mamba2Config(vocab_size=50288, hidden_size=2560, num_hidden_layers=64, num_heads=80,
                                n_groups=1, tie_word_embeddings=True),
    # tiny shapes for tests and the demo
    "tiny": Mamba2Config(vocab_size=256, hidden_size=64, num_hidden_layers=2, state_size=16, head_dim=16,
                         num_heads=8, n_groups=2, chunk_size=16, tie_word_embeddings=True),
    "tiny-g1": Mamba2Config(vocab_size=256, hidden_size=64, num_hidden_layers=2, state_size=16, head_dim=16,
                            num_heads=8, n_groups=1, chunk_size=16, tie_word_embeddings=False),
}


def named_config(name: str, **overrides: Any) -> Mamba2Config:
    if name not in NAMED_CONFIGS:
        raise ConfigError(f"unknown named config {name!r}; known: {sorted(NAMED_CONFIGS)}")
    base = asdict(NAMED_CONFIGS[name])
    base.pop("extra")
    base.update(overrides)
    return Mamba2Config(**base)
