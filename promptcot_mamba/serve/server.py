"""The state behind the server's routes: the engine runner, the tokenizer, the limits, the metrics;
request parsing (strict, size-limited, every error an OpenAI error body naming the parameter),
tokenization and submission of a call's requests to the engine."""

from __future__ import annotations

import asyncio
import time

from fastapi import Request
from pydantic import ValidationError

from promptcot_mamba.generate.engine import Engine, EngineError, QueueFull
from promptcot_mamba.generate.sampling import SamplingParams
from promptcot_mamba.serve.metrics import ServerMetrics
from promptcot_mamba.serve.protocol import APIError, validation_message
from promptcot_mamba.serve.runner import EngineRunner


class ServerState:
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

    async def encode_all(self, prompts: list[str | list[int]]) -> list[list[int]]:
        """Token ids of every prompt, tokenized on a worker thread so the event loop (other streams,
        /health) keeps running while a long prompt is tokenized."""
        return await asyncio.to_thread(lambda: [self.encode(p) for p in prompts])

    def submit_all(self, out, params: SamplingParams) -> None:
        """Submit the call's requests, one per prompt (all or none), with their outputs going to `out`."""
        for ids in out.prompts:
            try:
                self.engine.validate(ids, params)
            except EngineError as err:
                raise APIError(400, str(err), param=err.param) from None
        submitted: list[str] = []
        try:
            for ids, rid in zip(out.prompts, out.rids):
                self.runner.submit(ids, params, rid, out.queue)
                submitted.append(rid)
        except (QueueFull, EngineError) as err:
            for rid in submitted:
                self.runner.release(rid, abort=True)
            if isinstance(err, QueueFull):
                raise APIError(429, f"{err}; retry later", type="rate_limit_error", code="queue_full",
                               headers={"Retry-After": "1"}) from None
            raise APIError(400, str(err), param=err.param) from None

    def token_text(self, tid: int) -> str:
        return self.tok.decode([tid], skip_special_tokens=False)
