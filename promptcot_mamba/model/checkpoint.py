"""Reading and writing `Mamba2ForCausalLM` checkpoints.

Read: config.json in the transformers or mamba_ssm dialect (or Mistral's params.json), weights as
model.safetensors, sharded safetensors with an index, consolidated.safetensors, or pytorch_model.bin
(loaded with `weights_only=True`). Write: the transformers dialect, safetensors, sharded above a size.
Everything is validated against the config before a tensor is loaded into the model, so a wrong,
truncated or mismatched checkpoint fails with one error naming the key and the shapes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from promptcot_mamba.common.files import atomic_write_text
from promptcot_mamba.model.config import ConfigError, Mamba2Config

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says which file, key and shapes."""


def resolve_path(path_or_id: str | Path, *, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a Hub id, downloaded (config, safetensors, tokenizer) once."""
    p = Path(path_or_id).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p}: expected a checkpoint folder, found a file")
        return p
    text = str(path_or_id)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        raise CheckpointError(f"{text}: no such folder, and not a Hugging Face Hub id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover - huggingface_hub is a core dependency
        raise CheckpointError("downloading from the Hub needs huggingface_hub (pip install huggingface_hub)") from err
    # read at call time (not at huggingface_hub's import) so HF_HUB_OFFLINE / HF_HUB_CACHE set by a
    # caller or a test take effect: offline, the local Hub cache is used and nothing is downloaded
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        local = snapshot_download(text, revision=revision, cache_dir=os.environ.get("HF_HUB_CACHE"),
                                  local_files_only=offline, allow_patterns=[
                                      "*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja"])
    except Exception as err:  # offline, unknown repo, gated: say what happened
        raise CheckpointError(f"{text}: not a local folder and the Hub download failed: {err}") from err
    return Path(local)


def read_config(folder: Path) -> Mamba2Config:
    for name in ("config.json", "params.json"):
        f = folder / name
        if f.exists():
            try:
                raw = json.loads(f.read_text())  # Python's json accepts the Infinity some configs hold
            except json.JSONDecodeError as err:
                raise CheckpointError(f"{f}: not valid JSON ({err})") from None
            if not isinstance(raw, dict):
                raise CheckpointError(f"{f}: expected a JSON object")
            try:
                return Mamba2Config.from_dict(raw, source=str(f))
            except ConfigError as err:
                raise CheckpointError(str(err)) from None
    raise CheckpointError(f"{folder}: no config.json (or params.json) found")


def _read_weight_files(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / INDEX
    files: list[Path]
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index}: malformed shard index ({err})") from None
        files = [folder / f for f in sorted(set(weight_map.values()))]
    elif (folder / WEIGHTS).exists():
        files = [folder / WEIGHTS]
    elif (folder / "consolidated.safetensors").exists():
        files = [folder / "consolidated.safetensors"]
    elif (folder / "pytorch_model.bin").exists():
        try:
            return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"{folder / 'pytorch_model.bin'}: cannot be read ({err})") from None
    else:
        raise CheckpointError(f"{folder}: no weights found (model.safetensors, {INDEX}, "
                              "consolidated.safetensors or pytorch_model.bin)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.exists():
            raise CheckpointError(f"{f}: shard listed in the index is missing")
        try:
            part = load_file(f)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{f}: not a readable safetensors file (truncated or corrupt?): {err}") from None
        state.update(part)
    return state


def _canonical_key(key: str) -> str:
    if key.startswith("model."):  # Mistral's consolidated format
        key = key[len("model."):]
    return key.replace("backbone.embedding.", "backbone.embeddings.")  # mamba_ssm dialect


def expected_shapes(config: Mamba2Config) -> dict[str, tuple[int, ...]]:
    c = config
    shapes: dict[str, tuple[int, ...]] = {
        "backbone.embeddings.weight": (c.vocab_size, c.hidden_size),
        "backbone.norm_f.weight": (c.hidden_size,),
    }
    for i in range(c.num_hidden_layers):
        p = f"backbone.layers.{i}."
        shapes[p + "norm.weight"] = (c.hidden_size,)
        shapes[p + "mixer.in_proj.weight"] = (c.in_proj_dim, c.hidden_size)
        shapes[p + "mixer.conv1d.weight"] = (c.conv_dim, 1, c.conv_kernel)
        if c.use_conv_bias:
            shapes[p + "mixer.conv1d.bias"] = (c.conv_dim,)
        if c.use_bias:
            shapes[p + "mixer.in_proj.bias"] = (c.in_proj_dim,)
            shapes[p + "mixer.out_proj.bias"] = (c.hidden_size,)
        for name in ("A_log", "D", "dt_bias"):
            shapes[p + f"mixer.{name}"] = (c.num_heads,)
        shapes[p + "mixer.norm.weight"] = (c.d_inner,)
        shapes[p + "mixer.out_proj.weight"] = (c.hidden_size, c.d_inner)
    shapes["lm_head.weight"] = (c.vocab_size, c.hidden_size)
    return shapes


def validate_state_dict(config: Mamba2Config, state: dict[str, torch.Tensor], *, source: str) -> dict[str, torch.Tensor]:
    """Rename to canonical keys and check every key and shape; raise one clear CheckpointError."""
    state = {_canonical_key(k): v for k, v in state.items()}
    expected = expected_shapes(config)
    if config.tie_word_embeddings:
        lm = state.pop("lm_head.weight", None)
        emb = state.get("backbone.embeddings.weight")
        if lm is not None and emb is not None and not torch.equal(lm, emb):
            raise CheckpointError(f"{source}: config says tie_word_embeddings=true but lm_head.weight "
                                  "differs from backbone.embeddings.weight")
        expected.pop("lm_head.weight")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        raise CheckpointError(f"{source}: keys do not match the config: " + "; ".join(parts))
    for k, shape in expected.items():
        if tuple(state[k].shape) != shape:
            raise CheckpointError(f"{source}: {k} has shape {tuple(state[k].shape)} but the config implies {shape}")
        if not state[k].is_floating_point():
            raise CheckpointError(f"{source}: {k} has dtype {state[k].dtype}, expected floating point")
    return state


def load_checkpoint(folder: str | Path) -> tuple[Mamba2Config, dict[str, torch.Tensor]]:
    folder = Path(folder)
    config = read_config(folder)
    state = validate_state_dict(config, _read_weight_files(folder), source=str(folder))
    return config, state


def save_checkpoint(model, path: str | Path, *, max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write config.json (transformers dialect) and safetensors weights; shards above max_shard_bytes."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    config: Mamba2Config = model.config
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # transformers re-ties it; safetensors refuses shared storage
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    for old in list(folder.glob("model*.safetensors")) + [folder / INDEX]:
        if old.exists():
            old.unlink()
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(folder / WEIGHTS), metadata=meta)
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(folder / name), metadata=meta)
            for k, v in shard.items():
                weight_map[k] = name
                total += v.numel() * v.element_size()
        atomic_write_text(folder / INDEX, json.dumps({"metadata": {"total_size": total},
                                                       "weight_map": weight_map}, indent=2))
    hf = config.to_hf_dict()
    hf["torch_dtype"] = str(model.dtype).replace("torch.", "")
    atomic_write_text(folder / "config.json", json.dumps(hf, indent=2))
    return folder
