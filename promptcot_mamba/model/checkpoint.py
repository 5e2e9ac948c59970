"""Reading and writing `Mamba2ForCausalLM` checkpoints.

Read: config.json in the transformers or mamba_ssm dialect (or Mistral's params.json), weights as
model.safetensors, sharded safetensors with an index, consolidated.safetensors, or pytorch_model.bin
(loaded with `weights_only=True`). Write: the transformers dialect, safetensors, sharded above a size.

Loading runs in two phases. First, from the files' headers alone, every key, shape and dtype is
checked against the config, and the weights' size in the requested dtype against the memory there
is; a wrong, truncated or mismatched checkpoint, or one that does not fit, fails with one error
before any weight is read. Then the shards are taken one by one: a tensor already in the final dtype
(on the CPU) is a view of a private map of its file, whose pages are the weights (no copy); any other
is converted piece by piece, through one small staging buffer, into a tensor of its own. The peak is
the weights' own bytes plus that buffer.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from promptcot_mamba.common.files import atomic_write_text
from promptcot_mamba.model.config import ConfigError, Mamba2Config

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
GB = 1e9  # decimal, as the engine's --memory-budget counts
MEMINFO = Path("/proc/meminfo")  # MemAvailable: what the kernel can hand out without swapping
# elements per staging read when converting: 1/128 of the weights' (under 1% beside them), at most 16M
# (32 MiB of bf16). Each piece is one parallel copy, and on a busy 2-core machine each costs a thread
# wake-up: a bf16 2.7B-shape checkpoint loaded as float32 in 24-27 s with 4M-element pieces, 20-25 s
# with 16M, 18-20 s with 64M (writing the fresh float32 pages costs the rest)
PIECE = 16 * 2**20

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
# the dtype codes of a safetensors header (https://github.com/huggingface/safetensors#format); the
# integer ones only so that such a tensor gets the "expected floating point" error
_STORED = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says which file, key and shapes."""


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """None for "auto" (or None): the checkpoint decides; else float32, bfloat16 or float16 (a name or
    a torch dtype)."""
    if dtype is None or (isinstance(dtype, str) and dtype == "auto"):
        return None
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"unknown dtype {dtype!r}: use auto (the checkpoint's), float32, bfloat16 or float16")


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


@dataclass
class _Stored:
    """One tensor of a weight file, as its header describes it; nothing of its data read yet."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int = 0  # safetensors: where its bytes start in the file
    mapped: torch.Tensor | None = None  # pytorch_model.bin: torch.load's memory-mapped tensor

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def pieces(self, staging: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """(first element, the next elements flat, in the stored dtype), as many at a time as the
        staging buffer (from `_staging`) holds; every piece reuses it."""
        step = staging.numel() // 8
        if self.mapped is not None:
            flat = self.mapped.reshape(-1)
            yield from ((a, flat[a:a + step]) for a in range(0, self.numel, step))
            return
        for a in range(0, self.numel, step):
            piece = staging[:min(step, self.numel - a) * self.dtype.itemsize].view(self.dtype)
            _read_bytes(self.file, self.offset + a * self.dtype.itemsize, piece)
            yield a, piece

    def row_blocks(self, staging: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, the next rows (r, K) in the stored dtype) of a 2-D tensor, as many rows at a
        time as the staging buffer holds; every block reuses it."""
        N, K = self.shape
        rows = max(1, staging.numel() // 8 // K)
        if self.mapped is not None:
            yield from ((i, self.mapped[i:i + rows]) for i in range(0, N, rows))
            return
        row_bytes = K * self.dtype.itemsize
        for i in range(0, N, rows):
            r = min(rows, N - i)
            block = staging[:r * row_bytes].view(self.dtype).view(r, K)
            _read_bytes(self.file, self.offset + i * row_bytes, block)
            yield i, block

    def load(self, dtype: torch.dtype, device: torch.device, staging: torch.Tensor,
             maps: dict[Path, torch.Tensor] | None) -> torch.Tensor:
        """The tensor in `dtype` on `device`. Stored that way on the CPU, and given `maps`: a view of a
        private map of its file (no copy; pages come from the page cache as the model first touches
        them, a write copies the page; the file must be replaced, not truncated, while the model
        lives); otherwise converted piece by piece into a tensor of its own."""
        if dtype == self.dtype and device.type == "cpu" and maps is not None:
            if self.mapped is not None:
                return self.mapped
            if self.offset % dtype.itemsize == 0:  # a view needs the dtype's alignment
                if self.file not in maps:
                    n = self.file.stat().st_size
                    maps[self.file] = torch.from_file(str(self.file), shared=False, size=n, dtype=torch.uint8)
                nbytes = self.numel * dtype.itemsize
                return maps[self.file][self.offset:self.offset + nbytes].view(dtype).view(self.shape)
        out = torch.empty(self.shape, dtype=dtype, device=device)
        flat = out.view(-1)
        for a, piece in self.pieces(staging):
            flat[a:a + len(piece)].copy_(piece)
        return out


def _read_bytes(path: Path, offset: int, out: torch.Tensor) -> None:
    """Fill the contiguous CPU tensor `out` with the file's bytes from `offset`, read straight into it."""
    view = memoryview(out.view(-1).view(torch.uint8).numpy())
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        done = 0
        while done < len(view):
            n = fh.readinto(view[done:])
            if not n:
                raise CheckpointError(f"{path}: ended early (truncated while loading?)")
            done += n


def _staging(numel: int) -> torch.Tensor:
    """The one staging buffer of a load of `numel` elements, for pieces of any dtype (a fresh one per
    tensor left freed holes in the heap: +12% RSS at 130M into float32); only the pages a piece
    touches become resident."""
    return torch.empty(min(PIECE, max(2**20, numel // 128)) * 8, dtype=torch.uint8)


def _safetensors_header(f: Path) -> dict[str, _Stored]:
    """The tensors of a safetensors file, from its header (an 8-byte length, then JSON) alone.

    Tensors to convert are then read with plain reads into the staging buffer, not through
    safetensors' `safe_open`: with its mmap backend (the only one before safetensors 0.8; the project
    allows 0.4) every page it reads joins this process's RSS and stays while the file is mapped.
    Loading a bf16 130M-shape checkpoint into float32 that way peaked at 1.50x the float32 weights;
    this way, 1.005x."""
    def bad(what) -> CheckpointError:
        return CheckpointError(f"{f}: not a readable safetensors file (truncated or corrupt?): {what}")

    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little") if size >= 8 else 0
            if not 0 < n <= size - 8:
                raise bad(f"a header of {n} bytes in a file of {size}")
            header = json.loads(fh.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise bad(err) from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    out: dict[str, _Stored] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            code = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise bad(f"{key}: malformed entry ({err!r})") from None
        if code not in _STORED:
            raise CheckpointError(f"{f}: {key} is stored as {code}, which this loader does not read "
                                  f"(it reads {', '.join(_STORED)})")
        t = _Stored(f, _STORED[code], shape, offset=8 + n + begin)
        if end - begin != t.numel * t.dtype.itemsize or begin < 0 or 8 + n + end > size:
            raise bad(f"{key}: bytes {begin}..{end} of {size - 8 - n} for shape {shape} in {code}")
        out[key] = t
    return out


def _torch_bin(f: Path) -> dict[str, _Stored]:
    """pytorch_model.bin through a memory map: torch.load reads the pickle, the data stays on disk.
    A tensor kept as stored is then adopted as it is (a view of the map); the pages a conversion
    reads stay in RSS until the load ends, so the one-copy bound holds for safetensors only."""
    try:
        try:
            state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (pre-zip) format cannot be mapped: read it whole
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{f}: cannot be read ({err})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{f}: expected a dict of tensors")
    return {k: _Stored(f, v.dtype, tuple(v.shape), mapped=v) for k, v in state.items()}


def _stored_tensors(folder: Path) -> dict[str, _Stored]:
    """Every tensor of the checkpoint under its canonical key, from the headers."""
    index = folder / INDEX
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [folder / f for f in sorted(set(weight_map.values()))]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{index}: malformed shard index ({err!r})") from None
    elif (folder / WEIGHTS).exists():
        files = [folder / WEIGHTS]
    elif (folder / "consolidated.safetensors").exists():
        files = [folder / "consolidated.safetensors"]
    elif (folder / "pytorch_model.bin").exists():
        return {_canonical_key(k): t for k, t in _torch_bin(folder / "pytorch_model.bin").items()}
    else:
        raise CheckpointError(f"{folder}: no weights found (model.safetensors, {INDEX}, "
                              "consolidated.safetensors or pytorch_model.bin)")
    out: dict[str, _Stored] = {}
    for f in files:
        if not f.exists():
            raise CheckpointError(f"{f}: shard listed in the index is missing")
        for key, t in _safetensors_header(f).items():
            k = _canonical_key(key)
            if k in out:
                raise CheckpointError(f"{f}: {key} is also in {out[k].file.name}")
            out[k] = t
    return out


def _validate(config: Mamba2Config, stored: dict[str, _Stored], *,
              source: str) -> tuple[dict[str, _Stored], _Stored | None]:
    """Check every key, shape and dtype against the config; raise one clear CheckpointError.
    Returns the tensors the model takes and, for tied embeddings, a stored lm_head (to compare)."""
    stored, head = dict(stored), None
    expected = expected_shapes(config)
    if config.tie_word_embeddings:
        head = stored.pop("lm_head.weight", None)
        expected.pop("lm_head.weight")
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        raise CheckpointError(f"{source}: keys do not match the config: " + "; ".join(parts))
    for k, shape in expected.items():
        if stored[k].shape != shape:
            raise CheckpointError(f"{source}: {k} has shape {stored[k].shape} but the config implies {shape}")
        if not stored[k].dtype.is_floating_point:
            raise CheckpointError(f"{source}: {k} has dtype {stored[k].dtype}, expected floating point")
    return stored, head


def _auto_dtype(stored: dict[str, _Stored]) -> torch.dtype:
    """What `dtype="auto"` loads in: the dtype the weights are stored in. A checkpoint that mixes
    dtypes (converted mamba_ssm checkpoints may keep A_log, D and dt_bias in float32 beside bfloat16
    matrices) loads in the one holding most parameters. The headers decide, not config.json's
    `torch_dtype`, which can be stale (a float32 config over converted bfloat16 weights would load
    at twice the memory)."""
    counts: dict[torch.dtype, int] = {}
    for t in stored.values():
        counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
    return max(counts, key=lambda d: (counts[d], d.itemsize))


def _weight_bytes(stored: dict[str, _Stored], dtype: torch.dtype, quantized: dict[str, int]) -> int:
    """Bytes the loaded weights take in `dtype`, those in `quantized` ({key: bytes}) at that size."""
    return (sum(t.numel for k, t in stored.items() if k not in quantized) * dtype.itemsize
            + sum(quantized.values()))


def _check_memory(stored: dict[str, _Stored], dtype: torch.dtype, device: torch.device,
                  max_memory_gb: float | None, *, source: str, quantized: dict[str, int],
                  method: str | None) -> None:
    """Refuse, before reading any weight, a load whose weights exceed the budget or the free memory.
    `quantized`: {weight key: its bytes as int8}, counted instead of its full size when `method`."""
    need = _weight_bytes(stored, dtype, quantized if method else {})
    limits = [] if max_memory_gb is None else [(max_memory_gb * GB, "the memory budget")]
    if device.type == "cuda":
        limits.append((torch.cuda.mem_get_info(device)[0], f"free on {device}"))
    elif device.type == "cpu":
        try:
            line = next(ln for ln in MEMINFO.read_text().splitlines() if ln.startswith("MemAvailable:"))
            limits.append((int(line.split()[1]) * 1024, f"MemAvailable in {MEMINFO}"))
        except (OSError, StopIteration, IndexError, ValueError):  # no /proc (not Linux): no system check
            pass
    for have, what in limits:
        if need > have:
            hints = []
            if not method:  # what the other choices would need
                as_stored = sum(t.numel * t.dtype.itemsize for t in stored.values())
                if as_stored < need:
                    hints.append(f"as stored (dtype='auto') {as_stored / GB:.3g} GB")
                int8 = _weight_bytes(stored, dtype, quantized)
                hints.append(f"with int8 weights (--quantize int8) {int8 / GB:.3g} GB")
            name = str(dtype).removeprefix("torch.") + (f" with {method} weights" if method else "")
            raise CheckpointError(f"{source}: the weights need {need / GB:.3g} GB in {name}, have "
                                  f"{have / GB:.3g} GB ({what})" + "".join(f"; {h}" for h in hints))


def _same_values(a: _Stored, b: _Stored) -> bool:
    if a.shape != b.shape:
        return False
    pairs = zip(a.pieces(_staging(a.numel)), b.pieces(_staging(a.numel)))
    return all(torch.equal(pa, pb.to(pa.dtype)) for (_, pa), (_, pb) in pairs)


def load_checkpoint(path_or_id: str | Path, *, dtype: torch.dtype | str | None = "auto",
                    device: str | torch.device = "cpu", max_memory_gb: float | None = None,
                    revision: str | None = None,
                    quantize: str | None = None) -> tuple[Path, Mamba2Config, dict[str, torch.Tensor]]:
    """(folder, config, state dict under canonical keys in the final dtype on `device`; a tied
    lm_head left out). Bad arguments and bad checkpoints fail before any weight is read.

    `quantize="int8"`: the weights model/quantize.py quantizes are quantized while they are read, a
    block of rows at a time (`X.weight` becomes `X.weight_int8` and `X.scales`, an `Int8Linear`'s
    buffers; a tied head gets its own from the embedding), so no full-precision copy of them is ever
    held; every other tensor gets memory of its own (not a view of a file's map, which would keep the
    pages of the quantized weights it read). The memory check counts the quantized size."""
    from promptcot_mamba.model import quantize as q

    method = q.check_method(quantize)
    target = resolve_dtype(dtype)
    b = max_memory_gb
    if b is not None and (isinstance(b, bool) or not isinstance(b, int | float) or b <= 0):
        raise ValueError(f"max_memory_gb must be a number > 0, got {b!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device}: this torch has no usable CUDA device")
    folder = resolve_path(path_or_id, revision=revision)
    config = read_config(folder)
    stored, head = _validate(config, _stored_tensors(folder), source=str(folder))
    target = target or _auto_dtype(stored)
    shapes = {f"{name}.weight": nk for name, nk in q.target_shapes(config).items()}
    _check_memory(stored, target, device, max_memory_gb, source=str(folder), method=method,
                  quantized={k: q.quantized_bytes(*nk) for k, nk in shapes.items()})
    if head is not None and not _same_values(head, stored["backbone.embeddings.weight"]):
        raise CheckpointError(f"{folder}: config says tie_word_embeddings=true but lm_head.weight "
                              "differs from backbone.embeddings.weight")
    staging = _staging(sum(t.numel for t in stored.values()))
    maps: dict[Path, torch.Tensor] | None = {}
    if method:
        q.check_op(device)
        maps = None  # kept tensors get memory of their own (see above)
        if "lm_head.weight" not in stored:  # tied: the head's int8 copy is made from the embedding
            stored["lm_head.weight"] = stored["backbone.embeddings.weight"]
    out = {}
    for k, t in sorted(stored.items(), key=lambda kv: (str(kv[1].file), kv[1].offset)):  # shard by shard
        if method and k in shapes:
            name = k.removesuffix(".weight")
            blocks = ((i, block.to(device)) for i, block in t.row_blocks(staging))
            out[f"{name}.weight_int8"], out[f"{name}.scales"] = q.quantize_blocks(blocks, *shapes[k], device)
        else:
            out[k] = t.load(target, device, staging, maps)
    return folder, config, out


def save_checkpoint(model, path: str | Path, *, max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write config.json (transformers dialect) and safetensors weights; shards above max_shard_bytes."""
    if getattr(model, "quantization", None):
        from promptcot_mamba.model.quantize import QuantizationError

        raise QuantizationError(f"quantized models are not saved (this one is {model.quantization}): save the "
                                "full-precision model and quantize at load time with --quantize int8 "
                                "(or Mamba2LM.quantize)")
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
            old.unlink()  # not overwritten in place: a model loaded from them may still map them
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
