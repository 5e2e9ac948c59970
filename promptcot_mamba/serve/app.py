"""The OpenAI-compatible HTTP server over the engine (FastAPI; run by uvicorn through `Server`).

Routes: POST /v1/completions and /v1/chat/completions (JSON or SSE streaming; responses.py), GET
/v1/models and /v1/models/{id}; vLLM's POST /tokenize and /detokenize and GET /version; /health and
/metrics (Prometheus, with vLLM's metric names too). One engine thread owns the model (`EngineRunner`,
runner.py); `ServerState` (server.py) parses, tokenizes and submits.

Robustness: the body is parsed by the server (not by FastAPI) so every malformed, mistyped or
out-of-range request gets a 4xx with an OpenAI error body naming the parameter; an oversized body is
a 413; a full engine queue is a 429 with Retry-After; a draining or failed engine is a 503. A client
that disconnects (mid-stream, or while waiting for a non-streamed answer) aborts its requests, which
frees their slots at the next engine step; one that goes away during its upload gets nothing (counted
as 499). Every response carries an X-Request-Id (the client's, echoed, else a new one), a 405 its
Allow header. Shutdown (`Server`): stop admitting, let the requests in progress finish for a grace
period, then abort the rest, each answered properly; a second signal ends the grace period at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import uuid
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Path, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptcot_mamba import __version__
from promptcot_mamba.generate.engine import Engine
from promptcot_mamba.serve.chat import render_chat
from promptcot_mamba.serve.protocol import APIError, ChatCompletionRequest, CompletionRequest
from promptcot_mamba.serve.responses import chat_complete, complete
from promptcot_mamba.serve.server import ClientGone, DetokenizeRequest, ServerState, TokenizeRequest

log = logging.getLogger("promptcot_mamba.serve")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """The OpenAI error body every 4xx/5xx answer has."""

    error: ErrorDetail


def _err(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _body(model: type[BaseModel], example: dict, *statuses: int, stream: bool = False) -> dict[str, Any]:
    """OpenAPI for a route whose JSON body the server parses itself (ServerState.parse): the body's
    schema (from the pydantic model; put into the components by `openapi` in create_app), an example,
    and the answers."""
    ok: dict[str, Any] = {"application/json": {}}
    if stream:
        ok["text/event-stream"] = {}
    return {"openapi_extra": {"requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}, "example": example}}}},
            "responses": {200: {"content": ok}, **_errors(*statuses)}}


def _errors(*statuses: int) -> dict[int, dict]:
    return {s: {"model": ErrorBody, "description": "an OpenAI error body"} for s in statuses}


_REQUEST_MODELS = (CompletionRequest, ChatCompletionRequest, TokenizeRequest, DetokenizeRequest)
_POST_ERRORS = (400, 404, 413, 415, 503)
_COMPLETION = _body(CompletionRequest, {"prompt": "Let x be", "max_tokens": 8}, *_POST_ERRORS, 429, stream=True)
_CHAT = _body(ChatCompletionRequest, {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8},
              *_POST_ERRORS, 429, stream=True)
_TOKENIZE = _body(TokenizeRequest, {"prompt": "hello world"}, *_POST_ERRORS)
_DETOKENIZE = _body(DetokenizeRequest, {"tokens": [1, 2, 3]}, *_POST_ERRORS)


class _Outer:
    """The outermost ASGI layer (outside Starlette's error middleware, so it sees every response, a
    500 too): adds X-Request-Id (the client's own, echoed as vLLM does, else a new one) and counts the
    HTTP requests in progress, which the shutdown drain waits for."""

    def __init__(self, app, srv: ServerState):
        self.app, self.srv = app, srv

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = next((v for k, v in scope["headers"] if k == b"x-request-id"), None) or uuid.uuid4().hex.encode()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rid)]}
            await send(message)

        self.srv.http_in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.srv.http_in_flight -= 1


class _App(FastAPI):
    def build_middleware_stack(self):
        return _Outer(super().build_middleware_stack(), self.state.server)


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

    app = _App(title="promptcot-mamba", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = srv

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        srv.metrics.count(request.url.path, exc.status)
        return _err(exc)

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, exc: ClientGone):
        # nothing can be answered (uvicorn drops what is sent to a closed connection); 499 as nginx counts it
        srv.metrics.count(request.url.path, 499)
        log.info("%s %s: the client closed the connection during the upload (%s)", request.method,
                 request.url.path, exc)
        return Response(status_code=499)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        msg = {404: f"no route {request.url.path}", 405: f"method {request.method} is not allowed on "
               f"{request.url.path}"}.get(exc.status_code, str(exc.detail))
        return _err(APIError(exc.status_code, msg, code="not_found" if exc.status_code == 404 else None,
                             headers=exc.headers))  # a 405's Allow header among them

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        srv.metrics.count(request.url.path, 500)
        return _err(APIError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error"))

    @app.get("/health", responses={503: {"description": "draining at shutdown, or the engine failed"}})
    async def health():
        if srv.draining:
            return JSONResponse({"status": "draining", "running": engine.num_running, "waiting": engine.num_waiting,
                                 "accepting": False}, status_code=503)
        if srv.runner.alive:
            return {"status": "ok", "running": engine.num_running, "waiting": engine.num_waiting,
                    "accepting": srv.runner.accepting}
        return JSONResponse({"status": "error", "error": repr(srv.runner.error)}, status_code=503)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics():
        return Response(srv.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/version")
    async def version():
        return {"version": __version__}

    def card() -> dict:
        return {"id": model_name, "object": "model", "created": srv.created, "owned_by": "promptcot-mamba",
                "max_model_len": srv.max_model_len, "max_slots": engine.max_slots,
                "dtype": engine.model_settings["dtype"], "quantization": engine.model_settings["quantization"]}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [card()]}

    @app.get("/v1/models/{model_id:path}", responses=_errors(404))
    async def model(model_id: str = Path(examples=[model_name])):
        if model_id != model_name:
            raise APIError(404, f"the model '{model_id}' does not exist; this server serves '{model_name}'",
                           param="model", code="model_not_found")
        return card()

    @app.post("/v1/completions", **_COMPLETION)
    async def completions(request: Request):
        return await complete(srv, request, await srv.parse(request, CompletionRequest))

    @app.post("/v1/chat/completions", **_CHAT)
    async def chat(request: Request):
        return await chat_complete(srv, request, await srv.parse(request, ChatCompletionRequest))

    @app.post("/tokenize", **_TOKENIZE)
    async def tokenize(request: Request):
        """vLLM's /tokenize: a prompt, or chat messages rendered with the template, to token ids."""
        body = await srv.parse(request, TokenizeRequest)
        text = body.prompt
        if body.messages is not None:
            msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
            try:
                text = render_chat(srv.tok, msgs, add_generation_prompt=body.add_generation_prompt,
                                   continue_final_message=body.continue_final_message,
                                   template_kwargs=body.chat_template_kwargs)
            except ValueError as err:
                raise APIError(400, str(err), param="messages") from None
        ids = (await srv.encode_all([text], add_special_tokens=body.add_special_tokens))[0] if text else []
        srv.metrics.count("/tokenize", 200)
        return {"count": len(ids), "max_model_len": srv.max_model_len, "tokens": ids,
                "token_strs": [srv.token_text(t) for t in ids] if body.return_token_strs else None}

    @app.post("/detokenize", **_DETOKENIZE)
    async def detokenize(request: Request):
        """vLLM's /detokenize: token ids to text (special tokens kept)."""
        body = await srv.parse(request, DetokenizeRequest)
        bad = next((t for t in body.tokens if not 0 <= t < srv.tok.vocab_size), None)
        if bad is not None:
            raise APIError(400, f"token id {bad} is outside the vocabulary [0, {srv.tok.vocab_size})", param="tokens")
        text = await srv.decode(body.tokens)
        srv.metrics.count("/detokenize", 200)
        return {"prompt": text}

    def openapi() -> dict:
        """FastAPI's schema, plus the request bodies' models (referenced by `_body`)."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for m in _REQUEST_MODELS:
                js = m.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(js.pop("$defs", {}))
                # the one model id this server answers to (another is a 404)
                js["properties"]["model"] = {"anyOf": [{"enum": [model_name]}, {"type": "null"}], "default": None}
                components[m.__name__] = js
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


class Server(uvicorn.Server):
    """uvicorn's server with the shutdown this API promises.

    Left to itself, uvicorn on SIGTERM/SIGINT stops listening, waits for the connections, cancels the
    handlers still running and only then runs the app's lifespan shutdown: clients got a cut stream or
    a plain-text 500 and the log a CancelledError traceback each. Here the app drains first, while it
    still listens (`ServerState.drain`: 503 for new requests and /health, the grace period, then the
    rest aborted and answered), and uvicorn then closes a server with nothing left to cancel. A second
    signal ends the grace period at once; should the process still be there 3 s later, it exits."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.srv: ServerState = config.app.state.server

    def handle_exit(self, sig, frame) -> None:
        # not recorded for uvicorn to raise again after serving: the drain is the whole answer to it
        if not self.should_exit:
            self.should_exit = True
            return
        if not self.srv.forced:
            log.warning("second signal: aborting the requests in progress and exiting now")
            self.srv.forced = True
            timer = threading.Timer(3.0, _exit_now)
            timer.daemon = True  # it dies with the process
            timer.start()

    async def shutdown(self, sockets=None) -> None:
        await self.srv.drain()
        await super().shutdown(sockets=sockets)


def _exit_now() -> None:
    log.error("still running 3 s after the second signal: exiting without cleaning up")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(1)
