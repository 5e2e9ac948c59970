"""`EngineClient`: the in-process engine behind the `LLMClient` protocol (llm/base.py).

Evaluation, synthesis and the demo call `client.generate(requests)` the same way they call an
OpenAI endpoint; here the requests go straight into one `Engine`, which batches all their samples
together. Text in and out goes through the tokenizer (prompt text as is; chat messages through the
tokenizer's chat template).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from promptcot_mamba.generate.engine import Engine, EngineConfig, EngineError
from promptcot_mamba.generate.sampling import SamplingError, SamplingParams
from promptcot_mamba.llm.base import Generation, GenerationRequest


def to_sampling_params(req: GenerationRequest, **extra) -> SamplingParams:
    return SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                          top_k=req.top_k, min_p=req.min_p, repetition_penalty=req.repetition_penalty,
                          min_tokens=min(req.min_tokens, req.max_tokens), n=req.n, seed=req.seed,
                          stop=tuple(req.stop), **extra)


class EngineClient:
    """`EngineClient(engine_or_model, tokenizer=None, config=None)`.

    `engine_or_model`: an `Engine`, or a `Mamba2LM` (an engine is built with `config`). The tokenizer
    defaults to the model's own (`Mamba2LM.from_pretrained` sets it when the folder has one).
    Sample i of a request with a seed uses seed + i (the engine's rule), so results are reproducible.
    """

    name = "engine"

    def __init__(self, engine_or_model, tokenizer=None, config: EngineConfig | None = None, *,
                 progress: bool = False):
        if isinstance(engine_or_model, Engine):
            self.engine = engine_or_model
            tokenizer = tokenizer or engine_or_model.tokenizer
        else:
            tokenizer = tokenizer or getattr(engine_or_model, "tokenizer", None)
            if tokenizer is None:
                raise ValueError("EngineClient needs a tokenizer: pass tokenizer= or load a model folder "
                                 "that has tokenizer.json")
            self.engine = Engine(engine_or_model, tokenizer, config)
        if self.engine.tokenizer is None:
            raise ValueError("EngineClient: the engine has no tokenizer")
        self.tokenizer = tokenizer
        self.progress = progress

    @property
    def settings(self) -> dict:
        """The engine's model settings (device, dtype, quantization, kernels); eval reports record them."""
        return self.engine.model_settings

    def render(self, req: GenerationRequest) -> str:
        if req.prompt is not None:
            return req.prompt
        return self.tokenizer.apply_chat_template(list(req.messages), add_generation_prompt=True) + req.prefix

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]:
        t0 = time.perf_counter()
        results: list[list[Generation] | None] = [None] * len(requests)
        prompts, params, where = [], [], []
        for i, req in enumerate(requests):
            try:
                ids = self.tokenizer.encode(self.render(req))
                sp = to_sampling_params(req)
                self.engine.validate(ids, sp)
            except (EngineError, SamplingError, ValueError) as err:
                results[i] = [Generation(text="", error=str(err)) for _ in range(req.n)]
                continue
            prompts.append(ids)
            params.append(sp)
            where.append(i)
        if prompts:
            outs = self.engine.generate(prompts, params, progress=self.progress)
            latency = time.perf_counter() - t0
            for i, out in zip(where, outs):
                results[i] = [Generation(text=s.text, finish_reason=s.finish_reason, completion_tokens=len(s.token_ids),
                                         seed=s.seed if requests[i].seed is not None else None, latency_s=latency)
                              for s in out.samples]
        return [r or [] for r in results]
