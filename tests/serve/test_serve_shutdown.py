"""`pcm serve` stopped under load, as a process on 127.0.0.1: SIGTERM with streamed and non-streamed
requests in flight stops admitting (503 for new requests and /health), gives the requests in progress
the grace period, then aborts the rest, each answered (streams end with a last chunk whose
finish_reason is "abort" and [DONE], other requests get a JSON error body), with no traceback in the
log and the exit within the grace period + 2 s. A second signal ends the grace period at once."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest
from pcm_live_server import ServeProcess

from promptcot_mamba.generate.tiny import save_tiny_model

LONG = {"prompt": "hello", "max_tokens": 100000, "ignore_eos": True, "temperature": 0}
CHAT_LONG = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000, "ignore_eos": True}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


async def _stream(c: httpx.AsyncClient, path: str, body: dict) -> tuple[list, float]:
    """The data lines of a stream (JSON-decoded but [DONE]) and when the last one came."""
    lines: list = []
    async with c.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                lines.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
    return lines, time.monotonic()


async def _post(c: httpx.AsyncClient, path: str, body: dict) -> tuple[httpx.Response, float]:
    r = await c.post(path, json=body)
    return r, time.monotonic()


async def _until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _running(c: httpx.AsyncClient, n: int) -> bool:
    r = await c.get("/health")
    return r.status_code == 200 and r.json()["running"] >= n


def _assert_aborted_stream(lines: list) -> None:
    assert lines[-1] == "[DONE]", lines[-3:]
    finishes = [ch["finish_reason"] for c in lines[:-1] for ch in c.get("choices", ())]
    assert finishes[-1] == "abort", finishes[-3:]


def _assert_clean_log(log: str) -> None:
    for bad in ("Traceback", "CancelledError", "Exception in ASGI application", "Internal Server Error"):
        assert bad not in log, log[-3000:]


def test_sigterm_under_load(folder, tmp_path):
    grace = 2.0
    with ServeProcess(folder, tmp_path / "serve.log", "--shutdown-grace", str(grace), "--max-slots", "8") as s:
        async def main():
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as c:
                streams = [asyncio.create_task(_stream(c, "/v1/completions", LONG)) for _ in range(2)]
                streams.append(asyncio.create_task(_stream(c, "/v1/chat/completions", CHAT_LONG)))
                bodies = [asyncio.create_task(_post(c, "/v1/completions", LONG)),
                          asyncio.create_task(_post(c, "/v1/chat/completions", CHAT_LONG))]
                await _until(lambda: _running(c, 5))
                # one that finishes within the grace period, in flight when the signal comes
                short = asyncio.create_task(_post(c, "/v1/completions", {**LONG, "max_tokens": 50}))
                await _until(lambda: _running(c, 6))
                t0 = s.signal(signal.SIGTERM)
                async with httpx.AsyncClient(base_url=s.url, timeout=30) as fresh:  # new connections
                    await _until(lambda: _status(fresh, "/health", 503), timeout=5)
                    health = (await fresh.get("/health")).json()
                    new = await fresh.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
                return t0, health, new, await asyncio.gather(*streams), await asyncio.gather(*bodies), await short

        t0, health, new, streams, bodies, short = asyncio.run(main())
        rc = s.wait(grace + 10)
        t_exit = time.monotonic()
        log = s.log()
    assert health["status"] == "draining"
    assert new.status_code == 503 and new.json()["error"]["type"] == "server_error"
    r, _ = short
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"  # it had the grace
    for lines, t_end in streams:
        _assert_aborted_stream(lines)
        assert t_end - t0 >= grace - 0.2  # aborted at the deadline, not before
    for r, t_end in bodies:
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/json" and r.json()["error"]["message"]
        assert t_end - t0 >= grace - 0.2
    assert rc == 0, log[-3000:]
    assert t_exit - t0 <= grace + 2.0, (t_exit - t0, log[-3000:])
    _assert_clean_log(log)
    assert "aborted 5 unfinished requests" in log and "pcm serve: stopped" in log


async def _status(c: httpx.AsyncClient, path: str, status: int) -> bool:
    try:
        return (await c.get(path)).status_code == status
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_ends_the_grace_period_at_once(folder, tmp_path, second):
    with ServeProcess(folder, tmp_path / "serve.log", "--shutdown-grace", "60", "--max-slots", "4") as s:
        async def main():
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as c:
                stream = asyncio.create_task(_stream(c, "/v1/completions", LONG))
                body = asyncio.create_task(_post(c, "/v1/completions", LONG))
                await _until(lambda: _running(c, 2))
                s.signal(signal.SIGTERM)
                async with httpx.AsyncClient(base_url=s.url, timeout=30) as fresh:
                    await _until(lambda: _status(fresh, "/health", 503), timeout=5)
                await asyncio.sleep(0.3)  # draining, with 60 s of grace left
                t1 = s.signal(second)
                return t1, await stream, await body

        t1, (lines, _), (r, _) = asyncio.run(main())
        rc = s.wait(10)
        t_exit = time.monotonic()
        log = s.log()
    assert t_exit - t1 < 2.5, log[-3000:]  # by itself, before the 3 s backstop
    assert rc == 1 and "pcm serve: stopped (forced by a second signal)" in log, log[-3000:]
    _assert_aborted_stream(lines)
    assert r.status_code == 503 and r.json()["error"]["message"]
    _assert_clean_log(log)
