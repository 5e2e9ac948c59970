"""The OpenAI-compatible HTTP server over the engine (FastAPI; run by uvicorn).

Routes: POST /v1/completions and /v1/chat/completions (JSON or SSE streaming; responses.py), GET
/v1/models, /health and /metrics (Prometheus). One engine thread owns the model (`EngineRunner`,
runner.py); `ServerState` (server.py) parses, tokenizes and submits.

Robustness: the body is parsed by the server (not by FastAPI) so every malformed, mistyped or
out-of-range request gets a 4xx with an OpenAI error body naming the parameter; an oversized body is
a 413; a full engine queue is a 429 with Retry-After; a draining or failed engine is a 503. A client
that disconnects (mid-stream, or while waiting for a non-streamed answer) aborts its requests, which
frees their slots at the next engine step. Shutdown stops taking requests, lets in-flight ones
finish for a grace period, then aborts the rest.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptcot_mamba.generate.engine import Engine
from promptcot_mamba.serve.protocol import APIError, ChatCompletionRequest, CompletionRequest
from promptcot_mamba.serve.responses import chat_complete, complete
from promptcot_mamba.serve.server import ServerState


def _err(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def create_app(engine: Engine, *, model_name: str = "promptcot-mamba", reasoning: bool = False,
               default_max_tokens: int = 4096, default_completion_max_tokens: int = 16,
               max_body_bytes: int = 4 * 2**20, shutdown_grace_s: float = 10.0) -> FastAPI:
    """The FastAPI app serving `engine` (which must have a tokenizer) as `model_name`."""
    srv = ServerState(engine, model_name, reasoning=reasoning, default_max_tokens=default_max_tokens,
                  default_completion_max_tokens=default_completion_max_tokens, max_body_bytes=max_body_bytes,
                  shutdown_grace_s=shutdown_grace_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        srv.runner.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            await srv.runner.shutdown(srv.shutdown_grace_s)

    app = FastAPI(title="promptcot-mamba", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = srv

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        srv.metrics.count(request.url.path, exc.status)
        return _err(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        msg = {404: f"no route {request.url.path}", 405: f"method {request.method} is not allowed on "
               f"{request.url.path}"}.get(exc.status_code, str(exc.detail))
        return _err(APIError(exc.status_code, msg, code="not_found" if exc.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        srv.metrics.count(request.url.path, 500)
        return _err(APIError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error"))

    @app.get("/health")
    async def health():
        if srv.runner.alive:
            return {"status": "ok", "running": engine.num_running, "waiting": engine.num_waiting,
                    "accepting": srv.runner.accepting}
        return JSONResponse({"status": "error", "error": repr(srv.runner.error)}, status_code=503)

    @app.get("/metrics")
    async def metrics():
        return Response(srv.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{
            "id": model_name, "object": "model", "created": srv.created, "owned_by": "promptcot-mamba",
            "max_model_len": engine.config.max_prompt_tokens + engine.config.max_new_tokens,
            "max_slots": engine.max_slots}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(srv, request, await srv.parse(request, CompletionRequest))

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await chat_complete(srv, request, await srv.parse(request, ChatCompletionRequest))

    return app
