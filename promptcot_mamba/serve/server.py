"""The state behind the server's routes: the engine runner, the tokenizer, the limits, the metrics;
request parsing (strict, size-limited, every error an OpenAI error body naming the parameter),
tokenization and submission of a call's requests to the engine, and the drain at shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect

from promptcot_mamba.generate.engine import Engine, EngineError, QueueFull
from promptcot_mamba.generate.sampling import SamplingParams
from promptcot_mamba.serve.metrics import ServerMetrics
from promptcot_mamba.serve.protocol import APIError, ChatMessage, validation_message
from promptcot_mamba.serve.runner import EngineRunner

log = logging.getLogger("promptcot_mamba.serve")

# Prompts up to this many characters are tokenized on the event loop (and id lists up to this many
# detokenized): ~1 µs a character with the test tokenizer (a 3.8 MB prompt took 3.2 s), so at most
# ~0.5 ms, less than a hop to a worker thread costs under load. Longer ones go to a worker thread.
INLINE_WORK = 512


class ClientGone(Exception):
    """The client closed the connection before its request body was complete (no one to answer)."""


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize body: `prompt` (a completion prompt) or `messages` (rendered with the chat
    template first), never both."""

    model_config = ConfigDict(strict=True, extra="ignore")
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    # false by default (vLLM's default is true for prompts): the count then is what /v1/completions uses
    add_special_tokens: bool = False
    return_token_strs: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    chat_template: str | None = None  # refused when given: this server uses the model's template only

    def check_unsupported(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise APIError(400, "give exactly one of 'prompt' and 'messages'", param="prompt")
        if self.chat_template is not None:
            raise APIError(400, "chat_template is not supported; the model's own template is used",
                           param="chat_template")


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    model: str | None = None
    tokens: list[int]

    def check_unsupported(self) -> None:
        pass


def max_chars_per_token(tok) -> int | None:
    """The most input characters one token can stand for, when that is bounded: a byte-level BPE
    without a normalizer whose vocabulary has all 256 byte symbols turns every input byte into part of
    a vocabulary token (or of an added token, matched verbatim), so a token covers at most as many
    characters as its longest entry has. Then a prompt of c characters has at least c / that many
    tokens. None for other tokenizers (a WordPiece `[UNK]` can stand for a whole word)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import pre_tokenizers

    fast = getattr(tok, "backend", None)
    if not isinstance(fast, HFTokenizer):
        return None
    spec = json.loads(fast.to_str())
    pre = spec.get("pre_tokenizer") or {}
    pres = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    model = spec.get("model") or {}
    if (model.get("type") != "BPE" or spec.get("normalizer") is not None
            or not any(p.get("type") == "ByteLevel" for p in pres)):
        return None
    vocab = model.get("vocab") or {}
    if not all(ch in vocab for ch in pre_tokenizers.ByteLevel.alphabet()):
        return None
    added = [len(t.get("content", "")) for t in spec.get("added_tokens") or ()]
    return max([len(t) for t in vocab] + added)


class ServerState:
    """The state behind the routes: engine runner, tokenizer, limits, metrics, and the shutdown drain."""

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
        self.max_prompt_tokens = engine.config.max_prompt_tokens
        self.max_model_len = engine.config.max_prompt_tokens + engine.config.max_new_tokens
        self.metrics = ServerMetrics(self.runner, model_name)
        self.created = int(time.time())
        self.draining = False  # shutdown has begun: new requests get 503, /health says so
        self.http_in_flight = 0  # HTTP requests being handled (counted by serve/app.py's outer layer)
        self.forced = False  # a second signal: abort what is left now
        self._chars_per_token = max_chars_per_token(self.tok)
        self._fast = getattr(self.tok, "backend", None) if self._chars_per_token is not None else None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pcm-tokenize")

    # ------------------------------------------------------------------------------------ parsing
    async def parse(self, request: Request, model):
        ctype = request.headers.get("content-type", "")
        if ctype and "json" not in ctype:
            raise APIError(415, f"Content-Type must be application/json, got {ctype!r}")
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > self.max_body_bytes:
            raise APIError(413, f"request body of {size} bytes is over the limit of {self.max_body_bytes}")
        raw = bytearray()
        try:
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > self.max_body_bytes:
                    raise APIError(413, f"request body is over the limit of {self.max_body_bytes} bytes")
        except ClientDisconnect:
            raise ClientGone(f"after {len(raw)} of {size or 'unknown'} body bytes") from None
        if not raw.strip():
            raise APIError(400, "the request body is empty; expected a JSON object")
        # A 4 MB body of one string prompt validates in ~30 ms; one of token-id lists takes up to ~0.7 s,
        # all of it holding the GIL (pydantic builds a Python object per id), so a worker thread would
        # not free the event loop either: it stays here.
        try:
            body = model.model_validate_json(raw)
        except ValidationError as err:
            msg, param = validation_message(err)
            raise APIError(400, msg, param=param) from None
        if body.model is not None and body.model != self.model_name:
            raise APIError(404, f"the model '{body.model}' does not exist; this server serves '{self.model_name}'",
                           param="model", code="model_not_found")
        body.check_unsupported()
        self.check_accepting()
        return body

    def check_accepting(self) -> None:
        if self.draining or not self.runner.accepting:
            raise APIError(503, "the server is shutting down or its engine has stopped", type="server_error")

    # ------------------------------------------------------------------------------- tokenization
    def _check_chars(self, prompt: str) -> None:
        """Refuse, without tokenizing, a prompt certain to be over the token limit (see
        `max_chars_per_token`)."""
        k = self._chars_per_token
        if k is not None and len(prompt) > k * self.max_prompt_tokens:
            raise APIError(400, f"prompt of {len(prompt):,} characters is over the limit of {self.max_prompt_tokens} "
                                f"tokens: it has at least {-(-len(prompt) // k):,} tokens with this tokenizer "
                                f"(at most {k} characters a token)", param="prompt")

    def encode(self, prompt: str | list[int], *, add_special_tokens: bool = False,
               release_gil: bool = False) -> list[int]:
        if not isinstance(prompt, str):
            ids = list(prompt)
        elif release_gil and self._fast is not None:
            # encode_batch lets go of the GIL while it works (encode does not: a 3.8 MB prompt held it for
            # 3 s), and the length is known before the id list is built (70 ms for 2.4 M ids)
            enc = self._fast.encode_batch([prompt], add_special_tokens=add_special_tokens)[0]
            if len(enc) > self.max_prompt_tokens:
                raise self._too_long(len(enc))
            ids = enc.ids
        else:
            ids = self.tok.encode(prompt, add_special_tokens=add_special_tokens)
        if not ids:
            raise APIError(400, "the prompt is empty (no tokens)", param="prompt")
        if len(ids) > self.max_prompt_tokens:
            raise self._too_long(len(ids))
        return ids

    async def decode(self, ids: list[int]) -> str:
        """The text of token ids (special tokens kept); a long list on a worker thread without the GIL."""
        if len(ids) <= INLINE_WORK or self._fast is None:
            return self.tok.decode(ids, skip_special_tokens=False)
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: self._fast.decode_batch([ids], skip_special_tokens=False)[0])

    def _too_long(self, n: int) -> APIError:  # the engine's words (Engine.validate)
        return APIError(400, f"prompt has {n} tokens, over the limit of {self.max_prompt_tokens}", param="prompt")

    async def encode_all(self, prompts: list[str | list[int]], *, add_special_tokens: bool = False
                         ) -> list[list[int]]:
        """Token ids of every prompt. A prompt certain to be too long is refused before any work; short
        prompts are tokenized here, long ones on a worker thread without the GIL, so the event loop
        (other streams, /health) keeps running while a long prompt is tokenized."""
        texts = [p for p in prompts if isinstance(p, str)]
        for p in texts:
            self._check_chars(p)
        if sum(map(len, texts)) <= INLINE_WORK:
            return [self.encode(p, add_special_tokens=add_special_tokens) for p in prompts]
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: [
            self.encode(p, add_special_tokens=add_special_tokens, release_gil=True) for p in prompts])

    # --------------------------------------------------------------------------------- submission
    def submit_all(self, out, params: SamplingParams) -> None:
        """Submit the call's requests, one per prompt (all or none), with their outputs going to `out`."""
        for ids in out.prompts:
            try:
                self.engine.validate(ids, params)
            except EngineError as err:
                raise APIError(400, str(err), param=err.param) from None
        self.check_accepting()  # shutdown may have begun while the prompts were tokenized
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

    # ----------------------------------------------------------------------------------- shutdown
    async def drain(self) -> None:
        """The first half of shutdown, run while the server still listens: stop admitting (new requests
        and /health get 503), let the HTTP requests in progress finish for the grace period, then abort
        what remains in the engine, whose handlers answer it (an error body, or a last chunk with
        finish_reason "abort" and [DONE]), and wait briefly for those answers to go out. `forced` (a
        second signal) ends the grace period at once."""
        self.draining = True
        self.runner.stop_accepting()
        loop = asyncio.get_running_loop()
        if self.http_in_flight:
            log.info("shutting down: %d requests in progress get up to %.1f s to finish; a second signal "
                     "ends them now", self.http_in_flight, self.shutdown_grace_s)
        deadline = loop.time() + self.shutdown_grace_s
        while self.http_in_flight and loop.time() < deadline and not self.forced:
            await asyncio.sleep(0.02)
        aborted = self.runner.abort_all()
        if aborted:
            log.warning("shutting down: aborted %d unfinished requests", aborted)
        deadline = loop.time() + 2.0  # an aborted request's answer goes out within an engine step
        while self.http_in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
