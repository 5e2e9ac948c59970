"""The OpenAI wire format: request models (validated strictly), error bodies, response pieces.

Requests are parsed in pydantic's strict mode, so `"max_tokens": "5"` is a 400, not a silent cast;
integer fields take an integral float (`5.0`) as vLLM does, but not `5.5`. vLLM's extra sampling
fields (top_k, min_p, repetition_penalty, min_tokens, stop_token_ids, ignore_eos, prompt_logprobs,
return_tokens_as_token_ids, ...) are accepted at the top level, which is where the openai SDK's
`extra_body` puts them.

No parameter is silently ignored. Every field vLLM's OpenAI server accepts is implemented here, or
refused with a 400 naming it (`REFUSED`) unless it has its no-op value, or listed in `IGNORED` with the
reason it cannot change the answer. Keys that neither vLLM nor this server knows are ignored, as vLLM
does (clients send many optional extras), and logged once.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from promptcot_mamba.generate.sampling import MAX_LOGPROBS, SamplingError, SamplingParams
from promptcot_mamba.serve.chat import TEMPLATE_VARIABLES

log = logging.getLogger(__name__)

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


def _integral(v: Any) -> Any:
    # vLLM's request models are lax: `"max_tokens": 5.0` is 5, while 5.5 stays an error
    return int(v) if isinstance(v, float) and v.is_integer() else v


def Int(**bounds):
    """An integer field type that takes integral floats; `bounds` (ge, le, ...) go inside the type, so
    that the OpenAPI schema states them also where the field may be null."""
    return Annotated[int, Field(**bounds), BeforeValidator(_integral)]


_STRUCTURED = ("structured outputs are not supported by this server: no grammar-constrained sampler is "
               "integrated (generate freely and validate the output, or use a server that has one)")
# vLLM request fields this server does not implement: name -> (its no-op values besides null, why not).
REFUSED: dict[str, tuple[tuple, str]] = {
    **{k: ((), _STRUCTURED) for k in ("guided_json", "guided_regex", "guided_choice", "guided_grammar",
                                       "guided_decoding_backend", "guided_whitespace_pattern", "structural_tag",
                                       "structured_outputs")},
    "use_beam_search": ((False,), "beam search is not supported by this server"),
    "length_penalty": ((1.0, 1), "length_penalty applies to beam search, which is not supported"),
    "watermarking": ((False,), "watermarking is not supported by this server"),
    "allowed_token_ids": ((), "allowed_token_ids is not supported by this server"),
    "bad_words": (([],), "bad_words is not supported by this server"),
    "logprob_token_ids": ((), "logprob_token_ids is not supported; use logprobs (top k)"),
    "logits_processors": ((), "custom logits processors are not supported by this server"),
    "truncate_prompt_tokens": ((), "prompts are never truncated by this server; send a shorter prompt"),
    "truncation_side": ((), "prompts are never truncated by this server; send a shorter prompt"),
    "prompt_embeds": ((), "prompt embeddings are not supported; send text or token ids"),
    "priority": ((0,), "priority scheduling is not supported: requests are served first come, first served"),
    "cache_salt": ((), "the prefix cache cannot be salted on this server"),
    "kv_transfer_params": ((), "disaggregated serving is not supported by this server"),
    "ec_transfer_params": ((), "disaggregated serving is not supported by this server"),
    "vllm_xargs": ((), "vLLM extension arguments are not supported by this server"),
    "return_token_ids": ((False,), "return_token_ids is not supported; use logprobs with "
                                   "return_tokens_as_token_ids"),
    "repetition_detection": ((), "repetition_detection is not supported by this server"),
    "thinking_token_budget": ((-1,), "thinking_token_budget is not supported by this server"),
    "mm_processor_kwargs": ((), "multimodal inputs are not supported by this server"),
    "media_io_kwargs": ((), "multimodal inputs are not supported by this server"),
}
# Fields accepted and not acted on, because they cannot change the answer here:
IGNORED: dict[str, str] = {
    "user": "an end-user id for a provider's abuse monitoring (vLLM ignores it too)",
    "session_id": "a hint for routing related requests across vLLM instances; this server is one engine",
    "spaces_between_special_tokens": "how a slow (Python) tokenizer joins shown special tokens to the text; "
                                     "the tokenizer.json decoder used here has no such choice",
    "stream_interval": "how many tokens each streamed chunk groups; the streamed text is the same",
    "return_token_offsets": "vLLM uses it only on its /render endpoints",
    "return_mm_kwargs": "vLLM uses it only on its /render endpoints",
    "routed_experts_prompt_start": "routing data of mixture-of-experts models; this model has no experts",
    "parallel_tool_calls": "only meaningful with tools, which are refused",
}
_logged: set[str] = set()


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM: usage (so far) in every chunk


class _Sampling(BaseModel):
    # extra keys are kept (model_extra) so that check_unsupported can refuse the ones vLLM would act on
    model_config = ConfigDict(strict=True, extra="allow")
    refused: ClassVar[dict[str, tuple[tuple, str]]] = REFUSED

    model: str | None = None
    max_tokens: Int(ge=1) | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: Int(ge=-1) | None = None
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    n: Int(ge=1, le=MAX_N) = 1
    best_of: Int(ge=1, le=MAX_N) | None = None
    seed: Int(ge=-(2**63), lt=2**63) | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[Int()] | None = None
    min_tokens: Int(ge=0) = 0
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None
    prompt_logprobs: Int(ge=0, le=MAX_LOGPROBS) | None = None  # vLLM extra
    return_tokens_as_token_ids: bool = False  # vLLM extra: tokens as "token_id:<id>" in logprobs
    request_id: str | None = None  # vLLM extra: the response's id is "cmpl-" / "chatcmpl-" + this
    # vLLM extra: the tokenizer's own special tokens (BOS, ...) around the prompt; off by default (vLLM's
    # default for chat; for completions vLLM's is on), so the ids are the prompt text's own
    add_special_tokens: bool = False

    def check_unsupported(self) -> None:
        for key, value in (self.model_extra or {}).items():
            if key in self.refused:
                noop, why = self.refused[key]
                if value is not None and not any(value == x and type(value) is type(x) for x in noop):
                    raise APIError(400, f"{key}: {why}", param=key)
            elif key not in IGNORED and key not in _logged and len(_logged) < 100:
                _logged.add(key)
                log.warning("request field %r is not known to this server and is ignored", key)
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise APIError(400, f"response_format {{\"type\": {self.response_format.get('type')!r}}}: {_STRUCTURED}",
                           param="response_format")
        if self.logit_bias:
            raise APIError(400, "logit_bias is not supported by this server", param="logit_bias")
        if self.best_of is not None and self.best_of != self.n:
            raise APIError(400, "best_of different from n is not supported", param="best_of")
        if self.stream_options is not None and not self.stream:
            raise APIError(400, "stream_options is only allowed when stream is true", param="stream_options")
        if self.prompt_logprobs is not None and self.stream:
            raise APIError(400, "prompt_logprobs are not available when stream is true (as in vLLM)",
                           param="prompt_logprobs")

    def stops(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > MAX_STOP:
            raise APIError(400, f"at most {MAX_STOP} stop strings are allowed, got {len(stop)}", param="stop")
        if any(s == "" for s in stop):
            raise APIError(400, "stop strings must not be empty", param="stop")
        return tuple(stop)

    def sampling_params(self, *, max_tokens: int | None, default_max_tokens: int, logprobs: int | None,
                        prompt_logprobs: int | None = None) -> SamplingParams:
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
                prompt_logprobs=prompt_logprobs, skip_special_tokens=self.skip_special_tokens)
        except SamplingError as err:
            raise APIError(400, str(err), param=err.param) from None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: Int(ge=0) | None = None  # 0 only with echo: the prompt (and its logprobs) only
    echo: bool = False
    logprobs: Int(ge=0, le=MAX_LOGPROBS) | None = None
    suffix: str | None = None

    def check_unsupported(self) -> None:
        super().check_unsupported()
        if self.max_tokens == 0 and not self.echo:
            raise APIError(400, "max_tokens must be at least 1 (0 is allowed with echo: the prompt only)",
                           param="max_tokens")
        if self.suffix:
            raise APIError(400, "suffix is not supported by this server", param="suffix")

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "prompt must not be empty", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)

    def engine_prompt_logprobs(self) -> int | None:
        """How many top prompt logprobs the engine keeps: what `prompt_logprobs` asks, and with `echo`
        what `logprobs` asks for the echoed prompt's tokens (vLLM's rule)."""
        ks = [k for k in (self.prompt_logprobs, self.logprobs if self.echo else None) if k is not None]
        return max(ks) if ks else None


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    # other keys (tool_call_id, refusal, ...) are ignored: the ChatML template renders role and content
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None  # handed to the chat template
    tool_calls: list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_Sampling):
    refused: ClassVar[dict[str, tuple[tuple, str]]] = {
        **REFUSED,
        "echo": ((False,), "echo on chat completions is not supported by this server"),
        "reasoning_effort": ((), "reasoning_effort is not supported: this model's reasoning length is not "
                                 "controllable (use max_tokens)"),
        "functions": ((), "function calling is not supported by this server"),
        "function_call": ((), "function calling is not supported by this server"),
        "documents": ((), "documents (RAG chat templates) are not supported by this server"),
        "chat_template": ((), "a per-request chat template is not supported; the model folder's is used"),
    }

    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: Int(ge=0, le=MAX_LOGPROBS) | None = None
    max_completion_tokens: Int(ge=1) | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False  # vLLM extra: the last (assistant) message is continued
    include_reasoning: bool = True  # vLLM extra: false leaves reasoning_content out
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM extra: variables for the chat template

    def check_unsupported(self) -> None:
        super().check_unsupported()
        if self.tools:
            raise APIError(400, "tools (function calling) are not supported by this server", param="tools")
        if self.tool_choice not in (None, "none", "auto"):
            raise APIError(400, "tool_choice needs tools (function calling), which this server does not support",
                           param="tool_choice")
        if self.top_logprobs is not None and not self.logprobs:
            raise APIError(400, "top_logprobs requires logprobs to be true", param="top_logprobs")
        if clash := TEMPLATE_VARIABLES & (self.chat_template_kwargs or {}).keys():
            raise APIError(400, f"chat_template_kwargs cannot set {sorted(clash)}: the server sets them",
                           param="chat_template_kwargs")
        for i, m in enumerate(self.messages):
            # as OpenAI: only the assistant's message may leave content out (e.g. a turn of tool calls)
            if m.content is None and m.role != "assistant":
                raise APIError(400, f"'messages[{i}].content' is required in a {m.role} message",
                               param=f"messages[{i}].content")
            if m.tool_calls:
                raise APIError(400, "tool calls in messages are not supported by this server (no function "
                                    "calling)", param=f"messages[{i}].tool_calls")

    def messages_as_dicts(self) -> list[dict[str, str]]:
        out = []
        for m in self.messages:
            d = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            if m.name is not None:
                d["name"] = m.name
            out.append(d)
        return out
