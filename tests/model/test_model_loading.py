"""Loading in the checkpoint's dtype by default, shard by shard at the weights' own size, and refusing
bad input (an unknown dtype, too little memory) with one error before any weight is read."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from promptcot_mamba import Mamba2LM, named_config
from promptcot_mamba.generate import Engine, EngineConfig
from promptcot_mamba.generate.cli import add_engine_args, build_engine
from promptcot_mamba.generate.tiny import build_tiny_model
from promptcot_mamba.model import checkpoint
from promptcot_mamba.model.checkpoint import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(model):
    return dict(model.named_parameters())


@pytest.fixture(scope="module")
def bf16_model():
    torch.manual_seed(0)
    return build_tiny_model(config="tiny-g1").to(torch.bfloat16)


@pytest.fixture(scope="module")
def bf16_folder(bf16_model, tmp_path_factory):
    """A bf16 checkpoint with a tokenizer (what the engine needs), sharded."""
    return bf16_model.save_pretrained(tmp_path_factory.mktemp("bf16"), max_shard_bytes=20_000)


def test_bf16_checkpoint_loads_as_bf16_by_default_and_float32_on_request(bf16_model, bf16_folder):
    assert len(list(bf16_folder.glob("model-*.safetensors"))) > 1
    ids = torch.randint(0, bf16_model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    loaded = Mamba2LM.from_pretrained(bf16_folder)
    assert loaded.dtype == torch.bfloat16
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, bf16_model(ids).logits)
    for dtype in (torch.float32, "float32", "fp32", "torch.float32"):
        wide = Mamba2LM.from_pretrained(bf16_folder, dtype=dtype)
        assert {p.dtype for p in wide.parameters()} == {torch.float32}, dtype
        ref = _params(bf16_model)
        for name, p in wide.named_parameters():  # bf16 -> float32 is exact
            assert torch.equal(p, ref[name].float()), name


def test_float32_checkpoint_still_loads_as_float32(tmp_path):
    """What the demo and the tests save: auto means float32 there, as the default did before."""
    torch.manual_seed(1)
    model = Mamba2LM("tiny").eval()
    model.save_pretrained(tmp_path)
    assert Mamba2LM.from_pretrained(tmp_path).dtype == torch.float32
    half = Mamba2LM.from_pretrained(tmp_path, dtype="bfloat16")
    for name, p in half.named_parameters():
        assert p.dtype == torch.bfloat16 and torch.equal(p, _params(model)[name].to(torch.bfloat16)), name
    assert half.lm_head.weight is half.backbone.embeddings.weight  # tied embeddings stay tied


def test_engine_and_cli_take_the_checkpoints_dtype_unless_told(bf16_folder):
    assert Engine.from_pretrained(bf16_folder, EngineConfig(max_slots=2)).model.dtype == torch.bfloat16
    engine = Engine.from_pretrained(bf16_folder, EngineConfig(max_slots=2), dtype="float32")
    assert engine.model.dtype == torch.float32
    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    for flags, dtype in (([], torch.bfloat16), (["--dtype", "float32"], torch.float32),
                         (["--dtype", "auto"], torch.bfloat16)):
        engine = build_engine(parser.parse_args(["--model", str(bf16_folder), "--max-slots", "2", *flags]))
        assert engine.model.dtype == dtype, flags
        assert {p.dtype for p in engine.model.parameters()} == {dtype}


def test_mixed_dtype_checkpoint_loads_in_the_dtype_of_most_parameters(tmp_path):
    """Matrices in bf16, A_log/D/dt_bias and the norms in float32 (as converted mamba_ssm checkpoints
    may keep them): auto is bf16, whatever a stale config.json `torch_dtype` says."""
    torch.manual_seed(2)
    model = Mamba2LM("tiny-g1").eval()
    model.save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    small = {k for k, v in sd.items() if v.dim() == 1}
    bf16 = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    save_file({k: (sd[k] if k in small else bf16[k]) for k in sd}, tmp_path / "model.safetensors")
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["torch_dtype"] == "float32"
    loaded = Mamba2LM.from_pretrained(tmp_path)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert torch.equal(loaded.backbone.layers[0].mixer.A_log, bf16["backbone.layers.0.mixer.A_log"])
    # the other way round: float32 holds most parameters
    save_file({k: (bf16[k] if k in small else sd[k]) for k in sd}, tmp_path / "model.safetensors")
    assert Mamba2LM.from_pretrained(tmp_path).dtype == torch.float32


@pytest.mark.parametrize("zipfile", [True, False])
def test_pytorch_bin_keeps_its_dtype(tmp_path, zipfile):
    """pytorch_model.bin (mamba_ssm's format), memory-mapped or, in the legacy format, read whole."""
    torch.manual_seed(3)
    ref = Mamba2LM("tiny-g1").to(torch.bfloat16).eval()
    ref.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=zipfile)
    loaded = Mamba2LM.from_pretrained(tmp_path)
    assert loaded.dtype == torch.bfloat16
    for name, p in Mamba2LM.from_pretrained(tmp_path, dtype=torch.float32).named_parameters():
        assert torch.equal(p, _params(ref)[name].float()), name


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("dtype", ["float17", "int8", "Size", torch.int32, torch.float64, 32])
def test_unknown_dtype_is_one_clear_error_before_anything(tmp_path, dtype):
    with pytest.raises(ValueError, match="unknown dtype .*use auto"):
        Mamba2LM.from_pretrained(tmp_path / "no-such-folder", dtype=dtype)  # fails on the dtype, not the path
    with pytest.raises(ValueError, match="unknown dtype"):
        Engine.from_pretrained(tmp_path / "no-such-folder", dtype=dtype)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_clear_error(bf16_folder):
    with pytest.raises(ValueError, match="no usable CUDA device"):
        Mamba2LM.from_pretrained(bf16_folder, device="cuda")


def test_unknown_dtype_on_the_command_line(bf16_folder, capsys):
    from promptcot_mamba.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["generate", "--model", str(bf16_folder), "--dtype", "float17", "hi"])
    assert exc.value.code == 2
    assert "invalid choice: 'float17'" in capsys.readouterr().err


@pytest.fixture()
def no_weight_read(monkeypatch):
    """Fails the test if any weight is mapped or read: every access to a tensor's data goes through
    `_Stored.load` (the model's tensors), `_Stored.pieces` (conversion, the tied-head check) or
    `_Stored.row_blocks` (quantizing while loading)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a weight was read before the check that should have refused the load")

    monkeypatch.setattr(checkpoint._Stored, "load", refuse)
    monkeypatch.setattr(checkpoint._Stored, "pieces", refuse)
    monkeypatch.setattr(checkpoint._Stored, "row_blocks", refuse)  # quantizing while loading


def test_memory_budget_below_the_weights_fails_before_loading(bf16_model, bf16_folder, no_weight_read):
    weights = sum(p.numel() * 2 for p in bf16_model.parameters())
    with pytest.raises(CheckpointError, match=r"need 0\.000\d+ GB in bfloat16, have 1e-05 GB \(the memory"):
        Mamba2LM.from_pretrained(bf16_folder, max_memory_gb=1e-5)
    # float32 doubles the need; the message says what the checkpoint as stored would take
    with pytest.raises(CheckpointError, match=r"in float32, .*; as stored \(dtype='auto'\)"):
        Mamba2LM.from_pretrained(bf16_folder, dtype="float32", max_memory_gb=1.5 * weights / 1e9)
    with pytest.raises(CheckpointError, match="the memory budget"):  # the engine's --memory-budget
        Engine.from_pretrained(bf16_folder, EngineConfig(memory_budget_gb=1e-5))
    for bad in (0, -1.0, True, "1"):
        with pytest.raises(ValueError, match="max_memory_gb must be a number > 0"):
            Mamba2LM.from_pretrained(bf16_folder, max_memory_gb=bad)


def test_memory_budget_that_fits_loads(bf16_model, bf16_folder):
    weights = sum(p.numel() * 2 for p in bf16_model.parameters())
    assert Mamba2LM.from_pretrained(bf16_folder, max_memory_gb=1.01 * weights / 1e9).dtype == torch.bfloat16


def test_the_memory_check_counts_int8_weights_at_their_int8_size(bf16_folder, no_weight_read, monkeypatch):
    """A budget between the int8 and the bf16 size: refused as bf16, with a hint giving the int8 size;
    loaded with quantize="int8" (quantized while loading: the bf16 projections are never all held);
    below the int8 size, refused naming the int8 weights. Sizes come from the headers alone."""
    from promptcot_mamba.model.quantize import quantized_bytes, target_shapes

    config = checkpoint.read_config(bf16_folder)
    stored = checkpoint._stored_tensors(bf16_folder)
    full = sum(t.numel * 2 for k, t in stored.items() if k != "lm_head.weight" or not config.tie_word_embeddings)
    shapes = target_shapes(config)
    int8 = (full - sum(N * K * 2 for name, (N, K) in shapes.items() if name != "lm_head" or not config.tie_word_embeddings)
            + sum(quantized_bytes(N, K) for N, K in shapes.values()))
    assert int8 < 0.8 * full
    between = (int8 + full) / 2 / 1e9
    with pytest.raises(CheckpointError, match=rf"need {full / 1e9:.3g} GB in bfloat16, .*; with int8 weights "
                                              rf"\(--quantize int8\) {int8 / 1e9:.3g} GB"):
        Mamba2LM.from_pretrained(bf16_folder, max_memory_gb=between)
    with pytest.raises(CheckpointError, match=rf"need {int8 / 1e9:.3g} GB in bfloat16 with int8 weights, have"):
        Mamba2LM.from_pretrained(bf16_folder, max_memory_gb=0.99 * int8 / 1e9, quantize="int8")
    with pytest.raises(CheckpointError, match=r"with int8 weights, have .* \(the memory budget\)"):
        Engine.from_pretrained(bf16_folder, EngineConfig(memory_budget_gb=0.99 * int8 / 1e9), quantize="int8")
    monkeypatch.undo()  # now the weights may be read
    model = Mamba2LM.from_pretrained(bf16_folder, max_memory_gb=between, quantize="int8")
    assert model.quantization == "int8"
    from promptcot_mamba.model.quantize import weight_bytes

    assert weight_bytes(model) == int8  # the check counted what the model holds


def test_available_memory_is_checked_before_loading(bf16_folder, tmp_path, monkeypatch, no_weight_read):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  24000000 kB\nMemFree:  1000 kB\nMemAvailable:  10 kB\n")
    monkeypatch.setattr(checkpoint, "MEMINFO", meminfo)
    with pytest.raises(CheckpointError, match=r"have 1\.02e-05 GB \(MemAvailable in .*meminfo\)"):
        Mamba2LM.from_pretrained(bf16_folder)


def test_the_command_line_reports_a_checkpoint_that_does_not_fit(bf16_folder, capsys):
    from promptcot_mamba.cli import main

    assert main(["generate", "--model", str(bf16_folder), "--memory-budget", "0.00001", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pcm generate: ") and "the weights need" in err and "the memory budget" in err


# ---------------------------------------------------------------------------- shard by shard, RSS
_RSS_SCRIPT = r"""
import json, sys
import torch
from promptcot_mamba.model.lm import Mamba2LM

def status(field):  # bytes
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

big, small, dtype, quantize = sys.argv[1:5]
Mamba2LM.from_pretrained(small, dtype=dtype, quantize=quantize)  # the same code paths once
base = status("VmRSS")
model = Mamba2LM.from_pretrained(big, dtype=dtype, quantize=quantize)
tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}.values()  # int8 weights are buffers
with torch.no_grad():  # one element of every page: views of a file map count in RSS only once touched
    for p in tensors:
        p.view(-1)[:: 4096 // p.element_size()].float().sum()
# VmHWM, not getrusage's ru_maxrss: a child's ru_maxrss starts at its parent's RSS at fork (here the
# pytest process), so it would measure the parent; VmHWM is this process's own peak since exec
peak = status("VmHWM")
weights = sum(p.numel() * p.element_size() for p in tensors)
dtype = str(model.dtype).removeprefix("torch.")
print(json.dumps({"base": base, "peak": peak, "weights": weights, "dtype": dtype, "quantization": model.quantization}))
"""
# beyond 1.05x the weights: the conversion's staging buffer (1/128 of the elements: 2 MiB of bf16 here)
# and the load's Python objects and heap
_ALLOWANCE = 16 * 2**20


@pytest.fixture(scope="module")
def sharded_130m(tmp_path_factory):
    """Random weights of the mamba2-130m shape (129M parameters, 258 MB in bf16) in 64 MiB shards,
    and a tiny bf16 checkpoint for the warm-up load."""
    folder = tmp_path_factory.mktemp("rss")
    torch.manual_seed(4)
    Mamba2LM("mamba2-130m").to(torch.bfloat16).save_pretrained(folder / "big", max_shard_bytes=64 * 2**20)
    Mamba2LM("tiny").to(torch.bfloat16).save_pretrained(folder / "small", max_shard_bytes=20_000)
    return folder


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads resident memory from /proc")
@pytest.mark.parametrize("dtype,quantize", [("bfloat16", "none"), ("float32", "none"), ("bfloat16", "int8")])
def test_shard_by_shard_load_holds_one_copy_of_the_weights(sharded_130m, dtype, quantize):
    """Peak RSS of a fresh process loading the sharded bf16 checkpoint, minus its RSS just before
    (interpreter, torch and the loader's code, warmed on a tiny checkpoint): at most 1.05x the loaded
    weights' bytes plus _ALLOWANCE, also when each tensor is converted to float32 on the way, and when
    the projections are quantized to int8 as they are read (the bound is then the int8 model's
    bytes: 207 MB against 258 MB in bf16). Loading every shard into one dict (as views of the mapped
    files) and then converting peaked at 1.50x in float32 (1.007x in bf16, where the model kept the
    views); shard by shard: 1.005x in both. Quantizing after a bf16 load peaked at 2.1-2.3x the int8
    weights at 2.7B and 7B (bench_real_size, issue 13)."""
    assert len(list((sharded_130m / "big").glob("model-*.safetensors"))) >= 4
    args = [sys.executable, "-c", _RSS_SCRIPT, str(sharded_130m / "big"), str(sharded_130m / "small"), dtype, quantize]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["dtype"] == dtype and r["quantization"] == (None if quantize == "none" else quantize)
    c = named_config("mamba2-130m")
    if quantize == "none":
        assert r["weights"] == c.num_parameters() * (2 if dtype == "bfloat16" else 4)
    else:  # tied: the embedding stays bf16 and the head gets its own int8 copy
        assert 0.75 * c.num_parameters() < r["weights"] < 0.85 * c.num_parameters() * 2
    grown = r["peak"] - r["base"]
    assert grown <= 1.05 * r["weights"] + _ALLOWANCE, (
        f"peak RSS grew {grown / 2**20:.1f} MiB for {r['weights'] / 2**20:.1f} MiB of weights "
        f"({grown / r['weights']:.3f}x)")
