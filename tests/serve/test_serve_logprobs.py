"""Logprobs over HTTP against the model's own forward pass: echo + logprobs (lm-evaluation-harness's
loglikelihood request), max_tokens 0, vLLM's prompt_logprobs, top_logprobs with exactly k entries
(k + 1 when the chosen token is not among them) and no key collisions, return_tokens_as_token_ids,
and chat logprobs whose bytes are the token's own."""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from pcm_live_server import LiveServer

from promptcot_mamba.common.tolerances import SSD_TERMS, rtol
from promptcot_mamba.generate import Engine, EngineConfig
from promptcot_mamba.generate.detokenizer import token_bytes
from promptcot_mamba.generate.tiny import build_tiny_model
from promptcot_mamba.serve.app import create_app

pytestmark = pytest.mark.usefixtures("one_thread")

# byte tokens: "é€" and the fox are split into bytes that each decode to U+FFFD
PROMPT = "Let x be a real number \u00e9\u20ac \U0001f98a such that"


@pytest.fixture(scope="module")
def model():
    return build_tiny_model()


@pytest.fixture(scope="module")
def server(model):
    engine = Engine(model, model.tokenizer, EngineConfig(max_slots=8, prefix_cache_gb=0.01, prefix_block=8,
                                                         prefill_chunk=16))
    with LiveServer(create_app(engine, model_name="tiny", reasoning=True)) as s:
        yield s


def post(server, path, body):
    r = httpx.post(server.url + path, json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@torch.no_grad()
def reference(model, ids):
    """log-softmax of the model's logits over `ids` (row j: the distribution of token j + 1), and the
    scale-relative bound for comparing a served value with it."""
    logits = model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits, -1), rtol(torch.float32, SSD_TERMS) * float(logits.abs().max())


def check_top(model, top: dict, ref_row, chosen: int, k: int, bound: float):
    """`top` holds the k most likely tokens, and `chosen` too (k + 1 entries when it is not among them),
    each with its own logprob, every key naming one token."""
    tok = model.tokenizer
    ids = []
    for key, v in top.items():
        if key.startswith("token_id:"):
            ids.append(int(key.removeprefix("token_id:")))
        else:  # of the tokens with this text, the one with this value
            ids.append(next(i for i in range(tok.vocab_size)
                            if tok.decode([i]) == key and abs(float(ref_row[i]) - v) <= bound))
    assert len(set(ids)) == len(ids) and chosen in ids
    for i, v in zip(ids, top.values()):
        assert abs(v - float(ref_row[i])) <= bound, (i, v, float(ref_row[i]))
    best = ref_row.topk(k).values
    others = [v for i, v in zip(ids, top.values()) if not (len(top) == k + 1 and i == chosen)]
    assert len(top) in (k, k + 1) and len(others) == k
    assert torch.allclose(torch.tensor(sorted(others, reverse=True)), best, atol=bound)
    if len(top) == k + 1:
        assert float(ref_row[chosen]) <= float(best[-1]) + bound


def test_echo_logprobs_score_the_prompt_as_the_forward_pass(server, model):
    """lm-evaluation-harness's request: echo, logprobs 1, max_tokens 1, temperature 0."""
    ids = model.tokenizer.encode(PROMPT)
    r = post(server, "/v1/completions", {"prompt": ids, "echo": True, "logprobs": 1, "max_tokens": 1,
                                         "temperature": 0})
    [c] = r["choices"]
    lp = c["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(ids) + 1 == r["usage"]["prompt_tokens"] + 1
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    ref, bound = reference(model, ids)
    want = ref[torch.arange(len(ids) - 1), ids[1:]]
    assert torch.allclose(torch.tensor(lp["token_logprobs"][1:len(ids)]), want, atol=bound)
    # the generated token: greedy, so its logprob is the row's maximum
    assert abs(lp["token_logprobs"][-1] - float(ref[-1].max())) <= bound
    # text_offset counts the echoed prompt: every token's offset is the length of the tokens before it
    texts = [model.tokenizer.decode([i]) for i in ids]
    assert lp["tokens"][:len(ids)] == texts
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:j]) for j in range(len(ids) + 1)]
    assert c["text"].startswith(PROMPT)


def test_echo_with_max_tokens_0_returns_the_prompt_only(server, model):
    ids = model.tokenizer.encode(PROMPT)
    r = post(server, "/v1/completions", {"prompt": PROMPT, "echo": True, "logprobs": 3, "max_tokens": 0, "n": 2})
    assert r["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}
    ref, bound = reference(model, ids)
    for c in r["choices"]:
        assert c["text"] == PROMPT and c["finish_reason"] == "length"
        lp = c["logprobs"]
        assert len(lp["token_logprobs"]) == len(ids) and lp["token_logprobs"][0] is None
        for j in range(1, len(ids)):
            check_top(model, lp["top_logprobs"][j], ref[j - 1], ids[j], 3, bound)
    # without echo, max_tokens 0 stays an error (vLLM's rule)
    r = httpx.post(server.url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 0}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_streamed_echo_carries_the_prompt_logprobs_first(server, model):
    ids = model.tokenizer.encode(PROMPT)
    body = {"prompt": PROMPT, "echo": True, "logprobs": 2, "max_tokens": 4, "temperature": 0, "ignore_eos": True}
    full = post(server, "/v1/completions", body)["choices"][0]
    with httpx.stream("POST", server.url + "/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        chunks = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    first = chunks[0]["choices"][0]
    assert first["text"].startswith(PROMPT) and len(first["logprobs"]["tokens"]) == len(ids) + 1
    got = [v for c in chunks for v in c["choices"][0]["logprobs"]["token_logprobs"]]
    want = full["logprobs"]["token_logprobs"]
    assert got[0] is None and want[0] is None
    assert torch.allclose(torch.tensor(got[1:]), torch.tensor(want[1:]), atol=1e-6)
    assert "".join(c["choices"][0]["text"] for c in chunks) == full["text"]


def test_vllm_prompt_logprobs(server, model):
    ids = model.tokenizer.encode(PROMPT)
    r = post(server, "/v1/completions", {"prompt": PROMPT, "prompt_logprobs": 2, "max_tokens": 2, "temperature": 0})
    [c] = r["choices"]
    assert c["logprobs"] is None and not c["text"].startswith(PROMPT)
    pl = c["prompt_logprobs"]
    assert len(pl) == len(ids) and pl[0] is None
    ref, bound = reference(model, ids)
    for j in range(1, len(ids)):
        entry = pl[j]
        assert str(ids[j]) in entry and len(entry) in (2, 3)
        for tid, e in entry.items():
            assert abs(e["logprob"] - float(ref[j - 1, int(tid)])) <= bound
            assert e["decoded_token"] == model.tokenizer.decode([int(tid)])
            # rank: 1 + how many tokens are more likely (up to the tolerance, at a near-tie)
            above = ref[j - 1] - e["logprob"]
            assert int((above > bound).sum()) < e["rank"] <= int((above > -bound).sum()) + 1
    # chat: at the top level of the body, as vLLM
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                              "prompt_logprobs": 0, "max_tokens": 2})
    assert r["prompt_logprobs"][0] is None and all(len(e) == 1 for e in r["prompt_logprobs"][1:])
    assert len(r["prompt_logprobs"]) == r["usage"]["prompt_tokens"]
    # not with streaming (vLLM refuses it too)
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "prompt_logprobs": 1, "stream": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt_logprobs"


def test_top_logprobs_have_k_entries_without_collisions(server, model):
    """k = 20 over a vocabulary of 384 with ~128 byte tokens that each decode to U+FFFD: most positions
    have several in their top 20. None overwrites another: keys after the first are "token_id:<id>"."""
    ids = model.tokenizer.encode(PROMPT)
    k = 20
    r = post(server, "/v1/completions", {"prompt": ids, "echo": True, "logprobs": k, "max_tokens": 6,
                                         "temperature": 0, "ignore_eos": True, "repetition_penalty": 1.3})
    lp = r["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(ids) + 6
    ref, bound = reference(model, ids)
    collided = 0
    for j in range(1, len(lp["tokens"])):
        top = lp["top_logprobs"][j]
        collided += sum(key.startswith("token_id:") for key in top)
        assert len(top) in (k, k + 1)
        assert lp["token_logprobs"][j] == top[lp["tokens"][j]]  # the chosen token's own value
    assert collided > 0  # the case that used to overwrite entries did occur
    # the prompt's positions against the forward pass
    for j in range(1, len(ids)):
        check_top(model, lp["top_logprobs"][j], ref[j - 1], ids[j], k, bound)


def test_greedy_completion_logprobs_equal_the_forward_pass(server, model):
    ids = model.tokenizer.encode("The quick brown fox")
    r = post(server, "/v1/completions", {"prompt": ids, "logprobs": 5, "max_tokens": 8, "temperature": 0,
                                         "ignore_eos": True, "return_tokens_as_token_ids": True})
    lp = r["choices"][0]["logprobs"]
    out = [int(t.removeprefix("token_id:")) for t in lp["tokens"]]
    assert len(out) == 8 and all(t.startswith("token_id:") for t in lp["tokens"])
    ref, bound = reference(model, ids + out)
    for j, (tid, v, top) in enumerate(zip(out, lp["token_logprobs"], lp["top_logprobs"])):
        row = ref[len(ids) - 1 + j]
        assert abs(v - float(row[tid])) <= bound and abs(v - float(row.max())) <= bound  # greedy
        assert all(key.startswith("token_id:") for key in top) and len(top) == 5
        assert top[f"token_id:{tid}"] == v
        got = torch.tensor(sorted(top.values(), reverse=True))
        assert torch.allclose(got, row.topk(5).values, atol=bound)
        for key, val in top.items():
            assert abs(val - float(row[int(key.removeprefix("token_id:"))])) <= bound
    # text_offset is an offset into the text, also when tokens are written as ids
    texts = [model.tokenizer.decode([t]) for t in out]
    assert lp["text_offset"] == [sum(len(t) for t in texts[:j]) for j in range(len(out))]


def test_chat_logprobs_bytes_are_the_tokens_own(server, model):
    tok = model.tokenizer
    r = post(server, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": PROMPT}], "logprobs": True, "top_logprobs": 4, "max_tokens": 12,
        "temperature": 0, "ignore_eos": True, "repetition_penalty": 1.2, "return_tokens_as_token_ids": True})
    content = r["choices"][0]["logprobs"]["content"]
    assert len(content) == 12
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPT}]))
    out = [int(e["token"].removeprefix("token_id:")) for e in content]
    ref, bound = reference(model, ids + out)
    for j, e in enumerate(content):
        tid = out[j]
        assert bytes(e["bytes"]) == token_bytes(tok, tid)
        assert abs(e["logprob"] - float(ref[len(ids) - 1 + j, tid])) <= bound
        assert len(e["top_logprobs"]) == 4  # exactly k (OpenAI's chat shape)
        for t in e["top_logprobs"]:
            assert bytes(t["bytes"]) == token_bytes(tok, int(t["token"].removeprefix("token_id:")))
    # the split characters of the prompt: their tokens' bytes are their UTF-8 pieces, not U+FFFD's
    split = [i for i in tok.encode("\u00e9\u20ac") if tok.decode([i]) == "\ufffd"]
    assert b"".join(token_bytes(tok, i) for i in split) == "\u00e9\u20ac".encode()
    # without return_tokens_as_token_ids: the token text, and the bytes still the token's own
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}], "logprobs": True,
                                              "max_tokens": 12, "temperature": 0, "ignore_eos": True,
                                              "repetition_penalty": 1.2})
    plain = r["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in plain] == [tok.decode([t]) for t in out]
    assert [e["bytes"] for e in plain] == [e["bytes"] for e in content]
    assert all(e["top_logprobs"] == [] for e in plain)
