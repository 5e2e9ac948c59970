"""The LLM client protocol shared by synthesis and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt and how to sample from it. Either `prompt` (raw text, sent as a completion)
    or `messages` (chat, rendered by the backend's chat template) is set."""

    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    max_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Chat only: the opening of the assistant's reply, which the model continues (assistant prefill,
    # e.g. "<think>\n" or a format marker); the returned text excludes it. Over HTTP it is sent as a
    # final assistant message with vLLM's `continue_final_message` (vLLM, SGLang and `pcm serve`).
    prefix: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("GenerationRequest needs exactly one of prompt= or messages=")
        if self.prefix and self.messages is None:
            raise ValueError("GenerationRequest.prefix is for chat requests; append it to prompt= instead")
        if self.n < 1:
            raise ValueError(f"GenerationRequest.n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"GenerationRequest.max_tokens must be >= 1, got {self.max_tokens}")


@dataclass
class Generation:
    """One sample. `error` is set (and `text` is "") when the backend failed after its retries."""

    text: str
    finish_reason: str | None = None  # "stop" | "length" | None on error
    completion_tokens: int | None = None
    seed: int | None = None
    error: str | None = None
    latency_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class LLMClient(Protocol):
    """Anything that turns requests into samples: `len(result[i]) == requests[i].n`."""

    name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]: ...
