"""`OpenAIClient`: the LLM client protocol over any OpenAI-compatible HTTP endpoint (vLLM, SGLang,
our own `pcm serve`, a hosted API).

Why it looks the way it does:
- Synthesis sends tens of thousands of requests per stage, so calls run concurrently on one asyncio
  loop with a bounded semaphore (`max_concurrency`) and one pooled `httpx.AsyncClient`.
- Endpoints fail in ordinary ways (rate limits, restarts, overloaded GPUs, proxies that cut
  connections, half-written JSON). Every such failure is retried with exponential backoff and full
  jitter (so a thousand clients do not retry in lock-step); a 429/503 `Retry-After` header is honoured.
- A request that still fails after `max_retries` comes back as `Generation(error=reason)` for each of
  its `n` samples: the batch never raises and no sample is ever silently dropped or shortened
  (llm/base.py). The synthesis stages record that reason on the record.
- vLLM's sampling extras (`top_k`, `min_p`, `repetition_penalty`, `min_tokens`) are sent in the JSON
  body when they differ from their neutral values (or always, with `vllm_extras=True`); a strict
  OpenAI endpoint rejects unknown fields, so `vllm_extras=False` never sends them.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from promptcot_mamba.llm.base import Generation, GenerationRequest

_PER_SHARD = 4  # pooled connections per httpx client (see agenerate)

# Statuses worth another try: request timeout, conflict/lock, rate limit, and server-side errors.
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524})


class _Retryable(Exception):
    """A failure that another attempt may fix; `retry_after` is the server's hint in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Fatal(Exception):
    """A failure that retrying cannot fix (bad request, auth, unknown model)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt k sleeps U(0, min(cap, base·2^k)) seconds,
    or the server's Retry-After (capped at `max_retry_after_s`) when it sent one."""

    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"RetryPolicy.max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("RetryPolicy backoff times must be >= 0")

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        cap = min(self.backoff_max_s, self.backoff_base_s * (2 ** attempt))
        return rng.uniform(0.0, cap)


def _parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` is either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _normalize_base_url(base_url: str) -> str:
    """Accept `http://host:port` or `http://host:port/v1`: a bare host gets the `/v1` prefix that
    OpenAI-compatible servers mount their routes under; any other path is kept as given."""
    url = base_url.strip().rstrip("/")
    parsed = httpx.URL(url)
    if parsed.path in ("", "/"):
        url += "/v1"
    return url


class OpenAIClient:
    """LLMClient over `/v1/completions` (requests with `prompt`) and `/v1/chat/completions`
    (requests with `messages`).

    `base_url`/`api_key` default to `$OPENAI_BASE_URL`/`$OPENAI_API_KEY`; `model=None` uses
    `$OPENAI_MODEL` or else the first model listed by `GET /models`.
    `merge_reasoning`: when a chat response carries vLLM's separate `reasoning_content`, rebuild
    the `<think>…</think>` layout the rest of the toolkit expects (text/reasoning.py).
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, model: str | None = None, *,
                 max_concurrency: int = 8, timeout_s: float = 600.0, max_retries: int = 4,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 20.0, max_retry_after_s: float = 60.0,
                 vllm_extras: bool | None = None, merge_reasoning: bool = True,
                 extra_body: dict[str, Any] | None = None, jitter_seed: int | None = None):
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ValueError("OpenAIClient needs base_url= or the OPENAI_BASE_URL environment variable "
                             "(e.g. http://127.0.0.1:8000/v1)")
        if max_concurrency < 1:
            raise ValueError(f"OpenAIClient.max_concurrency must be >= 1, got {max_concurrency}")
        if timeout_s <= 0:
            raise ValueError(f"OpenAIClient.timeout_s must be > 0, got {timeout_s}")
        self.base_url = _normalize_base_url(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.model = model or os.environ.get("OPENAI_MODEL") or None
        self._configured_model = self.model
        self.max_concurrency = int(max_concurrency)
        self.timeout_s = float(timeout_s)
        self.retry = RetryPolicy(max_retries=max_retries, backoff_base_s=backoff_base_s,
                                 backoff_max_s=backoff_max_s, max_retry_after_s=max_retry_after_s)
        self.vllm_extras = vllm_extras
        self.merge_reasoning = merge_reasoning
        self.extra_body = dict(extra_body or {})
        self._rng = random.Random(jitter_seed)
        self._model_lock = threading.Lock()
        # Counters for reports/benchmarks: attempts, retries by reason class, final failures.
        self.stats: dict[str, int] = {"requests": 0, "attempts": 0, "retries": 0, "failed": 0}

    @property
    def name(self) -> str:
        """`openai:<model>` — the served model once known (recorded in synthesis provenance)."""
        return f"openai:{self.model or 'auto'}"

    @property
    def fingerprint_name(self) -> str:
        """Like `name` but from the configured model only, so it is the same before and after the
        model is discovered from `GET /models` (synthesis uses it to detect changed settings)."""
        return f"openai:{self._configured_model or 'auto'}"

    def __repr__(self) -> str:
        return (f"OpenAIClient(base_url={self.base_url!r}, model={self.model!r}, "
                f"max_concurrency={self.max_concurrency}, timeout_s={self.timeout_s}, "
                f"max_retries={self.retry.max_retries})")

    # ------------------------------------------------------------------------------------------
    # public API
    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]:
        """Blocking entry point. Safe to call from code that already runs an event loop (it then
        runs its own loop in a helper thread)."""
        requests = list(requests)
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests))
        box: dict[str, Any] = {}

        def runner() -> None:
            try:
                box["out"] = asyncio.run(self.agenerate(requests))
            except BaseException as err:  # re-raised in the caller's thread
                box["err"] = err

        t = threading.Thread(target=runner, name="OpenAIClient.generate", daemon=True)
        t.start()
        t.join()
        if "err" in box:
            raise box["err"]
        return box["out"]

    async def agenerate(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]:
        requests = list(requests)
        if not requests:
            return []
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 30.0))
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        # `max_concurrency` workers pull requests from a shared cursor. They are spread over shards of
        # at most _PER_SHARD pooled connections each: httpcore scans every connection of its pool (with a
        # poll() per idle one) on each request, which cost ~40% of the client's CPU with one 32-wide pool.
        n_workers = min(self.max_concurrency, len(requests))
        n_shards = -(-n_workers // _PER_SHARD)
        shards = [httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=headers, trust_env=False,
                                    limits=httpx.Limits(max_connections=_PER_SHARD,
                                                        max_keepalive_connections=_PER_SHARD))
                  for _ in range(n_shards)]
        try:
            model = await self._resolve_model(shards[0])
            if isinstance(model, Generation):  # could not even learn the model name
                return [[Generation(text="", error=model.error, seed=r.seed) for _ in range(r.n)]
                        for r in requests]
            results: list[list[Generation] | None] = [None] * len(requests)
            cursor = iter(range(len(requests)))

            async def worker(w: int) -> None:
                http = shards[w // _PER_SHARD]
                for i in cursor:  # a shared iterator: each index is taken by exactly one worker
                    results[i] = await self._call_with_retries(http, model, requests[i])

            await asyncio.gather(*(worker(w) for w in range(n_workers)))
            return [r if r is not None else [Generation(text="", error="internal: request not run", seed=q.seed)] * q.n
                    for r, q in zip(results, requests)]
        finally:
            for c in shards:
                await c.aclose()

    # ------------------------------------------------------------------------------------------
    async def _resolve_model(self, http: httpx.AsyncClient) -> str | Generation:
        if self.model:
            return self.model
        last = "no models listed"
        for attempt in range(self.retry.max_retries + 1):
            try:
                resp = await http.get("/models")
                if resp.status_code == 200:
                    data = resp.json().get("data") or []
                    if data and isinstance(data[0], dict) and data[0].get("id"):
                        with self._model_lock:
                            self.model = str(data[0]["id"])
                        return self.model
                    last = "GET /models listed no model; pass model="
                    break
                last = f"GET /models: HTTP {resp.status_code}"
                if resp.status_code not in _RETRY_STATUS:
                    break
            except (httpx.HTTPError, ValueError) as err:
                last = f"GET /models: {type(err).__name__}: {err}"
            await asyncio.sleep(self.retry.delay(attempt, None, self._rng))
        return Generation(text="", error=f"cannot resolve model name ({last})")

    def build_body(self, model: str, req: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """The route and JSON body for one request (public so tests and tools can inspect it)."""
        body: dict[str, Any] = {
            "model": model, "max_tokens": req.max_tokens, "temperature": req.temperature,
            "top_p": req.top_p, "n": req.n,
        }
        if req.seed is not None:
            body["seed"] = int(req.seed)
        if req.stop:
            body["stop"] = list(req.stop)
        extras = {"top_k": (req.top_k, -1), "min_p": (req.min_p, 0.0),
                  "repetition_penalty": (req.repetition_penalty, 1.0), "min_tokens": (req.min_tokens, 0)}
        if self.vllm_extras is not False:
            for key, (value, neutral) in extras.items():
                if self.vllm_extras or value != neutral:
                    body[key] = value
        body.update(self.extra_body)
        if req.prompt is not None:
            body["prompt"] = req.prompt
            return "/completions", body
        body["messages"] = [dict(m) for m in req.messages or ()]
        if req.prefix:  # assistant prefill, in vLLM's dialect (SGLang and `pcm serve` speak it too)
            body["messages"].append({"role": "assistant", "content": req.prefix})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        return "/chat/completions", body

    async def _call_with_retries(self, http: httpx.AsyncClient, model: str,
                                 req: GenerationRequest) -> list[Generation]:
        route, body = self.build_body(model, req)
        self.stats["requests"] += 1
        reasons: list[str] = []
        for attempt in range(self.retry.max_retries + 1):
            self.stats["attempts"] += 1
            t0 = time.perf_counter()
            try:
                out = await self._call_once(http, route, body, req)
                dt = time.perf_counter() - t0
                for g in out:
                    g.latency_s = dt
                return out
            except _Fatal as err:
                reasons.append(str(err))
                break
            except _Retryable as err:
                reasons.append(err.reason)
                if attempt == self.retry.max_retries:
                    break
                self.stats["retries"] += 1
                await asyncio.sleep(self.retry.delay(attempt, err.retry_after, self._rng))
        self.stats["failed"] += 1
        tried = len(reasons)
        reason = f"{reasons[-1]} (after {tried} attempt{'s' if tried != 1 else ''}"
        if tried > 1 and len(set(reasons)) > 1:
            reason += "; earlier: " + "; ".join(dict.fromkeys(reasons[:-1]))
        reason += ")"
        return [Generation(text="", error=reason, seed=req.seed) for _ in range(req.n)]

    async def _call_once(self, http: httpx.AsyncClient, route: str, body: dict[str, Any],
                         req: GenerationRequest) -> list[Generation]:
        try:
            resp = await http.post(route, json=body)
        except httpx.TimeoutException as err:
            raise _Retryable(f"timeout after {self.timeout_s:g}s ({type(err).__name__})") from None
        except httpx.TransportError as err:
            raise _Retryable(f"transport error: {type(err).__name__}: {err}") from None
        if resp.status_code != 200:
            excerpt = resp.text[:200].replace("\n", " ")
            msg = f"HTTP {resp.status_code} from {route}: {excerpt}"
            if resp.status_code in _RETRY_STATUS:
                raise _Retryable(msg, _parse_retry_after(resp.headers.get("retry-after")))
            raise _Fatal(msg)
        try:
            payload = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise _Retryable(f"malformed response from {route}: not JSON: {resp.text[:80]!r}") from None
        return self._parse_choices(payload, route, req)

    def _parse_choices(self, payload: Any, route: str, req: GenerationRequest) -> list[Generation]:
        """Validate the response shape; anything unexpected is a retryable 'malformed response'."""
        def bad(why: str) -> _Retryable:
            return _Retryable(f"malformed response from {route}: {why}")

        if not isinstance(payload, dict):
            raise bad(f"expected a JSON object, got {type(payload).__name__}")
        if "error" in payload and "choices" not in payload:
            raise bad(f"error object: {str(payload['error'])[:200]}")
        choices = payload.get("choices")
        if not isinstance(choices, list):
            raise bad("no 'choices' list")
        if len(choices) != req.n:
            raise bad(f"{len(choices)} choices for n={req.n}")
        slots: list[Generation | None] = [None] * req.n
        for pos, ch in enumerate(choices):
            if not isinstance(ch, dict):
                raise bad("a choice is not an object")
            idx = ch.get("index", pos)
            if not isinstance(idx, int) or not 0 <= idx < req.n or slots[idx] is not None:
                raise bad(f"bad or repeated choice index {idx!r}")
            text = self._choice_text(ch, route)
            if text is None:
                raise bad("a choice has no text")
            slots[idx] = Generation(text=text, finish_reason=ch.get("finish_reason"), seed=req.seed)
        usage = payload.get("usage")
        if req.n == 1 and isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            slots[0].completion_tokens = usage["completion_tokens"]  # type: ignore[union-attr]
        return [g for g in slots if g is not None]

    def _choice_text(self, ch: dict[str, Any], route: str) -> str | None:
        if route == "/completions":
            text = ch.get("text")
            return text if isinstance(text, str) else None
        msg = ch.get("message")
        if not isinstance(msg, dict):
            return None
        content = msg.get("content")
        if content is None:
            content = ""  # a reasoning-only answer (content null) is legal; checked below
        if not isinstance(content, str):
            return None
        reasoning = msg.get("reasoning_content") or msg.get("reasoning")
        if self.merge_reasoning and isinstance(reasoning, str) and reasoning and "</think>" not in content:
            return f"<think>\n{reasoning.strip()}\n</think>\n\n{content.lstrip()}"
        if msg.get("content") is None and not reasoning:
            return None
        return content
