"""The endpoints and habits a vLLM user reaches for, against a live server on 127.0.0.1: the openai
client's `models.retrieve`, /tokenize and /detokenize (vLLM's shapes), /version, Allow on a 405,
X-Request-Id on every response, vLLM's metric names, and an upload the client gives up on."""

from __future__ import annotations

import logging
import socket
import time

import httpx
import openai
import pytest
from pcm_live_server import LiveServer
from prometheus_client.parser import text_string_to_metric_families

from promptcot_mamba import __version__
from promptcot_mamba.generate import Engine, EngineConfig
from promptcot_mamba.generate.tiny import build_tiny_model
from promptcot_mamba.serve.app import create_app
from promptcot_mamba.serve.chat import render_chat

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return build_tiny_model()


@pytest.fixture(scope="module")
def server(model):
    engine = Engine(model, model.tokenizer, EngineConfig(max_slots=8, max_prompt_tokens=512, max_new_tokens=256))
    with LiveServer(create_app(engine, model_name="tiny")) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_retrieve(client):
    m = client.models.retrieve("tiny")
    assert m.id == "tiny" and m.object == "model" and m.model_extra["max_model_len"] == 512 + 256
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-17")
    assert err.value.body["code"] == "model_not_found" and "gpt-17" in err.value.body["message"]


def test_tokenize_and_detokenize(server, model):
    tok = model.tokenizer
    text = "Let x be a real number, 数学"
    r = httpx.post(server.url + "/tokenize", json={"model": "tiny", "prompt": text, "return_token_strs": True})
    body = r.json()
    assert r.status_code == 200 and set(body) == {"count", "max_model_len", "tokens", "token_strs"}
    assert body["tokens"] == tok.encode(text) and body["count"] == len(body["tokens"])
    assert body["max_model_len"] == 512 + 256
    assert body["token_strs"] == [tok.decode([t]) for t in body["tokens"]]
    # the count is the prompt_tokens a completion of the same prompt uses
    c = httpx.post(server.url + "/v1/completions", json={"prompt": text, "max_tokens": 1}).json()
    assert c["usage"]["prompt_tokens"] == body["count"]
    back = httpx.post(server.url + "/detokenize", json={"model": "tiny", "tokens": body["tokens"]}).json()
    assert back == {"prompt": text}

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    chat = httpx.post(server.url + "/tokenize", json={"messages": msgs}).json()
    assert chat["tokens"] == tok.encode(render_chat(tok, msgs)) and chat["token_strs"] is None
    cc = httpx.post(server.url + "/v1/chat/completions", json={"messages": msgs, "max_tokens": 1}).json()
    assert cc["usage"]["prompt_tokens"] == chat["count"]
    assert httpx.post(server.url + "/tokenize", json={"prompt": ""}).json()["count"] == 0


@pytest.mark.parametrize("path,body,status,param", [
    ("/tokenize", {"prompt": "x", "messages": [{"role": "user", "content": "x"}]}, 400, "prompt"),
    ("/tokenize", {}, 400, "prompt"),
    ("/tokenize", {"prompt": "x", "chat_template": "{{ 1 }}"}, 400, "chat_template"),
    ("/tokenize", {"prompt": 5}, 400, "prompt"),
    ("/tokenize", {"prompt": "x " * 600}, 400, "prompt"),
    ("/tokenize", {"prompt": "x", "model": "gpt-17"}, 404, "model"),
    ("/detokenize", {"tokens": [1, 10**7]}, 400, "tokens"),
    ("/detokenize", {"tokens": "1 2"}, 400, "tokens"),
])
def test_tokenize_errors(server, path, body, status, param):
    r = httpx.post(server.url + path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_version_allow_and_request_id(server):
    r = httpx.get(server.url + "/version")
    assert r.json() == {"version": __version__}
    ids = {r.headers["x-request-id"]}
    r = httpx.get(server.url + "/v1/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["message"]
    ids.add(r.headers["x-request-id"])
    for path in ("/health", "/nowhere", "/metrics"):  # a 404 and a plain-text answer carry one too
        ids.add(httpx.get(server.url + path).headers["x-request-id"])
    with httpx.stream("POST", server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2, "stream": True}) as r:
        ids.add(r.headers["x-request-id"])
    assert len(ids) == 6 and all(len(i) == 32 for i in ids)  # new ones, all different
    mine = {"x-request-id": "client-chosen-7"}
    for method, path in (("GET", "/health"), ("POST", "/v1/completions"), ("DELETE", "/health")):
        r = httpx.request(method, server.url + path, headers=mine, json={"prompt": "x", "max_tokens": 1})
        assert r.headers["x-request-id"] == "client-chosen-7", (method, path)


def _families(url: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(httpx.get(url + "/metrics").text)}


def _value(fam, sample_name: str, **labels) -> float:
    return sum(s.value for s in fam.samples if s.name == sample_name and all(s.labels.get(k) == v
                                                                            for k, v in labels.items()))


def test_vllm_metrics(model):
    """vLLM's metric names on a fresh server, against what the requests did: tokens, finished
    sequences by reason, and one time-to-first-token per sequence, one inter-token latency per later
    token, one end-to-end latency per sequence."""
    engine = Engine(model, model.tokenizer, EngineConfig(max_slots=8))
    with LiveServer(create_app(engine, model_name="tiny")) as s:
        before = _families(s.url)
        assert _value(before["vllm:num_requests_running"], "vllm:num_requests_running", model_name="tiny") == 0
        done = []
        for body in ({"prompt": "Let x be", "max_tokens": 7, "temperature": 0, "ignore_eos": True},
                     {"prompt": ["a", "b"], "n": 2, "max_tokens": 5, "ignore_eos": True, "seed": 1}):
            done.append(httpx.post(s.url + "/v1/completions", json=body, timeout=60).json())
        with httpx.stream("POST", s.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 10**5,
                                                                   "stream": True, "ignore_eos": True}) as r:
            lines = r.iter_lines()
            while not next(lines).startswith('data: {"id"'):  # a chunk with a token: it is decoding
                pass
            fam = _families(s.url)
            assert _value(fam["vllm:num_requests_running"], "vllm:num_requests_running", model_name="tiny") == 1
        deadline = time.monotonic() + 10  # the aborted stream is counted at the engine's next step
        while _value(_families(s.url)["vllm:request_success"], "vllm:request_success_total",
                     finished_reason="abort") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        fam = _families(s.url)
    ok_tokens = sum(d["usage"]["completion_tokens"] for d in done)
    prompt_tokens = sum(d["usage"]["prompt_tokens"] for d in done)
    gen = _value(fam["vllm:generation_tokens"], "vllm:generation_tokens_total", model_name="tiny")
    aborted_tokens = gen - ok_tokens
    assert ok_tokens == 7 + 4 * 5 and aborted_tokens >= 1
    assert _value(fam["vllm:prompt_tokens"], "vllm:prompt_tokens_total", model_name="tiny") >= prompt_tokens
    success = fam["vllm:request_success"]
    assert _value(success, "vllm:request_success_total", finished_reason="length") == 5
    assert _value(success, "vllm:request_success_total", finished_reason="abort") == 1
    ttft, itl, e2e = (fam[n] for n in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                                       "vllm:e2e_request_latency_seconds"))
    assert _value(ttft, "vllm:time_to_first_token_seconds_count", model_name="tiny") == 6
    assert _value(itl, "vllm:inter_token_latency_seconds_count", model_name="tiny") == gen - 6
    assert _value(e2e, "vllm:e2e_request_latency_seconds_count", model_name="tiny") == 6
    buckets = [s for s in ttft.samples if s.name.endswith("_bucket")]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 6
    assert all(a.value <= b.value for a, b in zip(buckets, buckets[1:]))  # cumulative
    assert 0 < _value(ttft, "vllm:time_to_first_token_seconds_sum") < 60
    assert "pcm_requests" in fam  # ours are still there


def test_upload_the_client_abandons_is_a_499_not_a_500(server, caplog):
    """Content-Length: 100, 30 bytes, then the client closes: no answer, no traceback, counted 499."""
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n" + b'{"prompt": "' + b"x" * 18)
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while True:
        fam = _families(server.url)["pcm_requests"]
        if _value(fam, "pcm_requests_total", endpoint="/v1/completions", status="499") >= 1:
            break
        assert time.monotonic() < deadline, "the aborted upload was not counted"
        time.sleep(0.05)
    assert _value(fam, "pcm_requests_total", endpoint="/v1/completions", status="499") == 1
    assert _value(fam, "pcm_requests_total", status="500") == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    lines = [r.getMessage() for r in caplog.records if "closed the connection during the upload" in r.getMessage()]
    assert lines == ["POST /v1/completions: the client closed the connection during the upload "
                     "(after 30 of 100 body bytes)"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
