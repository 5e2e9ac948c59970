"""Bad requests get a 4xx with an OpenAI error body and a clear message; the server stays healthy."""

from __future__ import annotations

import json

import httpx
import pytest
from pcm_live_server import LiveServer

from promptcot_mamba.generate import Engine, EngineConfig
from promptcot_mamba.generate.tiny import build_tiny_model
from promptcot_mamba.serve.app import create_app

CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]

# (name, method, path, body (dict → JSON, bytes → raw), expected status, a substring of the message)
BAD = [
    ("malformed JSON", "POST", CMPL, b'{"prompt": "x",', 400, "malformed JSON"),
    ("body not an object", "POST", CMPL, b"[1, 2]", 400, "JSON object"),
    ("empty body", "POST", CMPL, b"", 400, "empty"),
    ("unknown model", "POST", CMPL, {"model": "gpt-17", "prompt": "x"}, 404, "does not exist"),
    ("missing prompt", "POST", CMPL, {"model": "tiny"}, 400, "'prompt' is required"),
    ("prompt wrong type", "POST", CMPL, {"prompt": 42}, 400, "prompt"),
    ("prompt empty string", "POST", CMPL, {"prompt": ""}, 400, "empty"),
    ("prompt empty list", "POST", CMPL, {"prompt": []}, 400, "empty"),
    ("token id out of vocabulary", "POST", CMPL, {"prompt": [1, 2, 10**7]}, 400, "outside the vocabulary"),
    ("prompt over the limit", "POST", CMPL, {"prompt": "x " * 400}, 400, "over the limit"),
    ("max_tokens wrong type", "POST", CMPL, {"prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
    ("max_tokens zero", "POST", CMPL, {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens over the limit", "POST", CMPL, {"prompt": "x", "max_tokens": 10**6}, 400, "max_tokens"),
    ("temperature negative", "POST", CMPL, {"prompt": "x", "temperature": -1}, 400, "temperature"),
    ("top_p zero", "POST", CMPL, {"prompt": "x", "top_p": 0}, 400, "top_p"),
    ("top_k below -1", "POST", CMPL, {"prompt": "x", "top_k": -5}, 400, "top_k"),
    ("min_p above 1", "POST", CMPL, {"prompt": "x", "min_p": 1.5}, 400, "min_p"),
    ("repetition_penalty zero", "POST", CMPL, {"prompt": "x", "repetition_penalty": 0}, 400, "repetition_penalty"),
    ("presence_penalty out of range", "POST", CMPL, {"prompt": "x", "presence_penalty": 3}, 400, "presence_penalty"),
    ("n zero", "POST", CMPL, {"prompt": "x", "n": 0}, 400, "'n'"),
    ("n too large", "POST", CMPL, {"prompt": "x", "n": 1000}, 400, "'n'"),
    ("stop wrong type", "POST", CMPL, {"prompt": "x", "stop": [1, 2]}, 400, "stop"),
    ("too many stop strings", "POST", CMPL, {"prompt": "x", "stop": [str(i) for i in range(20)]}, 400, "stop"),
    ("stream not a bool", "POST", CMPL, {"prompt": "x", "stream": "yes"}, 400, "stream"),
    ("seed not an integer", "POST", CMPL, {"prompt": "x", "seed": 1.5}, 400, "seed"),
    ("logprobs out of range", "POST", CMPL, {"prompt": "x", "logprobs": 50}, 400, "logprobs"),
    ("min_tokens over max_tokens", "POST", CMPL, {"prompt": "x", "max_tokens": 2, "min_tokens": 5}, 400, "min_tokens"),
    ("stop_token_ids out of vocabulary", "POST", CMPL, {"prompt": "x", "stop_token_ids": [10**7]}, 400,
     "stop_token_ids"),
    ("continue_final_message after a user turn", "POST", CHAT,
     {"messages": MSG, "continue_final_message": True, "add_generation_prompt": False}, 400, "assistant"),
    ("continue_final_message with add_generation_prompt", "POST", CHAT,
     {"messages": MSG + [{"role": "assistant", "content": "x"}], "continue_final_message": True}, 400,
     "cannot both"),
    ("suffix unsupported", "POST", CMPL, {"prompt": "x", "suffix": "y"}, 400, "suffix"),
    ("logit_bias unsupported", "POST", CMPL, {"prompt": "x", "logit_bias": {"5": 1.0}}, 400, "logit_bias"),
    ("best_of unsupported", "POST", CMPL, {"prompt": "x", "n": 1, "best_of": 3}, 400, "best_of"),
    ("stream_options without stream", "POST", CMPL, {"prompt": "x", "stream_options": {"include_usage": True}},
     400, "stream_options"),
    ("messages missing", "POST", CHAT, {"model": "tiny"}, 400, "'messages' is required"),
    ("messages empty", "POST", CHAT, {"messages": []}, 400, "messages"),
    ("message role unknown", "POST", CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ("message content wrong type", "POST", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ("messages not a list", "POST", CHAT, {"messages": "hello"}, 400, "messages"),
    ("tools unsupported", "POST", CHAT, {"messages": MSG, "tools": [{"type": "function"}]}, 400, "tools"),
    ("top_logprobs without logprobs", "POST", CHAT, {"messages": MSG, "top_logprobs": 2}, 400, "top_logprobs"),
    ("max_completion_tokens negative", "POST", CHAT, {"messages": MSG, "max_completion_tokens": -3}, 400,
     "max_completion_tokens"),
    ("wrong content type", "POST", CMPL, ("text/plain", b"prompt=x"), 415, "Content-Type"),
    ("body too large", "POST", CMPL, {"prompt": "x" * (300 * 1024)}, 413, "over the limit"),
    ("unknown route", "POST", "/v1/engines/foo", {"prompt": "x"}, 404, "no route"),
    ("wrong method", "GET", CMPL, None, 405, "not allowed"),
]


@pytest.fixture(scope="module")
def server(one_thread):
    model = build_tiny_model()
    engine = Engine(model, model.tokenizer, EngineConfig(max_slots=4, max_prompt_tokens=256, max_new_tokens=4096))
    app = create_app(engine, model_name="tiny", max_body_bytes=256 * 1024)
    with LiveServer(app) as s:
        yield s


def test_at_least_20_kinds_of_bad_request():
    assert len(BAD) >= 20 and len({b[0] for b in BAD}) == len(BAD)


@pytest.mark.parametrize("name,method,path,body,status,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_request_is_4xx_with_message(server, name, method, path, body, status, needle):
    headers = {"content-type": "application/json"}
    if isinstance(body, tuple):
        headers["content-type"], content = body
    elif isinstance(body, bytes):
        content = body
    else:
        content = None if body is None else json.dumps(body).encode()
    r = httpx.request(method, server.url + path, content=content, headers=headers, timeout=30)
    assert r.status_code == status, (name, r.status_code, r.text)
    err = r.json()["error"]
    assert needle.lower() in err["message"].lower(), (name, err)
    assert err["type"] and isinstance(err["message"], str)
    # still healthy and still answering
    assert httpx.get(server.url + "/health", timeout=10).json()["status"] == "ok"


def test_server_answers_after_all_bad_requests(server):
    r = httpx.post(server.url + CMPL, json={"prompt": "Let x be", "max_tokens": 4, "temperature": 0}, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4


# requests the request models accept but the engine refuses: the body names the parameter the engine's
# error names (EngineError.param), streamed or not, for both routes
ENGINE_REFUSES = [
    (CMPL, {"prompt": "x " * 400}, "prompt"),
    (CMPL, {"prompt": [1, 2, 10**7]}, "prompt"),
    (CMPL, {"prompt": "x", "max_tokens": 10**6}, "max_tokens"),
    (CMPL, {"prompt": "x", "n": 5, "stream": True}, "n"),
    (CMPL, {"prompt": "x", "stop_token_ids": [10**7]}, "stop_token_ids"),
    (CHAT, {"messages": MSG, "max_tokens": 10**6, "stream": True}, "max_tokens"),
]


@pytest.mark.parametrize("path,body,param", ENGINE_REFUSES, ids=[f"{p} {b}"[:60] for p, b, _ in ENGINE_REFUSES])
def test_engine_error_names_its_parameter(server, path, body, param):
    r = httpx.post(server.url + path, json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()
