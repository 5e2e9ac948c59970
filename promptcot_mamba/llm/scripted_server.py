"""A scripted OpenAI-compatible endpoint with fault injection, served on 127.0.0.1 over real HTTP.

Used by the tests and benchmarks of the synthesis pipeline (and usable by anyone who wants to
exercise a client against a misbehaving server): a `responder` decides the text of each choice,
and a `FaultPlan` makes a chosen fraction of calls fail with 5xx, 429 + Retry-After, a hang longer
than the client's timeout, a dropped connection, or a malformed body. The faults are drawn from a
seeded RNG so a test run is reproducible in its mix, and every call is counted.

Needs the `serve` extra (fastapi, uvicorn).
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` annotation.

import asyncio
import contextlib
import logging
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# responder(route, body, choice_index) -> text. route is "completions" or "chat".
Responder = Callable[[str, dict[str, Any], int], str]


def echo_responder(route: str, body: dict[str, Any], i: int) -> str:
    """Answers with a deterministic function of the prompt, seed and choice index."""
    if route == "chat":
        src = (body.get("messages") or [{}])[-1].get("content", "")
    else:
        src = body.get("prompt", "")
    return f"echo[{i}|seed={body.get('seed')}]: {str(src)[-40:]}"


@dataclass
class FaultPlan:
    """Probabilities (per call, exclusive, summing to <= 1) of each injected fault."""

    server_error: float = 0.0  # HTTP 500/502/503
    rate_limit: float = 0.0  # HTTP 429 with Retry-After
    hang: float = 0.0  # sleep `hang_s` before answering (a client timeout)
    malformed: float = 0.0  # 200 with a body that is not a valid completion
    drop: float = 0.0  # close the connection without a response
    hang_s: float = 5.0
    retry_after_s: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        total = self.server_error + self.rate_limit + self.hang + self.malformed + self.drop
        if total > 1.0 + 1e-9 or min(self.server_error, self.rate_limit, self.hang, self.malformed,
                                     self.drop) < 0:
            raise ValueError(f"FaultPlan probabilities must be >= 0 and sum to <= 1, got {total}")


@dataclass
class ScriptedEndpoint:
    responder: Responder = echo_responder
    faults: FaultPlan = field(default_factory=FaultPlan)
    model: str = "scripted"
    latency_s: float = 0.0
    counts: Counter = field(default_factory=Counter)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    keep_bodies: bool = False

    def __post_init__(self) -> None:
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()

    def _draw_fault(self) -> str | None:
        f = self.faults
        with self._lock:
            u = self._rng.random()
        for name, p in (("server_error", f.server_error), ("rate_limit", f.rate_limit), ("hang", f.hang),
                        ("malformed", f.malformed), ("drop", f.drop)):
            if u < p:
                return name
            u -= p
        return None

    def app(self):
        try:
            from fastapi import FastAPI, Request
            from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("the scripted endpoint needs the 'serve' extra: "
                              "pip install 'promptcot-mamba[serve]'") from err

        app = FastAPI()
        ep = self

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": ep.model, "object": "model"}]}

        async def handle(route: str, request: Request):
            body = await request.json()
            ep.counts["calls"] += 1
            if ep.keep_bodies:
                ep.bodies.append(body)
            fault = ep._draw_fault()
            if fault:
                ep.counts[fault] += 1
            if fault == "server_error":
                return PlainTextResponse("injected failure", status_code=random.choice([500, 502, 503]))
            if fault == "rate_limit":
                return PlainTextResponse("slow down", status_code=429,
                                         headers={"Retry-After": f"{ep.faults.retry_after_s:g}"})
            if fault == "hang":
                await asyncio.sleep(ep.faults.hang_s)
            if fault == "drop":
                # A streamed body that dies half-way: uvicorn aborts the connection mid-response,
                # which the client sees as a transport error (a crashed or restarted server).
                async def dying():
                    yield b'{"choices": ['
                    raise ConnectionAbortedError("injected connection drop")

                return StreamingResponse(dying(), media_type="application/json")
            if fault == "malformed":
                kind = random.choice(["text", "nochoices", "wrongn"])
                if kind == "text":
                    return PlainTextResponse("<html>502 bad gateway</html>", status_code=200)
                if kind == "nochoices":
                    return JSONResponse({"id": "x", "object": "text_completion"})
                return JSONResponse({"choices": []})
            if ep.latency_s:
                await asyncio.sleep(ep.latency_s)
            n = int(body.get("n", 1))
            texts = [ep.responder(route, body, i) for i in range(n)]
            if route == "chat":
                choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                           for i, t in enumerate(texts)]
                obj = "chat.completion"
            else:
                choices = [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]
                obj = "text_completion"
            ep.counts["ok"] += 1
            return JSONResponse({"id": f"cmpl-{ep.counts['calls']}", "object": obj, "created": int(time.time()),
                                 "model": ep.model, "choices": choices,
                                 "usage": {"prompt_tokens": 0, "completion_tokens": sum(len(t.split())
                                                                                        for t in texts)}})

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await handle("completions", request)

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await handle("chat", request)

        return app


_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", lifespan: str = "off") -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free port of `host` in a daemon thread; yields the base
    URL (`http://host:port/v1`) and stops the server on exit. `lifespan="on"` for apps that start
    work in their lifespan (our `pcm serve` app starts its engine thread there)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    # uvicorn's default log_config goes through logging.config.dictConfig, which flushes and closes every
    # logging handler of the host process; log_config=None skips that. log_level and access_log still
    # change uvicorn's own loggers process-wide: saved here and put back when the server stops.
    saved = [(lg, lg.level, lg.handlers[:], lg.propagate) for lg in map(logging.getLogger, _UVICORN_LOGGERS)]
    config = uvicorn.Config(app, log_config=None, log_level="error", access_log=False, lifespan=lifespan,
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"scripted-endpoint:{port}")
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started:
            if time.time() > deadline or not thread.is_alive():
                raise RuntimeError("scripted endpoint did not start")
            time.sleep(0.01)
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        for lg, level, handlers, propagate in saved:
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate = propagate
