"""The OpenAI-compatible HTTP server over the engine (FastAPI; run by uvicorn).

Routes: POST /v1/completions and /v1/chat/completions (JSON or SSE streaming), GET /v1/models,
/health and /metrics (Prometheus). One engine thread owns the model (`EngineRunner`); handlers
tokenize, submit, and turn engine outputs into OpenAI chunks.

Robustness: the body is parsed here (not by FastAPI) so every malformed, mistyped or out-of-range
request gets a 4xx with an OpenAI error body naming the parameter; an oversized body is a 413; a
full engine queue is a 429 with Retry-After; a draining or failed engine is a 503. A client that
disconnects (mid-stream, or while waiting for a non-streamed answer) aborts its requests, which
frees their slots at the next engine step. Shutdown stops taking requests, lets in-flight ones
finish for a grace period, then aborts the rest.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptcot_mamba.generate.chat import ReasoningStream, render_chat, split_answer
from promptcot_mamba.generate.engine import Engine, EngineError, QueueFull, SeqOutput
from promptcot_mamba.generate.runner import EngineRunner
from promptcot_mamba.serve.metrics import ServerMetrics
from promptcot_mamba.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    validation_message,
)


def _err(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


class _Server:
    """The state behind the routes: engine runner, tokenizer, limits, metrics."""

    def __init__(self, engine: Engine, model_name: str, *, reasoning: bool, default_max_tokens: int,
                 default_completion_max_tokens: int, max_body_bytes: int, shutdown_grace_s: float):
        if engine.tokenizer is None:
            raise ValueError("the server needs an engine with a tokenizer (a model folder with tokenizer.json)")
        self.engine = engine
        self.tok = engine.tokenizer
        self.runner = EngineRunner(engine)
        self.model_name = model_name
        self.reasoning = reasoning
        self.default_max_tokens = default_max_tokens
        self.default_completion_max_tokens = default_completion_max_tokens
        self.max_body_bytes = max_body_bytes
        self.shutdown_grace_s = shutdown_grace_s
        self.metrics = ServerMetrics(self.runner, model_name)
        self.created = int(time.time())

    # ----------------------------------------------------------------------------------- helpers
    async def parse(self, request: Request, model):
        ctype = request.headers.get("content-type", "")
        if ctype and "json" not in ctype:
            raise APIError(415, f"Content-Type must be application/json, got {ctype!r}")
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > self.max_body_bytes:
            raise APIError(413, f"request body of {size} bytes is over the limit of {self.max_body_bytes}")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > self.max_body_bytes:
                raise APIError(413, f"request body is over the limit of {self.max_body_bytes} bytes")
        if not raw.strip():
            raise APIError(400, "the request body is empty; expected a JSON object")
        try:
            body = model.model_validate_json(raw)
        except ValidationError as err:
            msg, param = validation_message(err)
            raise APIError(400, msg, param=param) from None
        if body.model is not None and body.model != self.model_name:
            raise APIError(404, f"the model '{body.model}' does not exist; this server serves '{self.model_name}'",
                           param="model", code="model_not_found")
        body.check_unsupported()
        if not self.runner.accepting:
            raise APIError(503, "the server is shutting down or its engine has stopped", type="server_error")
        return body

    def encode(self, prompt: str | list[int]) -> list[int]:
        ids = self.tok.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise APIError(400, "the prompt is empty (no tokens)", param="prompt")
        return ids

    def submit_all(self, prompts: list[list[int]], params, prefix: str) -> tuple[asyncio.Queue, list[str]]:
        for ids in prompts:
            try:
                self.engine.validate(ids, params)
            except EngineError as err:
                raise APIError(400, str(err), param="prompt" if "prompt" in str(err) else None) from None
        q: asyncio.Queue = asyncio.Queue()
        rids: list[str] = []
        try:
            for i, ids in enumerate(prompts):
                rid = f"{prefix}-{i}"
                self.runner.submit(ids, params, rid, q)
                rids.append(rid)
        except QueueFull as err:
            for rid in rids:
                self.runner.release(rid, abort=True)
            raise APIError(429, f"{err}; retry later", type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        except EngineError as err:
            for rid in rids:
                self.runner.release(rid, abort=True)
            raise APIError(400, str(err)) from None
        return q, rids

    async def next_output(self, q: asyncio.Queue, request: Request | None) -> SeqOutput:
        while True:
            try:
                o = await asyncio.wait_for(q.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if request is not None and await request.is_disconnected():
                    raise ConnectionAbortedError("client disconnected") from None
                continue
            if o is None:
                raise APIError(503, "the engine stopped before the request finished", type="server_error")
            if isinstance(o, BaseException):
                raise APIError(500, str(o), type="server_error")
            return o

    def token_text(self, tid: int) -> str:
        return self.tok.decode([tid], skip_special_tokens=False)


def create_app(engine: Engine, *, model_name: str = "promptcot-mamba", reasoning: bool = False,
               default_max_tokens: int = 4096, default_completion_max_tokens: int = 16,
               max_body_bytes: int = 4 * 2**20, shutdown_grace_s: float = 10.0) -> FastAPI:
    """The FastAPI app serving `engine` (which must have a tokenizer) as `model_name`."""
    srv = _Server(engine, model_name, reasoning=reasoning, default_max_tokens=default_max_tokens,
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
        body: CompletionRequest = await srv.parse(request, CompletionRequest)
        if body.suffix:
            raise APIError(400, "suffix is not supported by this server", param="suffix")
        prompts = [srv.encode(p) for p in body.prompts()]
        params = body.sampling_params(max_tokens=body.max_tokens, default_max_tokens=srv.default_completion_max_tokens,
                                      logprobs=body.logprobs)
        cid = f"cmpl-{uuid.uuid4().hex}"
        q, rids = srv.submit_all(prompts, params, cid)
        index_of = {rid: i for i, rid in enumerate(rids)}
        echo = [srv.tok.decode(p, skip_special_tokens=False) if body.echo else "" for p in prompts]
        created = int(time.time())
        n = params.n

        def lp_block(o_logprobs, offset0: int):
            if o_logprobs is None:
                return None
            toks, lps, tops, offs, off = [], [], [], [], offset0
            for lp in o_logprobs:
                t = srv.token_text(lp.token_id)
                toks.append(t)
                lps.append(lp.logprob)
                tops.append({srv.token_text(i): v for i, v in lp.top} if body.logprobs else None)
                offs.append(off)
                off += len(t)
            return {"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs}

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def sse():
                left = len(rids) * n
                counts = {rid: [0] * n for rid in rids}
                sent_echo: set[int] = set()
                offsets: dict[int, int] = {}
                try:
                    while left:
                        o = await srv.next_output(q, None)
                        i = index_of[o.request_id] * n + o.index
                        text = o.text
                        if body.echo and i not in sent_echo:
                            text = echo[index_of[o.request_id]] + text
                            sent_echo.add(i)
                        counts[o.request_id][o.index] = o.num_output_tokens
                        choice = {"index": i, "text": text, "logprobs": lp_block(o.logprobs, offsets.get(i, 0)),
                                  "finish_reason": o.finish_reason if o.finished else None,
                                  "stop_reason": o.stop_reason if o.finished else None}
                        offsets[i] = offsets.get(i, 0) + len(o.text)
                        left -= o.finished
                        yield _sse({"id": cid, "object": "text_completion", "created": created,
                                    "model": model_name, "choices": [choice]})
                    if include_usage:
                        yield _sse({"id": cid, "object": "text_completion", "created": created, "model": model_name,
                                    "choices": [], "usage": _usage(prompts, counts)})
                    yield "data: [DONE]\n\n"
                    srv.metrics.count("/v1/completions", 200)
                except APIError as err:
                    yield _sse(err.body())
                finally:
                    for rid in rids:
                        srv.runner.release(rid, abort=left > 0)

            return StreamingResponse(sse(), media_type="text/event-stream")

        texts = {rid: [""] * n for rid in rids}
        finish: dict[tuple[str, int], tuple[Any, Any]] = {}
        lps: dict[tuple[str, int], list] = {}
        counts = {rid: [0] * n for rid in rids}
        left = len(rids) * n
        try:
            while left:
                o = await srv.next_output(q, request)
                texts[o.request_id][o.index] += o.text
                if o.logprobs:
                    lps.setdefault((o.request_id, o.index), []).extend(o.logprobs)
                counts[o.request_id][o.index] = o.num_output_tokens
                if o.finished:
                    finish[(o.request_id, o.index)] = (o.finish_reason, o.stop_reason)
                    left -= 1
        except ConnectionAbortedError:
            return Response(status_code=499)
        finally:
            for rid in rids:
                srv.runner.release(rid, abort=left > 0)
        choices = []
        for rid in rids:
            for j in range(n):
                i = index_of[rid] * n + j
                fr, sr = finish[(rid, j)]
                choices.append({"index": i, "text": echo[index_of[rid]] + texts[rid][j],
                                "logprobs": lp_block(lps.get((rid, j)) if body.logprobs is not None else None, 0),
                                "finish_reason": fr, "stop_reason": sr})
        srv.metrics.count("/v1/completions", 200)
        return {"id": cid, "object": "text_completion", "created": created, "model": model_name,
                "choices": choices, "usage": _usage(prompts, counts)}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body: ChatCompletionRequest = await srv.parse(request, ChatCompletionRequest)
        try:
            prompt_text = render_chat(srv.tok, body.messages_as_dicts(),
                                      add_generation_prompt=body.add_generation_prompt,
                                      continue_final_message=body.continue_final_message)
        except ValueError as err:
            raise APIError(400, str(err), param="messages") from None
        prompts = [srv.encode(prompt_text)]
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        params = body.sampling_params(max_tokens=max_tokens, default_max_tokens=srv.default_max_tokens,
                                      logprobs=(body.top_logprobs or 0) if body.logprobs else None)
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        q, rids = srv.submit_all(prompts, params, cid)
        rid = rids[0]
        created = int(time.time())
        n = params.n

        def lp_content(o_logprobs):
            if o_logprobs is None:
                return None
            out = []
            for lp in o_logprobs:
                t = srv.token_text(lp.token_id)
                out.append({"token": t, "logprob": lp.logprob, "bytes": list(t.encode()),
                            "top_logprobs": [{"token": srv.token_text(i), "logprob": v,
                                              "bytes": list(srv.token_text(i).encode())} for i, v in lp.top]})
            return out

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def sse():
                left = n
                counts = [0] * n
                splitters = [ReasoningStream(prompt_text) if srv.reasoning else None for _ in range(n)]
                base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name}
                try:
                    for j in range(n):
                        yield _sse({**base, "choices": [{"index": j, "delta": {"role": "assistant", "content": ""},
                                                         "logprobs": None, "finish_reason": None}]})
                    while left:
                        o = await srv.next_output(q, None)
                        counts[o.index] = o.num_output_tokens
                        pieces = ([("content", o.text)] if splitters[o.index] is None
                                  else splitters[o.index].feed(o.text, final=o.finished))
                        delta: dict[str, str] = {}
                        for kind, text in pieces:
                            delta[kind] = delta.get(kind, "") + text
                        lp = lp_content(o.logprobs) if body.logprobs else None
                        if delta or o.finished or lp:
                            yield _sse({**base, "choices": [{
                                "index": o.index, "delta": delta, "logprobs": {"content": lp} if lp else None,
                                "finish_reason": o.finish_reason if o.finished else None,
                                "stop_reason": o.stop_reason if o.finished else None}]})
                        left -= o.finished
                    if include_usage:
                        yield _sse({**base, "choices": [], "usage": _usage(prompts, {rid: counts})})
                    yield "data: [DONE]\n\n"
                    srv.metrics.count("/v1/chat/completions", 200)
                except APIError as err:
                    yield _sse(err.body())
                finally:
                    srv.runner.release(rid, abort=left > 0)

            return StreamingResponse(sse(), media_type="text/event-stream")

        texts = [""] * n
        lps: list[list] = [[] for _ in range(n)]
        finish: list[tuple[Any, Any]] = [(None, None)] * n
        counts = [0] * n
        left = n
        try:
            while left:
                o = await srv.next_output(q, request)
                texts[o.index] += o.text
                if o.logprobs:
                    lps[o.index].extend(o.logprobs)
                counts[o.index] = o.num_output_tokens
                if o.finished:
                    finish[o.index] = (o.finish_reason, o.stop_reason)
                    left -= 1
        except ConnectionAbortedError:
            return Response(status_code=499)
        finally:
            srv.runner.release(rid, abort=left > 0)
        choices = []
        for j in range(n):
            msg: dict[str, Any] = {"role": "assistant", "content": texts[j]}
            if srv.reasoning:
                reasoning, content = split_answer(texts[j], prompt_text=prompt_text)
                msg = {"role": "assistant", "content": content, "reasoning_content": reasoning}
            choices.append({"index": j, "message": msg,
                            "logprobs": {"content": lp_content(lps[j])} if body.logprobs else None,
                            "finish_reason": finish[j][0], "stop_reason": finish[j][1]})
        srv.metrics.count("/v1/chat/completions", 200)
        return {"id": cid, "object": "chat.completion", "created": created, "model": model_name,
                "choices": choices, "usage": _usage(prompts, {rid: counts})}

    return app


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _usage(prompts: list[list[int]], counts: dict[str, list[int]]) -> dict[str, int]:
    p = sum(len(x) for x in prompts)
    c = sum(sum(v) for v in counts.values())
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
