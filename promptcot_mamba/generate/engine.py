"""The constant-memory generation engine: token ids in, token ids (and text deltas) out.

Continuous batching over fixed-size state slots (paper §2.1 "Inference", §4.3): one pool
`InferenceState` of `max_slots` sequences is allocated once. Active sequences occupy slots
[0, n) of the pool, so a decode step runs `model.step` on a contiguous view of the first n rows; a
finishing sequence's slot is refilled by moving the last active row into it (one state copy), so
no per-step gather or scatter of states is needed. Requests join and leave between decode steps.

Prefill runs per request into its own b=1 state, in segments (`prefix_cache.split_points`) of at
most `prefill_chunk` tokens per engine step, interleaved with decoding, so a 30k-token prompt does
not stall the other sequences for its whole prefill. The segment ends depend only on positions, so
a prefix-cache hit is bit for bit the recomputation.

Prompt logprobs (`SamplingParams.prompt_logprobs`, what lm-evaluation-harness's loglikelihood needs):
the prefill of such a request keeps every position's logits, segment by segment, and scores each
prompt token given the tokens before it (the first has no context: None). It reads nothing from the
prefix cache, since a cached prefix has a state but no logits (vLLM skips its cache the same way).
A segment's logits (up to `prefill_chunk` × vocabulary floats) live only while it is scored, outside
the memory plan below. `max_tokens=0` stops after the prefill: the prompt is scored, nothing generated.

Admission is by memory: `max_slots` follows from `memory_budget_gb` minus the weights and the prefix
cache, divided by what one sequence costs (its state, its sampler rows and its share of the step's
activations) — a number that does not depend on how long the sequences grow.

Thread safety: `add_request` and `abort` may be called from any thread; `step` runs on one thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from promptcot_mamba.generate.detokenizer import IncrementalDetokenizer
from promptcot_mamba.generate.prefix_cache import PrefixCache, cache_points, split_points
from promptcot_mamba.generate.sampling import (
    RowSampler,
    SamplingParams,
    TokenLogprob,
    apply_penalties,
    logprobs_of,
    mask_stop_tokens,
    sample,
)
from promptcot_mamba.model.kernels import Kernels
from promptcot_mamba.model.quantize import weight_bytes
from promptcot_mamba.model.state import InferenceState

GB = 1e9
PROMPT_LOGPROB_ROWS = 256  # prompt positions scored per log-softmax (bounds its (rows, vocab) copies)


@contextmanager
def _denormals_flushed(on: bool):
    """Flush denormals to zero for the engine's own work, then back to torch's default (off). The
    flag is per thread (the CPU's control register), so it covers exactly the thread that steps."""
    if not on or not torch.set_flush_denormal(True):  # False: this CPU cannot flush
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class EngineError(ValueError):
    """A request the engine cannot take (bad ids, too long, too many samples); names what and why.
    `param` is the request field at fault ("prompt", "max_tokens", ...), None when no one field is."""

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.param = param


class QueueFull(RuntimeError):
    """The waiting queue is at `max_queue`; the caller should retry later (HTTP 429)."""


@dataclass(frozen=True)
class EngineConfig:
    max_slots: int = 64  # upper bound on concurrent sequences (the budget may lower it)
    memory_budget_gb: float | None = None  # weights + prefix cache + all sequences must fit
    max_queue: int = 1024  # waiting requests beyond this are refused (QueueFull)
    max_prompt_tokens: int = 131072
    max_new_tokens: int = 131072
    max_n: int = 64  # samples per request
    prefill_chunk: int = 1024  # prompt tokens per engine step (interleaves long prefills with decoding)
    prefix_cache_gb: float = 0.25
    prefix_block: int = 64
    decode_on_pool: bool = False  # step the whole pool instead of the first n rows (for measurement)
    # decaying fp32 states go denormal, and x86 is ~100x slower on them: each engine step runs with
    # denormals flushed to zero (on the stepping thread only, restored after the step)
    flush_denormal: bool = True

    def __post_init__(self) -> None:
        for name in ("max_slots", "max_queue", "max_prompt_tokens", "max_new_tokens", "max_n",
                     "prefill_chunk", "prefix_block"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"EngineConfig.{name} must be a positive integer, got {v!r}")
        if self.memory_budget_gb is not None and not self.memory_budget_gb > 0:
            raise ValueError(f"EngineConfig.memory_budget_gb must be > 0, got {self.memory_budget_gb!r}")
        if not self.prefix_cache_gb >= 0:
            raise ValueError(f"EngineConfig.prefix_cache_gb must be >= 0, got {self.prefix_cache_gb!r}")


@dataclass
class SeqOutput:
    """What one engine step produced for one sample of one request."""

    request_id: str
    index: int  # sample index within the request (0..n-1)
    token_ids: list[int]
    text: str  # new text ("" when the engine has no tokenizer)
    logprobs: list[TokenLogprob] | None = None
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    cached_prompt_tokens: int = 0
    # with SamplingParams.prompt_logprobs, on each sample's first output: one per prompt token (None first)
    prompt_logprobs: list[TokenLogprob | None] | None = None


@dataclass
class SampleResult:
    index: int
    token_ids: list[int]
    text: str
    finish_reason: str | None
    stop_reason: str | int | None = None
    logprobs: list[TokenLogprob] | None = None
    seed: int | None = None


@dataclass
class RequestResult:
    request_id: str
    prompt_ids: list[int]
    samples: list[SampleResult]
    cached_prompt_tokens: int = 0
    prompt_logprobs: list[TokenLogprob | None] | None = None


@dataclass(eq=False)
class _Seq:
    req: _Request
    index: int
    sampler: RowSampler
    detok: IncrementalDetokenizer | None
    out: list[int] = field(default_factory=list)
    last: int = 0  # the token to feed at the next decode step
    slot: int = -1
    finished: bool = False


@dataclass(eq=False)
class _Request:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    arrival: float
    seqs: list[_Seq] = field(default_factory=list)
    pos: int = 0  # prefill position
    state: InferenceState | None = None
    logits: torch.Tensor | None = None
    cached: int = 0
    aborted: bool = False
    prompt_lps: list[TokenLogprob | None] | None = None  # filled by the prefill when prompt_logprobs is asked


class Engine:
    """`Engine(model, tokenizer=None, config=EngineConfig())`; `add_request` + `step`, or `generate`."""

    _ids = itertools.count()

    def __init__(self, model, tokenizer=None, config: EngineConfig | None = None, *,
                 eos_token_id: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = cfg = config or EngineConfig()
        mc = model.config
        self.vocab_size = mc.vocab_size
        # sample only ids the tokenizer can decode (checkpoints pad the embedding rows)
        self.vocab_limit = min(self.vocab_size, tokenizer.vocab_size) if tokenizer is not None else self.vocab_size
        if eos_token_id is None:
            eos_token_id = tokenizer.eos_token_id if tokenizer is not None else mc.eos_token_id
        self.eos_token_id = eos_token_id
        self._special_ids = frozenset()
        if tokenizer is not None:
            names = {"<|im_start|>", "<|im_end|>", tokenizer.eos_token, tokenizer.bos_token, tokenizer.pad_token}
            self._special_ids = frozenset(i for i in (tokenizer.token_to_id(t) for t in names if t) if i is not None)
        self.capacity = self._plan_capacity()
        self.max_slots = self.capacity["max_slots"]
        dev = model.device
        self.pool = InferenceState.zeros(mc, self.max_slots, device=dev, dtype=model.dtype)
        self.counts = torch.zeros(self.max_slots, self.vocab_size, dtype=torch.int32, device=dev)
        self.prompt_mask = torch.zeros(self.max_slots, self.vocab_size, dtype=torch.bool, device=dev)
        self.prefix_cache = PrefixCache(int(cfg.prefix_cache_gb * GB), cfg.prefix_block)
        self._decoder = None
        if getattr(model, "kernels", None) is not None and model.kernels.decode == "bucketed":
            # captured now, before any sequence sits in the pool (capture writes rows of every bucket)
            from promptcot_mamba.generate.decode_graphs import BucketedDecoder

            self._decoder = BucketedDecoder(model, self.pool)
        self.active: list[_Seq] = []  # slot order: active[i].slot == i
        self.waiting: deque[_Request] = deque()
        self.prefilling: list[_Request] = []
        self.requests: dict[str, _Request] = {}
        self._inbox: deque[tuple[str, object]] = deque()
        self._lock = threading.Lock()
        self._reserved = 0  # slots promised to requests still prefilling
        self.stats = {"prompt_tokens": 0, "cached_prompt_tokens": 0, "generated_tokens": 0, "steps": 0,
                      "peak_running": 0}

    @classmethod
    def from_pretrained(cls, path, config: EngineConfig | None = None, *, dtype="auto", device="cpu",
                        kernels: Kernels | None = None, quantize: str | None = None,
                        require_tokenizer: bool = True) -> Engine:
        """An engine over a model folder as `save_pretrained` writes it (with its tokenizer.json).
        `dtype`: "auto" (the checkpoint's), float32, bfloat16 or float16. `quantize`: None or "none",
        or "int8" (weight-only, model/quantize.py, applied while loading; an unknown one fails before
        loading). A checkpoint whose weights alone (the int8 ones at their int8 size) exceed
        `config.memory_budget_gb`, or the memory available, fails before loading."""
        from promptcot_mamba.model.lm import Mamba2LM

        budget = config.memory_budget_gb if config is not None else None
        model = Mamba2LM.from_pretrained(path, dtype=dtype, device=device, kernels=kernels,
                                         max_memory_gb=budget, quantize=quantize)
        if require_tokenizer and model.tokenizer is None:
            raise FileNotFoundError(f"{path}: no tokenizer.json next to the weights; the engine needs one "
                                    f"to turn text into token ids")
        return cls(model, model.tokenizer, config)

    # ---------------------------------------------------------------------------------- capacity
    def _plan_capacity(self) -> dict:
        cfg, mc = self.config, self.model.config
        state = InferenceState.bytes_per_sequence(mc, self.model.dtype)
        sampler = self.vocab_size * (4 + 1)  # output counts (int32) and prompt mask (bool)
        d_in = mc.in_proj_dim + mc.d_inner + 2 * mc.hidden_size
        activations = 4 * (4 * self.vocab_size + 2 * d_in)  # logits and their sorted/processed copies
        per_seq = state + sampler + activations
        weights = weight_bytes(self.model)  # parameters and buffers (int8 weights are buffers), each once
        cache = int(cfg.prefix_cache_gb * GB)
        slots = cfg.max_slots
        if cfg.memory_budget_gb is not None:
            free = cfg.memory_budget_gb * GB - weights - cache
            fit = int(free // per_seq) if free > 0 else 0
            if fit < 1:
                raise ValueError(
                    f"--memory-budget {cfg.memory_budget_gb} GB does not fit one sequence: weights "
                    f"{weights / GB:.3f} GB + prefix cache {cache / GB:.3f} GB + {per_seq / GB:.4f} GB per sequence")
            slots = min(slots, fit)
        return {"max_slots": slots, "state_bytes_per_sequence": state, "bytes_per_sequence": per_seq,
                "weight_bytes": weights, "prefix_cache_bytes": cache,
                "memory_budget_bytes": None if cfg.memory_budget_gb is None else int(cfg.memory_budget_gb * GB)}

    @property
    def model_settings(self) -> dict:
        """What the model runs as, for logs and reports: device, dtype, weight quantization, kernels."""
        m = self.model
        return {"device": str(m.device), "dtype": str(m.dtype).removeprefix("torch."),
                "quantization": getattr(m, "quantization", None) or "none",
                "kernels": str(getattr(m, "kernels", "")) or None}

    @property
    def state_bytes(self) -> int:
        """Bytes of recurrent state the engine holds for its sequences (the pool; fixed at start)."""
        return self.pool.nbytes

    def sequence_state_bytes(self, slot: int = 0) -> int:
        """Bytes of the state of the sequence in `slot` (the same for every length)."""
        s = self.pool.select([slot])
        return s.nbytes

    @property
    def num_running(self) -> int:
        return len(self.active)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting) + len(self.prefilling)

    def has_work(self) -> bool:
        return bool(self.active or self.waiting or self.prefilling or self._inbox)

    # ---------------------------------------------------------------------------------- requests
    def validate(self, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        cfg = self.config
        if len(prompt_ids) == 0:
            raise EngineError("prompt is empty: it must have at least one token", param="prompt")
        if len(prompt_ids) > cfg.max_prompt_tokens:
            raise EngineError(f"prompt has {len(prompt_ids)} tokens, over the limit of {cfg.max_prompt_tokens}",
                              param="prompt")
        bad = next((t for t in prompt_ids if not (isinstance(t, int) and 0 <= t < self.vocab_size)), None)
        if bad is not None:
            raise EngineError(f"prompt token id {bad!r} is outside the vocabulary [0, {self.vocab_size})",
                              param="prompt")
        if params.max_tokens > cfg.max_new_tokens:
            raise EngineError(f"max_tokens {params.max_tokens} is over the limit of {cfg.max_new_tokens}",
                              param="max_tokens")
        if params.n > min(cfg.max_n, self.max_slots):
            raise EngineError(f"n = {params.n} is over the limit of {min(cfg.max_n, self.max_slots)} samples "
                              f"per request", param="n")
        bad = next((t for t in params.stop_token_ids if t >= self.vocab_size), None)
        if bad is not None:
            raise EngineError(f"stop_token_ids: {bad} is outside the vocabulary [0, {self.vocab_size})",
                              param="stop_token_ids")
        if params.stop and self.tokenizer is None:
            raise EngineError("stop strings need an engine with a tokenizer", param="stop")

    def add_request(self, prompt_ids: Sequence[int], params: SamplingParams, request_id: str | None = None) -> str:
        """Queue a request (thread-safe); returns its id. Raises EngineError or QueueFull."""
        prompt = [int(t) for t in prompt_ids]
        self.validate(prompt, params)
        rid = request_id or f"req-{next(self._ids)}"
        stop_ids = set(params.stop_token_ids)
        if self.eos_token_id is not None and not params.ignore_eos:
            stop_ids.add(self.eos_token_id)
        req = _Request(rid, prompt, params, frozenset(stop_ids), time.monotonic())
        if params.prompt_logprobs is not None:
            req.prompt_lps = [None]
        for i in range(params.n):
            detok = None
            if self.tokenizer is not None:
                detok = IncrementalDetokenizer(self.tokenizer, stop=params.stop,
                                               include_stop=params.include_stop_str_in_output,
                                               skip_special_tokens=params.skip_special_tokens,
                                               special_ids=self._special_ids)
            req.seqs.append(_Seq(req, i, RowSampler(params, params.sample_seed(i)), detok))
        with self._lock:
            if rid in self.requests:
                raise EngineError(f"request id {rid!r} is already in use")
            if len(self.waiting) + sum(1 for k, _ in self._inbox if k == "add") >= self.config.max_queue:
                raise QueueFull(f"the queue is full ({self.config.max_queue} waiting requests)")
            self.requests[rid] = req
            self._inbox.append(("add", req))
        return rid

    def abort(self, request_id: str) -> None:
        """Cancel a request (thread-safe); its slots free at the next step, which reports "abort"."""
        with self._lock:
            self._inbox.append(("abort", request_id))

    # -------------------------------------------------------------------------------------- step
    @torch.inference_mode()
    def step(self) -> list[SeqOutput]:
        """One engine iteration: take new requests and aborts, admit, prefill a chunk, decode one token
        for every running sequence, free the finished. Returns this step's outputs."""
        outputs: list[SeqOutput] = []
        self._drain_inbox(outputs)
        self._admit()
        with _denormals_flushed(self.config.flush_denormal):
            self._prefill(outputs)
            if self.active:
                self._decode(outputs)
        self.stats["steps"] += 1
        return outputs

    def _drain_inbox(self, outputs: list[SeqOutput]) -> None:
        with self._lock:
            items = list(self._inbox)
            self._inbox.clear()
        for kind, obj in items:
            if kind == "add":
                if obj.aborted:
                    continue
                self.waiting.append(obj)
            else:
                req = self.requests.get(obj)
                if req is not None:
                    self._abort_request(req, outputs)

    def _abort_request(self, req: _Request, outputs: list[SeqOutput]) -> None:
        req.aborted = True
        if req in self.waiting:
            self.waiting.remove(req)
        if req in self.prefilling:
            self.prefilling.remove(req)
            self._reserved -= req.params.n
        for s in req.seqs:
            if not s.finished:
                s.finished = True
                outputs.append(self._out(s, [], "", None, "abort"))
        self._release_slots()
        self.requests.pop(req.request_id, None)

    def _admit(self) -> None:
        while self.waiting:
            req = self.waiting[0]
            if len(self.active) + self._reserved + req.params.n > self.max_slots:
                break
            self.waiting.popleft()
            self._reserved += req.params.n
            hit = self.prefix_cache.lookup(req.prompt) if req.prompt_lps is None else None
            if hit is not None:
                req.pos, req.state, req.cached = hit.length, hit.state, hit.length
            self.prefilling.append(req)

    def _prefill(self, outputs: list[SeqOutput]) -> None:
        budget = self.config.prefill_chunk
        while self.prefilling and budget > 0:
            req = self.prefilling[0]
            T = len(req.prompt)
            ends = [p for p in split_points(T, self.config.prefix_block, self.config.prefill_chunk) if p > req.pos]
            end = ends[0]
            seg = torch.tensor([req.prompt[req.pos:end]], dtype=torch.long, device=self.model.device)
            if req.prompt_lps is None:
                req.logits, req.state = self.model.prefill(seg, state=req.state)
            else:
                out = self.model(seg, state=req.state, return_state=True)
                req.logits, req.state = out.logits[:, -1], out.state
                self._score_prompt(req, out.logits[0], end)
            budget -= end - req.pos
            req.pos = end
            if end in cache_points(T, self.config.prefix_block):
                self.prefix_cache.insert(req.prompt[:end], req.state)
            if end == T:
                self.prefilling.pop(0)
                self._reserved -= req.params.n
                self._start_sequences(req, outputs)

    def _score_prompt(self, req: _Request, logits: torch.Tensor, end: int) -> None:
        """Prompt logprobs of a segment: the logits at positions [req.pos, end) score the prompt tokens
        at positions + 1 (the last position of the prompt scores nothing: it predicts the first output)."""
        k = req.params.prompt_logprobs
        m = min(end, len(req.prompt) - 1) - req.pos
        for a in range(0, m, PROMPT_LOGPROB_ROWS):
            b = min(m, a + PROMPT_LOGPROB_ROWS)
            targets = req.prompt[req.pos + a + 1:req.pos + b + 1]
            req.prompt_lps += logprobs_of(logits[a:b], targets, [k] * (b - a), limit=self.vocab_limit)

    def _start_sequences(self, req: _Request, outputs: list[SeqOutput]) -> None:
        n = req.params.n
        self.stats["prompt_tokens"] += len(req.prompt)
        self.stats["cached_prompt_tokens"] += req.cached
        first_output = len(outputs)
        if req.params.max_tokens == 0:  # the prompt only: no slot, no token
            for s in req.seqs:
                s.finished = True
                outputs.append(self._out(s, [], "", None, "length"))
            self.requests.pop(req.request_id, None)
            req.state = req.logits = None
            for o in outputs[first_output:]:
                o.prompt_logprobs = req.prompt_lps
            return
        first = len(self.active)
        slots = list(range(first, first + n))
        self.pool.write(slots, InferenceState(req.state.conv.expand(-1, n, -1, -1),
                                              req.state.ssm.expand(-1, n, -1, -1, -1)))
        self.counts[first:first + n] = 0
        self.prompt_mask[first:first + n] = False
        if req.params.repetition_penalty != 1.0:
            self.prompt_mask[first:first + n, torch.tensor(req.prompt)] = True
        for s, slot in zip(req.seqs, slots):
            s.slot = slot
            self.active.append(s)
        logits = req.logits.expand(n, -1)
        req.state = req.logits = None
        self._sample_and_emit(logits, req.seqs, slots, outputs)
        for o in outputs[first_output:]:  # one per sample: its first token
            o.prompt_logprobs = req.prompt_lps
        self._release_slots()

    def _decode(self, outputs: list[SeqOutput]) -> None:
        n = len(self.active)
        self.stats["peak_running"] = max(self.stats["peak_running"], n)
        if self._decoder is not None:
            logits = self._decoder(torch.tensor([s.last for s in self.active], dtype=torch.long,
                                                device=self.model.device))
        else:
            rows = self.max_slots if self.config.decode_on_pool else n
            view = InferenceState(self.pool.conv[:, :rows], self.pool.ssm[:, :rows])
            tokens = [s.last for s in self.active] + [0] * (rows - n)
            logits = self.model.step(torch.tensor(tokens, dtype=torch.long, device=self.model.device), view)[:n]
        seqs = list(self.active)
        self._sample_and_emit(logits, seqs, list(range(n)), outputs)
        self._release_slots()

    def _sample_and_emit(self, logits: torch.Tensor, seqs: list[_Seq], slots: list[int],
                         outputs: list[SeqOutput]) -> None:
        raw = logits
        if self.vocab_limit < self.vocab_size:
            logits = logits.clone()
            logits[:, self.vocab_limit:] = -float("inf")
        samplers = [s.sampler for s in seqs]
        contiguous = slots == list(range(slots[0], slots[0] + len(slots)))
        sl = slice(slots[0], slots[0] + len(slots)) if contiguous else slots
        if any(s.req.params.has_penalties for s in seqs):
            logits = apply_penalties(logits, samplers, self.prompt_mask[sl], self.counts[sl])
        pending = [len(s.out) < s.req.params.min_tokens for s in seqs]
        if any(pending):
            logits = mask_stop_tokens(logits, torch.tensor(pending), [s.req.stop_ids for s in seqs])
        tokens = sample(logits, samplers)
        lps: list[TokenLogprob | None] = [None] * len(seqs)
        want = [s.req.params.logprobs for s in seqs]
        if any(k is not None for k in want):
            idx = [i for i, k in enumerate(want) if k is not None]
            got = logprobs_of(raw[idx], [tokens[i] for i in idx], [want[i] for i in idx], limit=self.vocab_limit)
            for i, lp in zip(idx, got):
                lps[i] = lp
        self.counts[torch.tensor(slots), torch.tensor(tokens)] += 1
        self.stats["generated_tokens"] += len(tokens)
        for s, t, lp in zip(seqs, tokens, lps):
            self._advance(s, t, lp, outputs)

    def _advance(self, s: _Seq, t: int, lp: TokenLogprob | None, outputs: list[SeqOutput]) -> None:
        p = s.req.params
        s.out.append(t)
        s.last = t
        reason, stop_reason, text = None, None, ""
        # min_tokens: stop tokens were masked for the first min_tokens tokens; stop strings wait too
        if t in s.req.stop_ids and len(s.out) > p.min_tokens:
            reason, stop_reason = "stop", t
        elif s.detok is not None:
            text = s.detok.add(t, check_stop=len(s.out) > p.min_tokens)
            if s.detok.stopped_by is not None:
                reason, stop_reason = "stop", s.detok.stopped_by
        if reason is None and len(s.out) >= p.max_tokens:
            reason = "length"
        if reason is not None and s.detok is not None:
            text += s.detok.flush()
        outputs.append(self._out(s, [t], text, [lp] if lp is not None else None, reason, stop_reason))
        if reason is not None:
            s.finished = True

    def _out(self, s: _Seq, toks, text, lps, reason, stop_reason=None) -> SeqOutput:
        return SeqOutput(s.req.request_id, s.index, toks, text, lps, reason is not None, reason, stop_reason,
                         len(s.req.prompt), len(s.out), s.req.cached)

    def _release_slots(self) -> None:
        """Drop finished sequences; keep the active ones packed in slots [0, n)."""
        if not any(s.finished for s in self.active):
            return
        for i in range(len(self.active) - 1, -1, -1):
            s = self.active[i]
            if not s.finished:
                continue
            last = len(self.active) - 1
            if i != last:
                mover = self.active[last]
                self.pool.conv[:, i] = self.pool.conv[:, last]
                self.pool.ssm[:, i] = self.pool.ssm[:, last]
                self.counts[i] = self.counts[last]
                self.prompt_mask[i] = self.prompt_mask[last]
                mover.slot = i
                self.active[i] = mover
            self.active.pop()
            s.slot = -1
            if all(x.finished for x in s.req.seqs):
                self.requests.pop(s.req.request_id, None)

    # ------------------------------------------------------------------------------- convenience
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams],
                 *, progress: bool = False) -> list[RequestResult]:
        """Run prompts to completion (batched by the engine) and return one result per prompt."""
        plist = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(plist) != len(prompts):
            raise ValueError(f"generate: {len(prompts)} prompts but {len(plist)} SamplingParams")
        results: dict[str, RequestResult] = {}
        order: list[str] = []
        pending = list(zip(prompts, plist))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=sum(p.n for p in plist), desc="generate", unit="seq")
        while pending or self.has_work():
            while pending:  # keep the queue fed without overflowing it
                prompt, p = pending[0]
                try:
                    rid = self.add_request(prompt, p)
                except QueueFull:
                    break
                pending.pop(0)
                req = self.requests[rid]
                results[rid] = RequestResult(rid, list(prompt), [
                    SampleResult(s.index, [], "", None, seed=s.sampler.seed) for s in req.seqs])
                order.append(rid)
            for o in self.step():
                r = results.get(o.request_id)
                if r is None:
                    continue
                smp = r.samples[o.index]
                smp.token_ids.extend(o.token_ids)
                smp.text += o.text
                r.cached_prompt_tokens = o.cached_prompt_tokens
                if o.prompt_logprobs is not None:
                    r.prompt_logprobs = o.prompt_logprobs
                if o.logprobs:
                    smp.logprobs = (smp.logprobs or []) + o.logprobs
                if o.finished:
                    smp.finish_reason, smp.stop_reason = o.finish_reason, o.stop_reason
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        return [results[r] for r in order]

    def stream(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[SeqOutput]:
        """Run one request alone (with whatever else is queued) and yield its outputs as they come."""
        rid = self.add_request(prompt_ids, params)
        left = params.n
        try:
            while left:
                for o in self.step():
                    if o.request_id == rid:
                        left -= o.finished
                        yield o
        finally:
            if left:
                self.abort(rid)
                self.step()
