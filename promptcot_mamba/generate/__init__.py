"""Constant-memory generation: the engine (token ids in and out), vLLM-style sampling, the prefix
state cache, and the in-process `EngineClient`."""

from promptcot_mamba.generate.client import EngineClient
from promptcot_mamba.generate.engine import Engine, EngineConfig, EngineError, QueueFull, SeqOutput
from promptcot_mamba.generate.sampling import SamplingError, SamplingParams

__all__ = ["Engine", "EngineClient", "EngineConfig", "EngineError", "QueueFull", "SamplingError", "SamplingParams",
           "SeqOutput"]
