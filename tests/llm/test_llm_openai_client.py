"""OpenAIClient against a scripted OpenAI-compatible endpoint on 127.0.0.1 (real HTTP, uvicorn)."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from promptcot_mamba.llm import Generation, GenerationRequest, LLMClient  # noqa: E402
from promptcot_mamba.llm.openai_client import OpenAIClient, RetryPolicy, _parse_retry_after  # noqa: E402
from promptcot_mamba.llm.scripted_server import FaultPlan, ScriptedEndpoint, serve_in_thread  # noqa: E402


def _client(url, **kw):
    kw.setdefault("max_retries", 3)
    kw.setdefault("backoff_base_s", 0.001)
    kw.setdefault("backoff_max_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return OpenAIClient(url, api_key="sk-test", model="scripted", jitter_seed=0, **kw)


def test_completions_and_chat_roundtrip_with_body_fields():
    ep = ScriptedEndpoint(keep_bodies=True)
    with serve_in_thread(ep.app()) as url:
        c = _client(url)
        assert isinstance(c, LLMClient)
        reqs = [
            GenerationRequest(prompt="hello", n=3, seed=7, stop=("\n\n",), top_k=20, min_p=0.05,
                              repetition_penalty=1.1, min_tokens=4, max_tokens=32, temperature=0.8),
            GenerationRequest(messages=({"role": "user", "content": "hi there"},), max_tokens=16),
        ]
        out = c.generate(reqs)
    assert [len(o) for o in out] == [3, 1]
    assert all(g.ok for o in out for g in o)
    assert out[0][2].text.startswith("echo[2|seed=7]")
    assert out[1][0].text.endswith("hi there")
    b0, b1 = sorted(ep.bodies, key=lambda b: "messages" in b)
    assert b0["prompt"] == "hello" and b0["n"] == 3 and b0["seed"] == 7 and b0["stop"] == ["\n\n"]
    assert (b0["top_k"], b0["min_p"], b0["repetition_penalty"], b0["min_tokens"]) == (20, 0.05, 1.1, 4)
    assert b1["messages"] == [{"role": "user", "content": "hi there"}]
    # neutral extras are not sent to a possibly strict endpoint
    assert "top_k" not in b1 and "repetition_penalty" not in b1 and "seed" not in b1


def test_prefix_is_sent_as_a_continued_assistant_message():
    c = OpenAIClient("http://127.0.0.1:9/v1", api_key="k", model="m")
    msgs = ({"role": "user", "content": "q"},)
    route, body = c.build_body("m", GenerationRequest(messages=msgs, prefix="<think>\n"))
    assert route == "/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\n"}]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    _, plain = c.build_body("m", GenerationRequest(messages=msgs))
    assert "continue_final_message" not in plain and len(plain["messages"]) == 1
    with pytest.raises(ValueError, match="chat requests"):
        GenerationRequest(prompt="p", prefix="x")


def test_env_defaults_and_model_discovery(monkeypatch):
    ep = ScriptedEndpoint(model="served-model")
    with serve_in_thread(ep.app()) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url.removesuffix("/v1"))  # bare host gets /v1
        monkeypatch.setenv("OPENAI_API_KEY", "k")
        monkeypatch.delenv("OPENAI_MODEL", raising=False)
        c = OpenAIClient()
        assert c.base_url == url and c.api_key == "k"
        out = c.generate([GenerationRequest(prompt="x")])
        assert out[0][0].ok and c.model == "served-model"


def test_missing_base_url_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        OpenAIClient()


def test_fault_injection_every_request_ends_ok_or_with_reason():
    # A fifth of calls fail with 5xx, plus rate limits, hangs, drops and malformed bodies.
    plan = FaultPlan(server_error=0.2, rate_limit=0.05, hang=0.05, malformed=0.1, drop=0.05,
                     hang_s=1.0, seed=3)
    ep = ScriptedEndpoint(faults=plan)
    with serve_in_thread(ep.app()) as url:
        c = _client(url, timeout_s=0.3, max_retries=4, max_concurrency=16)
        reqs = [GenerationRequest(prompt=f"p{i}", n=2, seed=i) for i in range(120)]
        out = c.generate(reqs)
    assert len(out) == 120 and all(len(o) == 2 for o in out)
    for i, o in enumerate(out):
        for j, g in enumerate(o):
            if g.ok:
                assert g.text.startswith(f"echo[{j}|seed={i}]") and g.text.endswith(f"p{i}")
            else:
                assert g.error and g.text == ""
    ok = sum(g.ok for o in out for g in o)
    # with 4 retries and a 45% fault rate, almost everything eventually succeeds
    assert ok >= 0.95 * 240, ep.counts
    for kind in ("server_error", "rate_limit", "hang", "malformed", "drop"):
        assert ep.counts[kind] > 0, (kind, ep.counts)
    assert c.stats["retries"] > 0


def test_persistent_failure_gives_errors_not_exceptions():
    ep = ScriptedEndpoint(faults=FaultPlan(server_error=1.0))
    with serve_in_thread(ep.app()) as url:
        c = _client(url, max_retries=2)
        out = c.generate([GenerationRequest(prompt="a", n=3), GenerationRequest(prompt="b")])
    assert [len(o) for o in out] == [3, 1]
    assert all(not g.ok and "HTTP 50" in g.error and "3 attempts" in g.error for o in out for g in o)
    assert ep.counts["calls"] == 2 * 3


def test_malformed_forever_and_timeout_reasons():
    ep = ScriptedEndpoint(faults=FaultPlan(malformed=1.0))
    with serve_in_thread(ep.app()) as url:
        out = _client(url, max_retries=1).generate([GenerationRequest(prompt="a")])
    assert "malformed response" in out[0][0].error
    ep = ScriptedEndpoint(faults=FaultPlan(hang=1.0, hang_s=2.0))
    with serve_in_thread(ep.app()) as url:
        out = _client(url, max_retries=0, timeout_s=0.2).generate([GenerationRequest(prompt="a")])
    assert "timeout" in out[0][0].error


def test_4xx_is_not_retried():
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()
    calls = []

    @app.post("/v1/completions")
    async def bad(_: dict):
        calls.append(1)
        return PlainTextResponse("unknown model", status_code=404)

    with serve_in_thread(app) as url:
        out = _client(url, max_retries=5).generate([GenerationRequest(prompt="a")])
    assert "HTTP 404" in out[0][0].error and len(calls) == 1


def test_retry_after_is_honoured():
    ep = ScriptedEndpoint(faults=FaultPlan(rate_limit=1.0, retry_after_s=0.25))
    with serve_in_thread(ep.app()) as url:
        t0 = time.perf_counter()
        out = _client(url, max_retries=2).generate([GenerationRequest(prompt="a")])
        dt = time.perf_counter() - t0
    assert "HTTP 429" in out[0][0].error
    assert dt >= 0.45  # two waits of Retry-After=0.25 s, not the 1 ms backoff


def test_concurrency_is_bounded():
    ep = ScriptedEndpoint(latency_s=0.05)
    active = {"now": 0, "max": 0}
    inner = ep.responder

    def responder(route, body, i):
        return inner(route, body, i)

    ep.responder = responder
    app = ep.app()

    @app.middleware("http")
    async def track(request, call_next):
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        try:
            return await call_next(request)
        finally:
            active["now"] -= 1

    with serve_in_thread(app) as url:
        out = _client(url, max_concurrency=4).generate([GenerationRequest(prompt=str(i)) for i in range(20)])
    assert all(o[0].ok for o in out)
    assert 1 < active["max"] <= 4


def test_generate_from_inside_a_running_loop():
    ep = ScriptedEndpoint()
    with serve_in_thread(ep.app()) as url:
        c = _client(url)

        async def main():
            return c.generate([GenerationRequest(prompt="z")])

        out = asyncio.run(main())
    assert out[0][0].ok


def test_reasoning_content_is_merged_into_think_layout():
    c = OpenAIClient("http://127.0.0.1:1/v1", model="m")
    req = GenerationRequest(messages=({"role": "user", "content": "q"},))
    gens = c._parse_choices({"choices": [{"index": 0, "message": {"content": "42", "reasoning_content": "hmm"},
                                          "finish_reason": "stop"}]}, "/chat/completions", req)
    assert gens[0].text == "<think>\nhmm\n</think>\n\n42"


def test_retry_policy_and_retry_after_parsing():
    import random

    pol = RetryPolicy(max_retries=3, backoff_base_s=1.0, backoff_max_s=4.0)
    rng = random.Random(0)
    for attempt in range(6):
        d = pol.delay(attempt, None, rng)
        assert 0 <= d <= min(4.0, 2 ** attempt)
    assert pol.delay(0, 100.0, rng) == 60.0  # capped
    assert _parse_retry_after("2.5") == 2.5
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert _parse_retry_after("garbage") is None
    assert isinstance(Generation(text="x"), Generation)
