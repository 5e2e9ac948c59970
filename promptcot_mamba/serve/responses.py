"""The two generation routes' request handling and response shapes.

`complete` and `chat_complete` tokenize a call's prompts, submit them to the engine, and answer. An
`_Outputs` collects what the engine sends back for the call (every prompt × n samples, disconnects,
engine failures, release/abort, usage), and one renderer per API shape (`_Completion`, `_Chat`)
turns it into SSE chunks or the final body.

Logprobs are those of the raw model distribution: the log-softmax of the model's logits, before
penalties, temperature and top-k/top-p/min-p (vLLM's default `--logprobs-mode raw_logprobs`), so they
do not depend on the sampling parameters and a prompt scores the same as in a forward pass.
- Completions (`logprobs: k`): per token its text, its logprob, and `top_logprobs`, the k most likely
  tokens plus the chosen one when it is not among them (vLLM's k or k + 1 entries), keyed by token text.
  A key another token of the same position already has (byte tokens that each decode to U+FFFD, say) is
  written "token_id:<id>" instead: vLLM lets such entries overwrite each other. The chosen token keeps
  its text key. `return_tokens_as_token_ids` writes every token as "token_id:<id>". `text_offset` is
  each token's offset in the returned text, the echoed prompt included.
- `echo` with `logprobs` scores the prompt too (first token `null`, as vLLM); `max_tokens: 0` with `echo`
  returns the prompt alone, nothing generated (lm-evaluation-harness's loglikelihood requests).
- `prompt_logprobs: k` (vLLM): per choice of a completion (per response of a chat completion), one entry
  per prompt token, `null` first, else {"<id>": {"logprob", "rank", "decoded_token"}} for the prompt
  token and the top k.
- Chat (`logprobs`, `top_logprobs: k`): per token exactly k alternatives (OpenAI's); `bytes` are the
  token's own bytes (generate/detokenizer.token_bytes), which add up to the text across a character
  split between tokens.
Logprobs of -inf are written -9999.0 (JSON has no infinity; vLLM's convention).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, ClassVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from promptcot_mamba.generate.detokenizer import token_bytes
from promptcot_mamba.generate.engine import SeqOutput, TokenLogprob
from promptcot_mamba.serve.chat import ReasoningStream, render_chat, split_answer
from promptcot_mamba.serve.protocol import APIError, ChatCompletionRequest, CompletionRequest
from promptcot_mamba.serve.server import ServerState

_GONE = object()  # put on a call's queue when its client has disconnected


async def _watch_disconnect(request: Request, queue: asyncio.Queue) -> None:
    """Put `_GONE` on `queue` once the client of `request` goes away. The body has been read, so the
    next ASGI message of this request is http.disconnect, which the server sends as soon as the
    connection drops: no polling, nothing per token."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            await asyncio.sleep(0.05)  # (no further body is expected; never spin)
    except Exception:  # a server without a disconnect message: the request simply runs to its end
        return
    queue.put_nowait(_GONE)


class _Outputs:
    """What the engine sends back for one API call, collected per choice: the call's requests (one per
    prompt) × n samples each, choice i being sample i % n of prompt i // n (OpenAI's order)."""

    def __init__(self, srv: ServerState, prefix: str, prompts: list[list[int]], n: int, *, keep: bool,
                 request_id: str | None = None):
        self.srv, self.prompts, self.n, self.size = srv, prompts, n, len(prompts) * n
        cid = f"{prefix}-{uuid.uuid4().hex}"
        self.id = f"{prefix}-{request_id}" if request_id else cid  # the response's id
        self.rids = [f"{cid}-{k}" for k in range(len(prompts))]  # the engine's, unique whatever the client sends
        self._row = {rid: k for k, rid in enumerate(self.rids)}
        self.queue: asyncio.Queue = asyncio.Queue()
        # text, tokens and logprobs are kept for a final body only: a stream sends them on as they come
        self.keep = keep
        self._parts: list[list[str]] = [[] for _ in range(self.size)]
        self.token_ids: list[list[int]] = [[] for _ in range(self.size)]
        self.logprobs: list[list[TokenLogprob]] = [[] for _ in range(self.size)]
        self.prompt_logprobs: list[list[TokenLogprob | None] | None] = [None] * self.size
        self.chars = [0] * self.size  # characters of text so far
        self.tokens = [0] * self.size
        self.finish: list[tuple[Any, Any]] = [(None, None)] * self.size  # (finish_reason, stop_reason) once done
        self.left = self.size  # choices not finished yet
        self.stopped = False  # the engine stopped (shutdown) before every choice finished

    async def next(self) -> tuple[int, SeqOutput]:
        """Wait for the next output and collect it; returns (choice index, output). Raises
        ConnectionAbortedError once the client has gone (`_watch_disconnect`). When the engine stops
        first, each unfinished choice ends as aborted."""
        if self.stopped:
            o = self._abort_next()
        else:
            o = await self.queue.get()
            if o is _GONE:
                raise ConnectionAbortedError("client disconnected")
            if o is None:
                self.stopped = True
                o = self._abort_next()
            elif isinstance(o, BaseException):
                raise APIError(500, str(o), type="server_error")
        i = self._row[o.request_id] * self.n + o.index
        self.chars[i] += len(o.text)
        if self.keep:
            self._parts[i].append(o.text)
            self.token_ids[i].extend(o.token_ids)
            self.logprobs[i].extend(o.logprobs or ())
        if o.prompt_logprobs is not None:
            self.prompt_logprobs[i] = o.prompt_logprobs
        self.tokens[i] = max(self.tokens[i], o.num_output_tokens)
        if o.finished:
            self.finish[i] = (o.finish_reason, o.stop_reason)
            self.left -= 1
        return i, o

    def _abort_next(self) -> SeqOutput:
        i = next(j for j, f in enumerate(self.finish) if f == (None, None))
        return SeqOutput(self.rids[i // self.n], i % self.n, [], "", finished=True, finish_reason="abort")

    def text(self, i: int) -> str:
        return "".join(self._parts[i])

    def release(self) -> None:
        """Stop routing the call's outputs; aborts its requests unless every choice finished."""
        for rid in self.rids:
            self.srv.runner.release(rid, abort=self.left > 0)

    def usage(self, i: int | None = None) -> dict[str, int]:
        """The call's usage, or choice i's so far (vLLM's continuous_usage_stats)."""
        if i is None:
            p, c = sum(len(x) for x in self.prompts), sum(self.tokens)
        else:
            p, c = len(self.prompts[i // self.n]), self.tokens[i]
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _num(v: float) -> float:
    return max(v, -9999.0)


class _Renderer:
    """One API shape: renders collected outputs as streamed chunks (`head`, `delta`) or as the choices
    of the final body (`final`), and answers the call either way (`respond`)."""

    path: ClassVar[str]
    chunk_object: ClassVar[str]
    body_object: ClassVar[str]

    def __init__(self, srv: ServerState, out: _Outputs, body: CompletionRequest | ChatCompletionRequest):
        self.srv, self.out, self.stream = srv, out, body.stream
        opts = body.stream_options
        self.include_usage = bool(opts and opts.include_usage)
        # usage so far in every chunk; asked for alone, it is honoured alone (vLLM needs include_usage too)
        self.continuous_usage = bool(opts and opts.continuous_usage_stats)
        self.as_ids = body.return_tokens_as_token_ids
        self.prompt_k = body.prompt_logprobs
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

    def body_extra(self) -> dict:
        """Top-level fields of the non-streamed body besides the choices and usage."""
        return {}

    def envelope(self, object: str, choices: list[dict], **extra) -> dict:
        return {"id": self.out.id, "object": object, "created": self.created, "model": self.srv.model_name,
                "choices": choices, **extra}

    def token(self, tid: int) -> str:
        return f"token_id:{tid}" if self.as_ids else self.srv.token_text(tid)

    def vllm_prompt_logprobs(self, lps: list[TokenLogprob | None] | None) -> list | None:
        """vLLM's `prompt_logprobs`: per prompt token, null first, then the prompt token's and the top k's
        {"<id>": {"logprob", "rank", "decoded_token"}}."""
        if lps is None:
            return None
        out: list[dict | None] = []
        for lp in lps:
            if lp is None:
                out.append(None)
                continue
            d = {str(lp.token_id): {"logprob": _num(lp.logprob), "rank": lp.rank, "decoded_token": self.token(lp.token_id)}}
            for rank, (tid, v) in enumerate(lp.top[:self.prompt_k], 1):
                d.setdefault(str(tid), {"logprob": _num(v), "rank": rank, "decoded_token": self.token(tid)})
            out.append(d)
        return out

    async def respond(self, request: Request):
        if self.stream:
            return StreamingResponse(self._sse(), media_type="text/event-stream")
        watcher = asyncio.ensure_future(_watch_disconnect(request, self.out.queue))
        try:
            while self.out.left:
                await self.out.next()
        except ConnectionAbortedError:
            return Response(status_code=499)
        finally:
            watcher.cancel()
            self.out.release()
        if self.out.stopped:
            raise APIError(503, "the engine stopped before the request finished", type="server_error")
        if self.srv.draining and any(fr == "abort" for fr, _ in self.out.finish):
            raise APIError(503, "the server is shutting down: the request was aborted before it finished",
                           type="server_error")
        self.srv.metrics.count(self.path, 200)
        return self.envelope(self.body_object, [self.final(i) for i in range(self.out.size)],
                             usage=self.out.usage(), **self.body_extra())

    def _chunk(self, choice: dict) -> str:
        extra = {"usage": self.out.usage(choice["index"])} if self.continuous_usage else {}
        return _sse(self.envelope(self.chunk_object, [choice], **extra))

    async def _sse(self):
        """The stream: chunks, the usage chunk when asked, then [DONE] (also after an error body). An
        engine that stops first (shutdown) ends each unfinished choice with finish_reason "abort"."""
        try:
            for choice in self.head():
                yield self._chunk(choice)
            while self.out.left:
                choice = self.delta(*await self.out.next())
                if choice is not None:
                    yield self._chunk(choice)
            if self.include_usage:
                yield _sse(self.envelope(self.chunk_object, [], usage=self.out.usage()))
            self.srv.metrics.count(self.path, 200)
        except APIError as err:
            yield _sse(err.body())
        finally:
            self.out.release()
        yield "data: [DONE]\n\n"


class _Completion(_Renderer):
    path, chunk_object, body_object = "/v1/completions", "text_completion", "text_completion"

    def __init__(self, srv: ServerState, out: _Outputs, body: CompletionRequest):
        super().__init__(srv, out, body)
        self.k = body.logprobs  # None: no logprobs
        self.echo = body.echo
        self.echo_text = [srv.tok.decode(p, skip_special_tokens=False) if body.echo else "" for p in out.prompts]
        self._echoed: set[int] = set()

    def _prompt_part(self, i: int) -> tuple[list[int], list[TokenLogprob | None]]:
        prompt = self.out.prompts[i // self.out.n]
        return prompt, self.out.prompt_logprobs[i] or [None] * len(prompt)

    def delta(self, i: int, o: SeqOutput) -> dict:
        row = i // self.out.n
        text, ids, lps = o.text, list(o.token_ids), list(o.logprobs or ())
        offset = len(self.echo_text[row]) + self.out.chars[i] - len(o.text)  # text sent before this chunk
        if self.echo and i not in self._echoed:  # the echoed prompt goes with the first delta
            self._echoed.add(i)
            prompt, plps = self._prompt_part(i)
            text, ids, lps, offset = self.echo_text[row] + text, prompt + ids, plps + lps, 0
        return self._choice(i, text, self._logprobs(ids, lps, offset))

    def final(self, i: int) -> dict:
        ids, lps = self.out.token_ids[i], self.out.logprobs[i]
        if self.echo:
            prompt, plps = self._prompt_part(i)
            ids, lps = prompt + ids, plps + lps
        choice = self._choice(i, self.echo_text[i // self.out.n] + self.out.text(i), self._logprobs(ids, lps, 0))
        if self.prompt_k is not None:
            choice["prompt_logprobs"] = self.vllm_prompt_logprobs(self.out.prompt_logprobs[i])
        return choice

    def _choice(self, i: int, text: str, logprobs: dict | None) -> dict:
        fr, sr = self.out.finish[i]
        return {"index": i, "text": text, "logprobs": logprobs, "finish_reason": fr, "stop_reason": sr}

    def _logprobs(self, ids: list[int], lps: list[TokenLogprob | None], offset: int) -> dict | None:
        if self.k is None:
            return None
        toks, values, tops, offs = [], [], [], []
        for tid, lp in zip(ids, lps):
            text = self.srv.token_text(tid)
            toks.append(self.token(tid) if self.as_ids else text)
            values.append(None if lp is None else _num(lp.logprob))
            tops.append(None if lp is None else self._top(lp))
            offs.append(offset)
            offset += len(text)
        return {"tokens": toks, "token_logprobs": values, "top_logprobs": tops, "text_offset": offs}

    def _top(self, lp: TokenLogprob) -> dict[str, float]:
        """The k most likely tokens, and the chosen one when it is not among them, keyed by text; a key
        that another token of this position already holds becomes "token_id:<id>"."""
        entries = lp.top[:self.k]
        if all(t != lp.token_id for t, _ in entries):
            entries = [*entries, (lp.token_id, lp.logprob)]
        owner = {self.token(lp.token_id): lp.token_id}  # the chosen token keeps its text as key
        out: dict[str, float] = {}
        for tid, v in entries:
            key = self.token(tid)
            if owner.setdefault(key, tid) != tid:
                key = f"token_id:{tid}"
            out[key] = _num(v)
        return out


class _Chat(_Renderer):
    path, chunk_object, body_object = "/v1/chat/completions", "chat.completion.chunk", "chat.completion"

    def __init__(self, srv: ServerState, out: _Outputs, body: ChatCompletionRequest, prompt_text: str):
        super().__init__(srv, out, body)
        self.with_logprobs = body.logprobs
        self.prompt_text = prompt_text
        self.include_reasoning = body.include_reasoning
        self._split = [ReasoningStream(prompt_text) if srv.reasoning else None for _ in range(out.size)]

    def head(self) -> list[dict]:
        return [{"index": j, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                for j in range(self.out.size)]

    def delta(self, i: int, o: SeqOutput) -> dict | None:
        split = self._split[i]
        pieces = [("content", o.text)] if split is None else split.feed(o.text, final=o.finished)
        delta: dict[str, str] = {}
        for kind, text in pieces:
            if kind == "reasoning_content" and not self.include_reasoning:
                continue
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
            msg = {"role": "assistant", "content": content}
            if self.include_reasoning:
                msg["reasoning_content"] = reasoning
        lp = self._logprobs(self.out.logprobs[i]) if self.with_logprobs else None
        return self._choice(i, "message", msg, lp)

    def body_extra(self) -> dict:
        if self.prompt_k is None:
            return {}
        return {"prompt_logprobs": self.vllm_prompt_logprobs(self.out.prompt_logprobs[0])}

    def _choice(self, i: int, key: str, value: dict, lp: list | None) -> dict:
        fr, sr = self.out.finish[i]
        return {"index": i, key: value, "logprobs": None if lp is None else {"content": lp},
                "finish_reason": fr, "stop_reason": sr}

    def _logprobs(self, lps: list[TokenLogprob] | None) -> list | None:
        if lps is None:
            return None
        tok = self.srv.tok

        def entry(tid: int, v: float) -> dict:
            return {"token": self.token(tid), "logprob": _num(v), "bytes": list(token_bytes(tok, tid))}

        return [{**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]} for lp in lps]


async def complete(srv: ServerState, request: Request, body: CompletionRequest):
    """POST /v1/completions: tokenize, submit every prompt × n, answer as a stream or one body."""
    prompts = await srv.encode_all(body.prompts(), add_special_tokens=body.add_special_tokens)
    params = body.sampling_params(max_tokens=body.max_tokens, default_max_tokens=srv.default_completion_max_tokens,
                                  logprobs=body.logprobs, prompt_logprobs=body.engine_prompt_logprobs())
    out = _Outputs(srv, "cmpl", prompts, params.n, keep=not body.stream, request_id=body.request_id)
    srv.submit_all(out, params)
    return await _Completion(srv, out, body).respond(request)


async def chat_complete(srv: ServerState, request: Request, body: ChatCompletionRequest):
    """POST /v1/chat/completions: render the messages with the chat template, then as completions."""
    try:
        prompt_text = render_chat(srv.tok, body.messages_as_dicts(),
                                  add_generation_prompt=body.add_generation_prompt,
                                  continue_final_message=body.continue_final_message,
                                  template_kwargs=body.chat_template_kwargs)
    except ValueError as err:
        raise APIError(400, str(err), param="messages") from None
    prompts = await srv.encode_all([prompt_text], add_special_tokens=body.add_special_tokens)
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    params = body.sampling_params(max_tokens=max_tokens, default_max_tokens=srv.default_max_tokens,
                                  logprobs=(body.top_logprobs or 0) if body.logprobs else None,
                                  prompt_logprobs=body.prompt_logprobs)
    out = _Outputs(srv, "chatcmpl", prompts, params.n, keep=not body.stream, request_id=body.request_id)
    srv.submit_all(out, params)
    return await _Chat(srv, out, body, prompt_text).respond(request)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
