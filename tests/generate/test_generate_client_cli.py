"""EngineClient (the LLMClient protocol in process) and the pcm generate / chat / serve commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from promptcot_mamba.generate import Engine, EngineConfig, SamplingParams
from promptcot_mamba.generate.client import EngineClient
from promptcot_mamba.generate.tiny import build_tiny_model, save_tiny_model
from promptcot_mamba.llm.base import GenerationRequest, LLMClient

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return build_tiny_model()


def test_engine_client_protocol_prompt_messages_n_seed(model, tie_free_length, next_token_logits):
    client = EngineClient(model)
    assert isinstance(client, LLMClient)
    # The client decodes the greedy request in one batch with the n = 3 samples, the reference alone:
    # the rows round differently, so compare only the tokens before the model's first near-tie.
    prompt = model.tokenizer.encode("Let x be")
    greedy_len = max(1, tie_free_length(next_token_logits(model), prompt, 8))  # token 1: the same prefill
    reqs = [GenerationRequest(prompt="Let x be", max_tokens=greedy_len, temperature=0.0),
            GenerationRequest(messages=({"role": "user", "content": "hello"},), max_tokens=8, temperature=1.0,
                              n=3, seed=5),
            GenerationRequest(prompt="", max_tokens=4)]
    out = client.generate(reqs)
    assert [len(o) for o in out] == [1, 3, 1]
    ref = Engine(model, model.tokenizer, EngineConfig(prefix_cache_gb=0)).generate(
        [prompt], SamplingParams(max_tokens=greedy_len, temperature=0.0))[0].samples[0]
    assert out[0][0].text == ref.text and out[0][0].completion_tokens == len(ref.token_ids)
    assert [g.seed for g in out[1]] == [5, 6, 7] and all(g.ok for g in out[1])
    again = client.generate([reqs[1]])[0]
    assert [g.text for g in again] == [g.text for g in out[1]]
    assert not out[2][0].ok and "empty" in out[2][0].error


def _run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "promptcot_mamba", *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_pcm_generate_and_chat(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    r = _run("generate", "--model", str(folder), "--temperature", "0", "--max-tokens", "8", "--threads", "1",
             "Let x be")
    assert r.returncode == 0, r.stderr
    # the same weights (saved and loaded), one thread, one row, the same engine code: exact by construction
    m = build_tiny_model()
    ref = Engine(m, m.tokenizer, EngineConfig(prefix_cache_gb=0)).generate(
        [m.tokenizer.encode("Let x be")], SamplingParams(max_tokens=8, temperature=0.0))[0].samples[0]
    assert r.stdout == ref.text + "\n"
    r = _run("chat", "--model", str(folder), "--temperature", "0", "--max-tokens", "5", "--threads", "1",
             input="hello\nagain\n\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(">>> ") == 3
    r = _run("generate", "--model", str(tmp_path / "nope"), "x")
    assert r.returncode != 0 and "nope" in r.stderr


def test_quantize_flag_reaches_the_model(tmp_path):
    """`--quantize int8` (add_engine_args, shared by generate, chat and serve): the engine's model is
    quantized, the command says so, and it generates what the same quantized model does in process."""
    import argparse

    from promptcot_mamba.generate.cli import add_engine_args, build_engine

    folder = save_tiny_model(tmp_path / "tiny")
    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    assert parser.parse_args(["--model", "x"]).quantize == "none"
    engine = build_engine(parser.parse_args(["--model", str(folder), "--max-slots", "2", "--quantize", "int8"]))
    assert engine.model.quantization == "int8" and engine.model_settings["quantization"] == "int8"
    assert engine.capacity["weight_bytes"] < build_engine(parser.parse_args(
        ["--model", str(folder), "--max-slots", "2"])).capacity["weight_bytes"]  # the int8 buffers are counted

    r = _run("generate", "--model", str(folder), "--quantize", "int8", "--temperature", "0", "--max-tokens", "8",
             "--threads", "1", "Let x be")
    assert r.returncode == 0, r.stderr
    assert "weights int8" in r.stderr
    m = build_tiny_model().quantize("int8")  # same weights, one thread, one row, same code: exact
    ref = Engine(m, m.tokenizer, EngineConfig(prefix_cache_gb=0)).generate(
        [m.tokenizer.encode("Let x be")], SamplingParams(max_tokens=8, temperature=0.0))[0].samples[0]
    assert r.stdout == ref.text + "\n"
    r = _run("chat", "--model", str(folder), "--quantize", "int8", "--max-tokens", "3", "--threads", "1", input="hi\n\n")
    assert r.returncode == 0 and "pcm chat: float32 on cpu; weights int8" in r.stderr, r.stderr
    r = _run("generate", "--model", str(folder), "--quantize", "int8", "--kernels", "step=fused", "x")
    assert r.returncode == 2 and "step=fused" in r.stderr and "step=eager" in r.stderr, r.stderr
    r = _run("generate", "--model", str(folder), "--quantize", "int4", "x")
    assert r.returncode == 2 and "invalid choice: 'int4'" in r.stderr, r.stderr
