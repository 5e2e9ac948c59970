"""The OpenAI wire format: request models (validated strictly), error bodies, response pieces.

Requests are parsed in pydantic's strict mode, so `"max_tokens": "5"` is a 400, not a silent cast;
unknown fields are ignored as vLLM does (clients send many optional extras). vLLM's extra sampling
fields (top_k, min_p, repetition_penalty, min_tokens, stop_token_ids, ignore_eos, ...) are accepted
at the top level, which is where the openai SDK's `extra_body` puts them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promptcot_mamba.generate.sampling import SamplingError, SamplingParams

MAX_N = 64
MAX_STOP = 16


class APIError(Exception):
    """An error answered with an OpenAI-style body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validation_message(err: ValidationError) -> tuple[str, str | None]:
    """A readable message (and the offending parameter) from pydantic's errors."""
    errors = err.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"malformed JSON body: {first.get('ctx', {}).get('error', first.get('msg'))}", None
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # union members show up as extra path parts ("prompt", "str"); keep the field path only
    field = []
    for p in loc:
        if p in ("str", "int", "float", "bool", "list[str]", "list[int]", "list[list[int]]", "function-after",
                 "list[ContentPart]", "none") or p.startswith(("list[", "function")):
            continue
        field.append(p)
    name = ".".join(field) or None
    if first.get("type") == "model_type" and not field:
        return "the request body must be a JSON object", None
    if first.get("type") == "missing":
        return f"'{name}' is required", name
    msgs = sorted({e.get("msg", "") for e in errors if [str(p) for p in e.get("loc", ())][:2] == loc[:2]
                   or len(errors) == 1})
    got = first.get("input")
    detail = "; or ".join(m for m in msgs if m)[:300]
    got_s = "" if isinstance(got, (dict, list)) and len(str(got)) > 80 else f" (got {got!r})"
    return f"invalid value for '{name}': {detail}{got_s}", name


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    n: int = Field(1, ge=1, le=MAX_N)
    best_of: int | None = Field(None, ge=1, le=MAX_N)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    def check_unsupported(self) -> None:
        if self.logit_bias:
            raise APIError(400, "logit_bias is not supported by this server", param="logit_bias")
        if self.best_of is not None and self.best_of != self.n:
            raise APIError(400, "best_of different from n is not supported", param="best_of")
        if self.stream_options is not None and not self.stream:
            raise APIError(400, "stream_options is only allowed when stream is true", param="stream_options")

    def stops(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > MAX_STOP:
            raise APIError(400, f"at most {MAX_STOP} stop strings are allowed, got {len(stop)}", param="stop")
        if any(s == "" for s in stop):
            raise APIError(400, "stop strings must not be empty", param="stop")
        return tuple(stop)

    def sampling_params(self, *, max_tokens: int | None, default_max_tokens: int, logprobs: int | None) -> SamplingParams:
        mt = max_tokens if max_tokens is not None else default_max_tokens
        if self.min_tokens > mt:
            raise APIError(400, f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({mt})",
                           param="min_tokens")
        if any(t < 0 for t in self.stop_token_ids or ()):
            raise APIError(400, "stop_token_ids must be token ids >= 0", param="stop_token_ids")
        try:
            return SamplingParams(
                max_tokens=mt, temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                top_k=-1 if self.top_k in (None, 0) else self.top_k, min_p=self.min_p,
                repetition_penalty=self.repetition_penalty, presence_penalty=self.presence_penalty,
                frequency_penalty=self.frequency_penalty, min_tokens=self.min_tokens, n=self.n, seed=self.seed,
                stop=self.stops(), stop_token_ids=tuple(self.stop_token_ids or ()), ignore_eos=self.ignore_eos,
                include_stop_str_in_output=self.include_stop_str_in_output, logprobs=logprobs,
                skip_special_tokens=self.skip_special_tokens)
        except SamplingError as err:
            raise APIError(400, str(err), param=err.param) from None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    suffix: str | None = None

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "prompt must not be empty", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False  # vLLM extra: the last (assistant) message is continued

    def check_unsupported(self) -> None:
        super().check_unsupported()
        if self.tools:
            raise APIError(400, "tools (function calling) are not supported by this server", param="tools")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise APIError(400, "only response_format {\"type\": \"text\"} is supported", param="response_format")
        if self.top_logprobs is not None and not self.logprobs:
            raise APIError(400, "top_logprobs requires logprobs to be true", param="top_logprobs")

    def messages_as_dicts(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]
