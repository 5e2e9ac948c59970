"""The official openai client against a live server on 127.0.0.1: completions, chat, streaming, n > 1,
stop strings, seeds, 32 concurrent streams equal to running alone, disconnects, queue limit, shutdown."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
import torch
from pcm_live_server import LiveServer

from promptcot_mamba.common.tolerances import SSD_TERMS, assert_close
from promptcot_mamba.generate import Engine, EngineConfig
from promptcot_mamba.generate.tiny import build_tiny_model
from promptcot_mamba.serve.app import create_app

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return build_tiny_model()


@pytest.fixture(scope="module")
def server(model):
    engine = Engine(model, model.tokenizer, EngineConfig(max_slots=32, prefix_cache_gb=0.01, prefix_block=16))
    with LiveServer(create_app(engine, model_name="tiny", reasoning=True)) as s:
        s.engine = engine
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_completion_greedy_matches_engine(client, model):
    # the server runs this request alone (one row), as the reference engine does: the same arithmetic
    r = client.completions.create(model="tiny", prompt="Let x be", max_tokens=12, temperature=0)
    ref = Engine(model, model.tokenizer, EngineConfig(prefix_cache_gb=0)).generate(
        [model.tokenizer.encode("Let x be")], __import__("promptcot_mamba.generate", fromlist=["x"]).SamplingParams(
            max_tokens=12, temperature=0))[0].samples[0]
    assert r.choices[0].text == ref.text
    assert r.usage.completion_tokens == len(ref.token_ids)
    assert r.choices[0].finish_reason == ref.finish_reason


def test_chat_and_streaming_agree(client):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    full = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason


def test_completion_stream_matches_non_stream(client):
    kw = dict(model="tiny", prompt="The quick brown", max_tokens=20, temperature=0)
    full = client.completions.create(**kw).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw))
    assert streamed == full


def test_n_samples_and_seed_reproducibility(client):
    kw = dict(model="tiny", prompt="hello", max_tokens=16, temperature=1.0, n=3, seed=42)
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)  # the same one request of 3 rows again: equal bit for bit
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices}) > 1
    other = client.completions.create(**{**kw, "seed": 43})
    assert [c.text for c in other.choices] != [c.text for c in a.choices]
    # streamed n > 1: every index finishes, and each equals its non-streamed text
    texts = {}
    for c in client.completions.create(stream=True, **kw):
        for ch in c.choices:
            texts[ch.index] = texts.get(ch.index, "") + ch.text
    assert [texts[i] for i in range(3)] == [c.text for c in a.choices]


def _assert_same(a, b) -> None:
    """Equal JSON, the floats (logprobs) up to the rounding of a whole-model value, relative to their
    scale. The engine takes a call's requests one by one, so two calls' rows can be batched differently
    (when it steps between two of them), and then their logits round differently. The tokens are still
    equal unless a sampled draw's uniform lies within that rounding (~1e-6) of a CDF boundary, and the
    calls are batched alike in practice: 100 identical calls here gave bit-identical logprobs."""
    xs: list[float] = []
    ys: list[float] = []

    def walk(x, y, at):
        if isinstance(x, float) and isinstance(y, float):
            xs.append(x)
            ys.append(y)
        elif isinstance(x, dict) and isinstance(y, dict):
            assert list(x) == list(y), (at, list(x), list(y))
            for k in x:
                walk(x[k], y[k], f"{at}.{k}")
        elif isinstance(x, list) and isinstance(y, list):
            assert len(x) == len(y), (at, x, y)
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{at}[{i}]")
        else:
            assert x == y, (at, x, y)

    walk(a, b, "choices")
    assert_close(torch.tensor(xs), torch.tensor(ys), reductions=SSD_TERMS, what="logprobs")


def _sse_chunks(url: str, path: str, body: dict) -> list[dict]:
    with httpx.stream("POST", url + path, json={**body, "stream": True}, timeout=60) as r:
        lines = [x[len("data: "):] for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


def test_streamed_completion_chunks_add_up_to_the_body_n2_echo_logprobs(server):
    """Two prompts × n=2 with echo and logprobs: the streamed chunks of each choice, put together,
    are that choice of the non-streamed body (text with the echoed prompt, logprobs, finish reasons)."""
    body = {"prompt": ["Let x be", "hello world"], "n": 2, "seed": 1, "temperature": 1.0, "echo": True,
            "logprobs": 2, "max_tokens": 6}
    full = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()
    chunks = _sse_chunks(server.url, "/v1/completions", {**body, "stream_options": {"include_usage": True}})
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == full["usage"]
    assert {c["object"] for c in chunks} == {full["object"]} == {"text_completion"}
    assert full["choices"][0]["text"].startswith("Let x be") and full["choices"][3]["text"].startswith("hello world")
    got: dict[int, dict] = {}
    for c in chunks[:-1]:
        [ch] = c["choices"]
        g = got.setdefault(ch["index"], {"index": ch["index"], "text": "", "logprobs": {
            "tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}})
        g["text"] += ch["text"]
        for k, v in ch["logprobs"].items():
            g["logprobs"][k] += v
        g["finish_reason"], g["stop_reason"] = ch["finish_reason"], ch["stop_reason"]
    # text_offset is left out: a stream counts the text it has sent, the body each token's own text, and
    # the two differ where a character spans tokens (a lone byte of it decodes to U+FFFD)
    for choices in (got.values(), full["choices"]):
        for ch in choices:
            assert ch["logprobs"].pop("text_offset")[0] == 0
    _assert_same([got[i] for i in range(4)], full["choices"])


def test_streamed_chat_chunks_add_up_to_the_body_n2_logprobs(server):
    body = {"messages": [{"role": "user", "content": "hello world"}], "n": 2, "seed": 3, "temperature": 1.0,
            "logprobs": True, "top_logprobs": 2, "max_tokens": 8}
    full = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
    chunks = _sse_chunks(server.url, "/v1/chat/completions", body)
    roles = [c["choices"][0] for c in chunks[:2]]  # the role chunk of each choice comes first
    assert roles == [{"index": j, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None} for j in range(2)]
    got: dict[int, dict] = {}
    for c in chunks[2:]:
        [ch] = c["choices"]
        g = got.setdefault(ch["index"], {"content": "", "logprobs": []})
        g["content"] += ch["delta"].get("content", "")
        g["logprobs"] += (ch["logprobs"] or {"content": []})["content"]
        g["finish_reason"], g["stop_reason"] = ch["finish_reason"], ch["stop_reason"]
    want = [{"content": ch["message"]["content"], "logprobs": ch["logprobs"]["content"],
             "finish_reason": ch["finish_reason"], "stop_reason": ch["stop_reason"]} for ch in full["choices"]]
    _assert_same([got[0], got[1]], want)


def test_stop_strings(client):
    base = client.completions.create(model="tiny", prompt="The quick brown", max_tokens=24, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = base[6:9]
    r = client.completions.create(model="tiny", prompt="The quick brown", max_tokens=24, temperature=0, stop=[stop],
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].text == base[:base.find(stop)]
    assert r.choices[0].finish_reason == "stop"
    s = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="The quick brown", max_tokens=24, temperature=0, stop=stop, stream=True,
        extra_body={"ignore_eos": True}))
    assert s == r.choices[0].text


def test_chat_logprobs_and_vllm_extras(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
                                       temperature=0, logprobs=True, top_logprobs=2,
                                       extra_body={"top_k": 5, "min_p": 0.01, "repetition_penalty": 1.1})
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in lp)
    assert all(t.logprob <= 0 for t in lp)


def test_chat_continue_final_message_is_assistant_prefill(client, model):
    """vLLM's `continue_final_message`: the model continues the assistant's opening, which equals a
    completion of the rendered conversation followed by that opening (no end-of-turn in between)."""
    opening = "The answer is"
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": opening}],
        max_tokens=10, temperature=0, extra_body={"continue_final_message": True, "add_generation_prompt": False})
    prompt = model.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}]) + opening
    ref = client.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0)
    assert r.choices[0].message.content == ref.choices[0].text
    assert r.usage.prompt_tokens == ref.usage.prompt_tokens


def test_reasoning_content_split(server):
    # a prompt whose template ends inside <think>: everything before </think> is reasoning
    r = httpx.post(server.url + "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>\n"}],
        "add_generation_prompt": False, "max_tokens": 8, "temperature": 0}, timeout=30).json()
    msg = r["choices"][0]["message"]
    assert "reasoning_content" in msg


def test_32_concurrent_streams_equal_alone(server, client, model, tie_free_length, next_token_logits):
    prompts = [f"number {i} is" + " step" * (i % 5) for i in range(32)]
    # Side by side, a row's decode steps round differently from alone (other GEMM shapes), and only text
    # comes back, so each stream stops before the model's first near-tie (prompt 26 has one at its 5th
    # token: the top two logits 5.2e-4 apart). The first token comes from the same one-row prefill.
    lens = [max(1, tie_free_length(next_token_logits(model), model.tokenizer.encode(p), 8 + (i % 6) * 3))
            for i, p in enumerate(prompts)]
    alone = [client.completions.create(model="tiny", prompt=p, max_tokens=m, temperature=0,
                                       extra_body={"ignore_eos": True}).choices[0].text
             for p, m in zip(prompts, lens)]

    async def one(ac, p, m):
        out = ""
        stream = await ac.completions.create(model="tiny", prompt=p, max_tokens=m, temperature=0, stream=True,
                                             extra_body={"ignore_eos": True})
        async for c in stream:
            out += c.choices[0].text
        return out

    async def all_at_once():
        ac = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        return await asyncio.gather(*(one(ac, p, m) for p, m in zip(prompts, lens)))

    server.engine.stats["peak_running"] = 0
    together = asyncio.run(all_at_once())
    assert together == alone
    assert server.engine.stats["peak_running"] >= 16  # they really ran side by side


def _wait_idle(server, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = httpx.get(server.url + "/health").json()
        if h["running"] == 0 and h["waiting"] == 0:
            return True
        time.sleep(0.05)
    return False


def test_disconnect_mid_stream_frees_slot(server):
    with httpx.Client(timeout=30) as c:
        with c.stream("POST", server.url + "/v1/completions", json={
                "prompt": "hello", "max_tokens": 100000, "stream": True, "extra": 1, "ignore_eos": True}) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(x.startswith("data: ") for x in got)
            assert server.engine.num_running == 1
    assert _wait_idle(server), "the disconnected stream still holds its slot"


def test_disconnect_while_waiting_for_a_non_streamed_answer_frees_slot(server):
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json={"prompt": "hello", "max_tokens": 100000, "ignore_eos": True},
                   timeout=httpx.Timeout(30, read=1.0))
    assert _wait_idle(server), "the disconnected request still holds its slot"


def test_full_queue_answers_429_and_shutdown_cancels_in_flight(model):
    engine = Engine(model, model.tokenizer, EngineConfig(max_slots=1, max_queue=1, prefix_cache_gb=0))
    app = create_app(engine, model_name="tiny", shutdown_grace_s=0.5)
    long = {"prompt": "hello", "max_tokens": 100000, "stream": True, "ignore_eos": True}
    with LiveServer(app, grace_s=1) as s:
        c = httpx.Client(timeout=30)
        # keep the context managers referenced: dropping one closes its response
        first_cm = c.stream("POST", s.url + "/v1/completions", json=long)
        first = first_cm.__enter__()  # holds the one slot
        second_cm = c.stream("POST", s.url + "/v1/completions", json=long)
        second_cm.__enter__()  # waits in the queue
        for _ in range(100):
            if engine.num_running == 1 and engine.num_waiting == 1:
                break
            time.sleep(0.02)
        r = httpx.post(s.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
        assert r.status_code == 429 and "queue is full" in r.json()["error"]["message"]
        assert r.headers.get("retry-after") == "1"
        second_cm.__exit__(None, None, None)
        t0 = time.monotonic()
        s.server.should_exit = True  # shutdown with a stream in flight
        s.thread.join(timeout=30)
        assert not s.thread.is_alive() and time.monotonic() - t0 < 20
        try:
            for _ in first.iter_lines():
                pass
        except httpx.HTTPError:
            pass  # cancelled by the shutdown: the connection closes
        first_cm.__exit__(None, None, None)
        c.close()
    assert engine.num_running == 0


def test_batched_prompts_and_token_id_prompts(client, model, tie_free_length, next_token_logits):
    ids = model.tokenizer.encode("hello world")
    # choices 2 and 3 decode in a batch of four rows, `alone` in one: equal up to the first near-tie
    m = max(1, tie_free_length(next_token_logits(model), ids, 6))
    r = client.completions.create(model="tiny", prompt=["Let x be", "hello world"], n=2, max_tokens=m, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    alone = client.completions.create(model="tiny", prompt="hello world", max_tokens=m, temperature=0).choices[0].text
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=m, temperature=0).choices[0].text
    assert r.choices[2].text == r.choices[3].text == alone == by_ids
    echoed = client.completions.create(model="tiny", prompt="hello world", max_tokens=m, temperature=0, echo=True)
    assert echoed.choices[0].text == "hello world" + alone


def test_metrics_report_engine_state(server):
    text = httpx.get(server.url + "/metrics").text
    for name in ("pcm_queue_depth", "pcm_running_sequences", "pcm_tokens_per_second", "pcm_state_memory_bytes",
                 "pcm_generated_tokens_total", "pcm_requests_total"):
        assert name in text, name
    line = next(x for x in text.splitlines() if x.startswith("pcm_state_memory_bytes"))
    assert float(line.split()[-1]) == server.engine.state_bytes
