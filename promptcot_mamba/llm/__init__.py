"""One client protocol for every stage that calls a language model (synthesis, evaluation).

Implementations: an OpenAI-compatible HTTP endpoint, the in-process engine, an in-process
transformers causal LM. They all take `GenerationRequest`s and return `Generation`s; a call that
fails after its retries comes back as a `Generation` with `error` set, never as an exception that
loses the batch and never as an empty "answer".
"""

from promptcot_mamba.llm.base import Generation, GenerationRequest, LLMClient

__all__ = ["Generation", "GenerationRequest", "LLMClient", "OpenAIClient", "TransformersClient"]

# Implementations are imported on first use so `import promptcot_mamba.llm` stays light
# (transformers in particular is an optional extra).
_LAZY = {
    "OpenAIClient": "promptcot_mamba.llm.openai_client",
    "TransformersClient": "promptcot_mamba.llm.hf_client",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'promptcot_mamba.llm' has no attribute {name!r}")
