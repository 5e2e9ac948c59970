"""The two generation routes' request handling and response shapes.

`complete` and `chat_complete` tokenize a call's prompts, submit them to the engine, and answer. An
`_Outputs` collects what the engine sends back for the call (every prompt × n samples, disconnects,
engine failures, release/abort, usage), and one renderer per API shape (`_Completion`, `_Chat`)
turns it into SSE chunks or the final body.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, ClassVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from promptcot_mamba.generate.engine import SeqOutput, TokenLogprob
from promptcot_mamba.serve.chat import ReasoningStream, render_chat, split_answer
from promptcot_mamba.serve.protocol import APIError, ChatCompletionRequest, CompletionRequest
from promptcot_mamba.serve.server import ServerState


class _Outputs:
    """What the engine sends back for one API call, collected per choice: the call's requests (one per
    prompt) × n samples each, choice i being sample i % n of prompt i // n (OpenAI's order)."""

    def __init__(self, srv: ServerState, cid: str, prompts: list[list[int]], n: int, *, keep: bool):
        self.srv, self.cid, self.prompts, self.n, self.size = srv, cid, prompts, n, len(prompts) * n
        self.rids = [f"{cid}-{k}" for k in range(len(prompts))]
        self._row = {rid: k for k, rid in enumerate(self.rids)}
        self.queue: asyncio.Queue = asyncio.Queue()
        # text and logprobs are kept for a final body only: a stream sends them on as they come
        self.keep = keep
        self._parts: list[list[str]] = [[] for _ in range(self.size)]
        self.logprobs: list[list[TokenLogprob]] = [[] for _ in range(self.size)]
        self.chars = [0] * self.size  # characters of text so far
        self.tokens = [0] * self.size
        self.finish: list[tuple[Any, Any]] = [(None, None)] * self.size  # (finish_reason, stop_reason) once done
        self.left = self.size  # choices not finished yet
        self._look_at = 0.0  # when to look next whether the client is still there

    async def next(self, request: Request | None) -> tuple[int, SeqOutput]:
        """Wait for the next output and collect it; returns (choice index, output). With `request`,
        raises ConnectionAbortedError once that client has gone (looked at about once a second, also
        while outputs keep coming)."""
        while True:
            if request is not None and time.monotonic() >= self._look_at:
                self._look_at = time.monotonic() + 1.0
                if await request.is_disconnected():
                    raise ConnectionAbortedError("client disconnected")
            try:
                o = await asyncio.wait_for(self.queue.get(), timeout=1.0)
            except asyncio.TimeoutError:
                continue
            if o is None:
                raise APIError(503, "the engine stopped before the request finished", type="server_error")
            if isinstance(o, BaseException):
                raise APIError(500, str(o), type="server_error")
            break
        i = self._row[o.request_id] * self.n + o.index
        self.chars[i] += len(o.text)
        if self.keep:
            self._parts[i].append(o.text)
            self.logprobs[i].extend(o.logprobs or ())
        self.tokens[i] = o.num_output_tokens
        if o.finished:
            self.finish[i] = (o.finish_reason, o.stop_reason)
            self.left -= 1
        return i, o

    def text(self, i: int) -> str:
        return "".join(self._parts[i])

    def release(self) -> None:
        """Stop routing the call's outputs; aborts its requests unless every choice finished."""
        for rid in self.rids:
            self.srv.runner.release(rid, abort=self.left > 0)

    def usage(self) -> dict[str, int]:
        p = sum(len(x) for x in self.prompts)
        c = sum(self.tokens)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class _Renderer:
    """One API shape: renders collected outputs as streamed chunks (`head`, `delta`) or as the choices
    of the final body (`final`), and answers the call either way (`respond`)."""

    path: ClassVar[str]
    chunk_object: ClassVar[str]
    body_object: ClassVar[str]

    def __init__(self, srv: ServerState, out: _Outputs, body: CompletionRequest | ChatCompletionRequest):
        self.srv, self.out, self.stream = srv, out, body.stream
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.created = int(time.time())

    def head(self) -> list[dict]:
        """Choices streamed before any output."""
        return []

    def delta(self, i: int, o: SeqOutput) -> dict | None:
        """The streamed choice for output `o` of choice `i` (already collected), or None to send nothing."""
        raise NotImplementedError

    def final(self, i: int) -> dict:
        """Choice `i` of the non-streamed body."""
        raise NotImplementedError

    def envelope(self, object: str, choices: list[dict], **extra) -> dict:
        return {"id": self.out.cid, "object": object, "created": self.created, "model": self.srv.model_name,
                "choices": choices, **extra}

    async def respond(self, request: Request):
        if self.stream:
            return StreamingResponse(self._sse(), media_type="text/event-stream")
        try:
            while self.out.left:
                await self.out.next(request)
        except ConnectionAbortedError:
            return Response(status_code=499)
        finally:
            self.out.release()
        self.srv.metrics.count(self.path, 200)
        return self.envelope(self.body_object, [self.final(i) for i in range(self.out.size)],
                             usage=self.out.usage())

    async def _sse(self):
        try:
            for choice in self.head():
                yield _sse(self.envelope(self.chunk_object, [choice]))
            while self.out.left:
                choice = self.delta(*await self.out.next(None))
                if choice is not None:
                    yield _sse(self.envelope(self.chunk_object, [choice]))
            if self.include_usage:
                yield _sse(self.envelope(self.chunk_object, [], usage=self.out.usage()))
            yield "data: [DONE]\n\n"
            self.srv.metrics.count(self.path, 200)
        except APIError as err:
            yield _sse(err.body())
        finally:
            self.out.release()


class _Completion(_Renderer):
    path, chunk_object, body_object = "/v1/completions", "text_completion", "text_completion"

    def __init__(self, srv: ServerState, out: _Outputs, body: CompletionRequest):
        super().__init__(srv, out, body)
        self.top = bool(body.logprobs)  # top_logprobs per token (logprobs=0: the chosen token's only)
        self.with_logprobs = body.logprobs is not None
        self.echo = [srv.tok.decode(p, skip_special_tokens=False) if body.echo else "" for p in out.prompts]
        self._echoed: set[int] = set()

    def delta(self, i: int, o: SeqOutput) -> dict:
        text = o.text
        if i not in self._echoed:  # an echoed prompt goes before the first delta
            text = self.echo[i // self.out.n] + text
            self._echoed.add(i)
        offset = self.out.chars[i] - len(o.text)  # text_offset counts generated text only
        return self._choice(i, text, self._logprobs(o.logprobs, offset))

    def final(self, i: int) -> dict:
        lps = (self.out.logprobs[i] or None) if self.with_logprobs else None
        return self._choice(i, self.echo[i // self.out.n] + self.out.text(i), self._logprobs(lps, 0))

    def _choice(self, i: int, text: str, logprobs: dict | None) -> dict:
        fr, sr = self.out.finish[i]
        return {"index": i, "text": text, "logprobs": logprobs, "finish_reason": fr, "stop_reason": sr}

    def _logprobs(self, lps: list[TokenLogprob] | None, offset: int) -> dict | None:
        if lps is None:
            return None
        toks, values, tops, offs = [], [], [], []
        for lp in lps:
            t = self.srv.token_text(lp.token_id)
            toks.append(t)
            values.append(lp.logprob)
            tops.append({self.srv.token_text(k): v for k, v in lp.top} if self.top else None)
            offs.append(offset)
            offset += len(t)
        return {"tokens": toks, "token_logprobs": values, "top_logprobs": tops, "text_offset": offs}


class _Chat(_Renderer):
    path, chunk_object, body_object = "/v1/chat/completions", "chat.completion.chunk", "chat.completion"

    def __init__(self, srv: ServerState, out: _Outputs, body: ChatCompletionRequest, prompt_text: str):
        super().__init__(srv, out, body)
        self.with_logprobs = body.logprobs
        self.prompt_text = prompt_text
        self._split = [ReasoningStream(prompt_text) if srv.reasoning else None for _ in range(out.size)]

    def head(self) -> list[dict]:
        return [{"index": j, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                for j in range(self.out.size)]

    def delta(self, i: int, o: SeqOutput) -> dict | None:
        split = self._split[i]
        pieces = [("content", o.text)] if split is None else split.feed(o.text, final=o.finished)
        delta: dict[str, str] = {}
        for kind, text in pieces:
            delta[kind] = delta.get(kind, "") + text
        lp = self._logprobs(o.logprobs) if self.with_logprobs else None
        if not (delta or o.finished or lp):
            return None
        return self._choice(i, "delta", delta, lp)

    def final(self, i: int) -> dict:
        text = self.out.text(i)
        msg: dict[str, Any] = {"role": "assistant", "content": text}
        if self.srv.reasoning:
            reasoning, content = split_answer(text, prompt_text=self.prompt_text)
            msg = {"role": "assistant", "content": content, "reasoning_content": reasoning}
        lp = self._logprobs(self.out.logprobs[i]) if self.with_logprobs else None
        return self._choice(i, "message", msg, lp)

    def _choice(self, i: int, key: str, value: dict, lp: list | None) -> dict:
        fr, sr = self.out.finish[i]
        return {"index": i, key: value, "logprobs": None if lp is None else {"content": lp},
                "finish_reason": fr, "stop_reason": sr}

    def _logprobs(self, lps: list[TokenLogprob] | None) -> list | None:
        if lps is None:
            return None
        text = self.srv.token_text
        return [{"token": text(lp.token_id), "logprob": lp.logprob, "bytes": list(text(lp.token_id).encode()),
                 "top_logprobs": [{"token": text(k), "logprob": v, "bytes": list(text(k).encode())}
                                  for k, v in lp.top]} for lp in lps]


async def complete(srv: ServerState, request: Request, body: CompletionRequest):
    """POST /v1/completions: tokenize, submit every prompt × n, answer as a stream or one body."""
    if body.suffix:
        raise APIError(400, "suffix is not supported by this server", param="suffix")
    prompts = await srv.encode_all(body.prompts())
    params = body.sampling_params(max_tokens=body.max_tokens, default_max_tokens=srv.default_completion_max_tokens,
                                  logprobs=body.logprobs)
    out = _Outputs(srv, f"cmpl-{uuid.uuid4().hex}", prompts, params.n, keep=not body.stream)
    srv.submit_all(out, params)
    return await _Completion(srv, out, body).respond(request)


async def chat_complete(srv: ServerState, request: Request, body: ChatCompletionRequest):
    """POST /v1/chat/completions: render the messages with the chat template, then as completions."""
    try:
        prompt_text = render_chat(srv.tok, body.messages_as_dicts(),
                                  add_generation_prompt=body.add_generation_prompt,
                                  continue_final_message=body.continue_final_message)
    except ValueError as err:
        raise APIError(400, str(err), param="messages") from None
    prompts = await srv.encode_all([prompt_text])
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    params = body.sampling_params(max_tokens=max_tokens, default_max_tokens=srv.default_max_tokens,
                                  logprobs=(body.top_logprobs or 0) if body.logprobs else None)
    out = _Outputs(srv, f"chatcmpl-{uuid.uuid4().hex}", prompts, params.n, keep=not body.stream)
    srv.submit_all(out, params)
    return await _Chat(srv, out, body, prompt_text).respond(request)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
