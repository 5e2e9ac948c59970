"""No parameter is silently ignored: every vLLM field the server does not implement is a 400 naming it,
and the ones it does implement (continuous usage stats, include_reasoning, chat_template_kwargs,
request_id, add_special_tokens, integral floats, message content rules) do what they say. Also the
collector's side of disconnects and shutdown: an abandoned non-streamed request stops within 1 s, and
requests aborted while the server drains answer a 503 error body or a last "abort" chunk and [DONE]."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from pcm_live_server import LiveServer

from promptcot_mamba.generate import Engine, EngineConfig
from promptcot_mamba.generate.tiny import build_tiny_model
from promptcot_mamba.serve.app import create_app
from promptcot_mamba.serve.protocol import REFUSED, ChatCompletionRequest
from promptcot_mamba.text.prompts import CHATML_TEMPLATE

pytestmark = pytest.mark.usefixtures("one_thread")

CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]
BASE = {CMPL: {"prompt": "hi", "max_tokens": 2}, CHAT: {"messages": MSG, "max_tokens": 2}}


@pytest.fixture(scope="module")
def server():
    model = build_tiny_model()
    # the ChatML template plus one variable a client can set through chat_template_kwargs
    model.tokenizer.chat_template = "{% if greeting %}{{ greeting }}\n{% endif %}" + CHATML_TEMPLATE
    engine = Engine(model, model.tokenizer, EngineConfig(max_slots=4, prefix_cache_gb=0))
    with LiveServer(create_app(engine, model_name="tiny", reasoning=True)) as s:
        s.engine, s.srv = engine, s.server.config.app.state.server
        yield s


def post(server, path, body, status=200):
    r = httpx.post(server.url + path, json=body, timeout=60)
    assert r.status_code == status, r.text
    return r.json()


def sse(server, path, body) -> list:
    with httpx.stream("POST", server.url + path, json={**body, "stream": True}, timeout=60) as r:
        lines = [x[len("data: "):] for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


REFUSALS = [(CMPL, f) for f in REFUSED] + [(CHAT, f) for f in ChatCompletionRequest.refused]


@pytest.mark.parametrize("path,field", REFUSALS, ids=[f"{p.split('/')[-1]}-{f}" for p, f in REFUSALS])
def test_unimplemented_vllm_field_is_a_400_naming_it(server, path, field):
    err = post(server, path, {**BASE[path], field: 7}, status=400)["error"]
    assert err["param"] == field and err["message"].startswith(field), err


@pytest.mark.parametrize("path", [CMPL, CHAT])
@pytest.mark.parametrize("fmt", ["json_object", "json_schema", "structural_tag"])
def test_structured_outputs_are_refused_by_name(server, path, fmt):
    err = post(server, path, {**BASE[path], "response_format": {"type": fmt, "json_schema": {}}}, status=400)["error"]
    assert err["param"] == "response_format" and "structured outputs are not supported" in err["message"]
    assert post(server, path, {**BASE[path], "response_format": {"type": "text"}})["choices"]


@pytest.mark.parametrize("path", [CMPL, CHAT])
def test_no_op_values_and_ignored_fields_are_accepted(server, path):
    noop = {"guided_json": None, "use_beam_search": False, "length_penalty": 1.0, "bad_words": [], "priority": 0,
            "thinking_token_budget": -1, "return_token_ids": False, "user": "u", "session_id": "s",
            "spaces_between_special_tokens": False, "stream_interval": 4}
    if path == CHAT:
        noop |= {"echo": False, "parallel_tool_calls": True, "tool_choice": "none"}
    assert post(server, path, {**BASE[path], **noop})["usage"]["completion_tokens"] >= 1


def test_integral_floats_are_integers(server):
    r = post(server, CMPL, {"prompt": "hi", "max_tokens": 5.0, "n": 2.0, "ignore_eos": True, "logprobs": 1.0})
    assert len(r["choices"]) == 2 and r["usage"]["completion_tokens"] == 10
    for field, value in (("max_tokens", 5.5), ("n", 2.5), ("logprobs", 1.5), ("top_k", 3.2)):
        err = post(server, CMPL, {"prompt": "hi", field: value}, status=400)["error"]
        assert err["param"] == field, err
    r = post(server, CHAT, {"messages": MSG, "max_completion_tokens": 3.0, "ignore_eos": True})
    assert r["usage"]["completion_tokens"] == 3


def test_message_content_is_required_except_for_the_assistant(server):
    for i, msgs in ((0, [{"role": "user"}]), (1, [{"role": "system", "content": "s"}, {"role": "user", "content": None}]),
                    (0, [{"role": "system"}, *MSG])):
        err = post(server, CHAT, {"messages": msgs}, status=400)["error"]
        assert err["param"] == f"messages[{i}].content" and err["param"] in err["message"], err
    post(server, CHAT, {"messages": [*MSG, {"role": "assistant"}, *MSG], "max_tokens": 2})
    err = post(server, CHAT, {"messages": [*MSG, {"role": "assistant", "tool_calls": [{"id": "1"}]}]}, status=400)
    assert err["error"]["param"] == "messages[1].tool_calls"
    assert post(server, CHAT, {"messages": MSG, "tool_choice": "required"}, status=400)["error"]["param"] == "tool_choice"


@pytest.mark.parametrize("path", [CMPL, CHAT])
def test_continuous_usage_stats(server, path):
    body = {**BASE[path], "max_tokens": 4, "n": 2, "ignore_eos": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    chunks = sse(server, path, body)
    *per_choice, last = chunks
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 8
    prompt_tokens = last["usage"]["prompt_tokens"]
    seen = {0: 0, 1: 0}
    for c in per_choice:
        [ch] = c["choices"]
        u = c["usage"]
        assert u["prompt_tokens"] == prompt_tokens and u["total_tokens"] == prompt_tokens + u["completion_tokens"]
        assert u["completion_tokens"] >= seen[ch["index"]]
        seen[ch["index"]] = u["completion_tokens"]
    assert seen == {0: 4, 1: 4}
    # asked for alone, continuous usage is still given (with no final usage chunk)
    chunks = sse(server, path, {**body, "stream_options": {"continuous_usage_stats": True}})
    assert all(c["choices"] and "usage" in c for c in chunks)


def test_include_reasoning_false_leaves_the_reasoning_out(server):
    msgs = [*MSG, {"role": "assistant", "content": "<think>\n"}]
    body = {"messages": msgs, "add_generation_prompt": False, "continue_final_message": True, "max_tokens": 8,
            "temperature": 0, "ignore_eos": True}
    full = post(server, CHAT, body)["choices"][0]["message"]
    assert "reasoning_content" in full
    without = post(server, CHAT, {**body, "include_reasoning": False})["choices"][0]["message"]
    assert "reasoning_content" not in without and without["content"] == full["content"]
    chunks = sse(server, CHAT, {**body, "include_reasoning": False})
    assert not any("reasoning_content" in c["choices"][0]["delta"] for c in chunks if c["choices"])


def test_chat_template_kwargs_reach_the_template(server):
    plain = post(server, CHAT, {"messages": MSG, "max_tokens": 1})["usage"]["prompt_tokens"]
    greeted = post(server, CHAT, {"messages": MSG, "max_tokens": 1, "chat_template_kwargs": {"greeting": "hello world"}})
    assert greeted["usage"]["prompt_tokens"] > plain
    err = post(server, CHAT, {"messages": MSG, "chat_template_kwargs": {"messages": []}}, status=400)["error"]
    assert err["param"] == "chat_template_kwargs"


def test_request_id_and_add_special_tokens(server):
    assert post(server, CMPL, {**BASE[CMPL], "request_id": "abc"})["id"] == "cmpl-abc"
    assert post(server, CHAT, {**BASE[CHAT], "request_id": "abc"})["id"] == "chatcmpl-abc"
    # the tiny tokenizer adds no special tokens: the same prompt either way (the flag is passed through)
    a = post(server, CMPL, {**BASE[CMPL], "add_special_tokens": True})["usage"]["prompt_tokens"]
    assert a == post(server, CMPL, BASE[CMPL])["usage"]["prompt_tokens"]


def _wait(pred, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.005)
    return None


def test_abandoned_non_streamed_request_stops_within_1s(server):
    long = {"prompt": "hello", "max_tokens": 100000, "ignore_eos": True}
    for _ in range(3):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + CMPL, json=long, timeout=httpx.Timeout(30, read=0.5))
        gone = _wait(lambda: server.engine.num_running == 0 and server.engine.num_waiting == 0, 1.0)
        assert gone is not None, "the abandoned request still runs 1 s after its client left"
        assert httpx.get(server.url + "/health").json()["running"] == 0
    assert server.engine.stats["generated_tokens"] > 0


def _in_background(fn):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", fn()), daemon=True)
    t.start()
    return t, box


def _abort_while_draining(server, fn):
    """Run `fn` (a request) until the engine runs it, then begin 'draining' and abort everything, as the
    shutdown does at its grace deadline; returns what `fn` returned."""
    t, box = _in_background(fn)
    try:
        assert _wait(lambda: server.engine.num_running == 1, 10) is not None
        server.srv.draining = True
        for rid in list(server.engine.requests):
            server.srv.runner.abort(rid)
        t.join(10)
    finally:
        server.srv.draining = False
    return box["r"]


def test_requests_aborted_while_draining_are_answered(server):
    long = {"prompt": "hello", "max_tokens": 100000, "ignore_eos": True}
    r = _abort_while_draining(server, lambda: httpx.post(server.url + CMPL, json=long, timeout=30))
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error", r.text
    for path, body in ((CMPL, long), (CHAT, {"messages": MSG, "max_tokens": 100000, "ignore_eos": True})):
        chunks = _abort_while_draining(server, lambda p=path, b=body: sse(server, p, b))  # sse checks [DONE]
        assert chunks[-1]["choices"][0]["finish_reason"] == "abort"
    # aborted when not draining (no shutdown): the answer says "abort", as before
    t, box = _in_background(lambda: httpx.post(server.url + CMPL, json=long, timeout=30))
    assert _wait(lambda: server.engine.num_running == 1, 10) is not None
    for rid in list(server.engine.requests):
        server.srv.runner.abort(rid)
    t.join(10)
    assert box["r"].status_code == 200 and box["r"].json()["choices"][0]["finish_reason"] == "abort"
