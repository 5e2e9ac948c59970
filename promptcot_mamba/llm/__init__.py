"""One client protocol for every stage that calls a language model (synthesis, evaluation).

Implementations: an OpenAI-compatible HTTP endpoint, the in-process engine, an in-process
transformers causal LM. They all take `GenerationRequest`s and return `Generation`s; a call that
fails after its retries comes back as a `Generation` with `error` set, never as an exception that
loses the batch and never as an empty "answer".
"""

from promptcot_mamba.llm.base import Generation, GenerationRequest, LLMClient

__all__ = ["Generation", "GenerationRequest", "LLMClient"]
