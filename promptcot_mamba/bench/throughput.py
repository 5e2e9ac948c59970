"""`pcm bench throughput`: the paper's Figure 2 (§4.3) — generation throughput of a Mamba-2 model
against a Transformer under GPU memory caps, over generation-length intervals [a, b].

The paper: PromptCoT-Mamba-7B vs s1.1-7B (Qwen2.5-7B shape) in vLLM 0.7.3 on one A100 80GB with the
memory restricted to 24 GB and 72 GB; for each interval, `min_tokens = a`, `max_tokens = b`;
3.66× at 24 GB and 1.69× at 72 GB at the longest interval.

Two ways to measure it here:

* in process (`run_inprocess`): both models built from named shapes with random weights (or loaded
  from folders). Each request gets a generation length drawn uniformly from [a, b] (seeded, the same
  for both models: what `min_tokens`/`max_tokens` with a random stop point amount to). The memory
  cap decides the batch size analytically: (cap − weights − activation reserve) / per-sequence bytes,
  where a Mamba sequence costs its fixed inference state and a Transformer sequence its KV cache at
  prompt + b tokens (a static cache reserves the maximum). Requests run in static batches of that size,
  each for its longest member; throughput = generated tokens / wall time (prefill included). On CUDA the
  cap is also enforced (`torch.cuda.set_per_process_memory_fraction`), so a wrong estimate fails loudly.
  Paths (recorded in the JSON): Mamba `eager` | `graph` | `triton-graph` (see decode_bench.py);
  Transformer `generate` with `static` cache (transformers compiles the step itself on CUDA) or
  `dynamic` cache (eager; the CPU default).
* against two OpenAI-compatible endpoints (`run_endpoints`), e.g. two vLLM servers started with the
  memory caps: the same requests with `min_tokens`/`max_tokens`, throughput from `usage`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from promptcot_mamba.bench.decode_bench import CUDAGraphStep, kernels_for, load_model
from promptcot_mamba.bench.report import (
    machine_info,
    parse_bytes,
    parse_dtype,
    pyplot,
    save_figure,
    save_result,
)

# Transformer baselines by shape (random weights). s1.1-7B is a Qwen2.5-7B fine-tune.
TRANSFORMER_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768),
    "tiny-qwen2": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=256, max_position_embeddings=4096),
}


@dataclass
class ThroughputConfig:
    mamba: str = "tiny"  # Mamba2LM named config or folder
    transformer: str = "tiny-qwen2"  # TRANSFORMER_SHAPES name or a transformers folder
    intervals: tuple[tuple[int, int], ...] = ((8, 16), (16, 32))
    memory_caps: tuple[str, ...] = ("24GB", "72GB")
    prompt_len: int = 32
    num_requests: int = 16
    max_batch: int = 256
    activation_reserve: float = 0.1  # fraction of the cap kept for activations and workspace
    dtype: str = "fp32"
    device: str = "cpu"
    mamba_path: str = "auto"  # eager | graph | triton-graph | auto (triton-graph on CUDA with triton)
    transformer_cache: str = "auto"  # static | dynamic | auto (static on CUDA)
    seed: int = 0

    def __post_init__(self) -> None:
        self.intervals = tuple((int(a), int(b)) for a, b in self.intervals)
        for a, b in self.intervals:
            if not 1 <= a <= b:
                raise ValueError(f"ThroughputConfig.intervals: need 1 <= a <= b, got [{a}, {b}]")
        for cap in self.memory_caps:
            parse_bytes(cap)
        if self.prompt_len < 1 or self.num_requests < 1 or self.max_batch < 1:
            raise ValueError("ThroughputConfig: prompt_len, num_requests and max_batch must be >= 1")
        if not 0 <= self.activation_reserve < 1:
            raise ValueError("ThroughputConfig.activation_reserve must be in [0, 1)")
        if self.mamba_path not in ("auto", "eager", "graph", "triton-graph"):
            raise ValueError(f"ThroughputConfig.mamba_path: unknown {self.mamba_path!r}")
        if self.transformer_cache not in ("auto", "static", "dynamic"):
            raise ValueError(f"ThroughputConfig.transformer_cache: unknown {self.transformer_cache!r}")
        parse_dtype(self.dtype)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def resolved_mamba_path(self) -> str:
        if self.mamba_path != "auto":
            return self.mamba_path
        if not self.cuda:
            return "eager"
        from promptcot_mamba.ssd.backend import importable

        return "triton-graph" if importable("triton") else "graph"

    def resolved_transformer_cache(self) -> str:
        if self.transformer_cache != "auto":
            return self.transformer_cache
        return "static" if self.cuda else "dynamic"


# ------------------------------------------------------------------------------- the models
def load_transformer(name_or_path: str, dtype: torch.dtype, device: str, seed: int = 0):
    try:
        from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM
    except ImportError as err:
        raise ImportError("the Transformer baseline needs transformers: pip install 'promptcot-mamba[hf]'") from err
    if name_or_path in TRANSFORMER_SHAPES:
        torch.manual_seed(seed)
        cfg = Qwen2Config(**TRANSFORMER_SHAPES[name_or_path], tie_word_embeddings=False)
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg)
        return model.to(dtype).eval()
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    except TypeError:  # transformers < 4.56 spells it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(name_or_path, torch_dtype=dtype)
    return model.to(device).eval()


def kv_bytes_per_token(model) -> int:
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return 2 * c.num_hidden_layers * kv_heads * head_dim * next(model.parameters()).element_size()


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())


def batch_under_cap(cap: int, weights: int, per_seq: int, reserve: float, limit: int) -> int:
    """How many sequences fit: (cap − weights − reserve·cap) // per-sequence bytes, at most `limit`."""
    free = cap * (1.0 - reserve) - weights
    return max(0, min(limit, int(free // per_seq))) if per_seq > 0 else limit


def generation_lengths(interval: tuple[int, int], n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    a, b = interval
    return [rng.randint(a, b) for _ in range(n)]


# --------------------------------------------------------------------------------- running
class _MambaRunner:
    """Static batches through prefill + decode; with a CUDA graph per batch size (captured at warm-up)."""

    def __init__(self, model, path: str):
        self.model, self.path = model, path
        model.kernels = kernels_for(path, model.kernels)
        self.graphs: dict[int, tuple[CUDAGraphStep, Any]] = {}

    def run(self, ids: torch.Tensor, steps: int) -> None:
        logits, state = self.model.prefill(ids)
        tok = logits.argmax(-1)
        if self.path.endswith("graph"):
            b = ids.shape[0]
            if b not in self.graphs:
                static = self.model.allocate_state(b)
                self.graphs[b] = (CUDAGraphStep(self.model.step, static, tok), static)
            graph, static = self.graphs[b]
            static.conv.copy_(state.conv)
            static.ssm.copy_(state.ssm)
            for _ in range(steps):
                tok = graph(tok).argmax(-1)
        else:
            for _ in range(steps):
                tok = self.model.step(tok, state).argmax(-1)


def _transformer_run(model, ids: torch.Tensor, steps: int, cache: str) -> None:
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
                       do_sample=False, pad_token_id=0, cache_implementation=cache)


def _timed_workload(run, lengths: list[int], batch: int, prompt_len: int, vocab: int, device: str,
                    seed: int) -> float:
    """Run all requests in static batches of `batch` (the last one padded to full size so compiled
    graphs are reused); each batch decodes for its longest member. Returns wall seconds."""
    g = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    for i in range(0, len(lengths), batch):
        chunk = lengths[i:i + batch]
        ids = torch.randint(0, vocab, (batch, prompt_len), generator=g).to(device)
        run(ids, max(chunk))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t


def run_inprocess(cfg: ThroughputConfig, progress: bool = True) -> dict[str, Any]:
    """One model resident at a time (two 7B models do not fit a 24 GB cap together): all caps and
    intervals for Mamba, then the same for the Transformer; the rows pair them up."""
    from promptcot_mamba.model.state import InferenceState

    dtype = parse_dtype(cfg.dtype)
    mpath, tcache = cfg.resolved_mamba_path(), cfg.resolved_transformer_cache()
    rows: dict[tuple[str, tuple[int, int]], dict[str, Any]] = {}
    for cap_text in cfg.memory_caps:
        for interval in cfg.intervals:
            lengths = generation_lengths(interval, cfg.num_requests, cfg.seed)
            rows[(cap_text, interval)] = {"cap": cap_text, "cap_bytes": parse_bytes(cap_text),
                                          "interval": list(interval), "generated_tokens": sum(lengths),
                                          "mamba_path": mpath, "transformer_path": f"generate/{tcache}"}
    models: dict[str, dict[str, Any]] = {}
    for who in ("mamba", "transformer"):
        if who == "mamba":
            model = load_model(cfg.mamba, dtype, cfg.device, cfg.seed)
            per_seq_of = (lambda interval, m=model: InferenceState.bytes_per_sequence(m.config, dtype))
            run = _MambaRunner(model, mpath).run
            models[who] = {"name": cfg.mamba, "weight_bytes": weight_bytes(model),
                           "state_bytes_per_seq": per_seq_of((0, 0))}
        else:
            model = load_transformer(cfg.transformer, dtype, cfg.device, cfg.seed)
            kv_tok = kv_bytes_per_token(model)
            per_seq_of = (lambda interval, k=kv_tok: k * (cfg.prompt_len + interval[1]))
            run = (lambda ids, n, m=model: _transformer_run(m, ids, n, tcache))
            models[who] = {"name": cfg.transformer, "weight_bytes": weight_bytes(model), "kv_bytes_per_token": kv_tok}
        if cfg.cuda:  # the fp32 build of random weights leaves cached blocks the cap would count
            torch.cuda.empty_cache()
        weights = models[who]["weight_bytes"]
        vocab = model.config.vocab_size
        for cap_text in cfg.memory_caps:
            cap = parse_bytes(cap_text)
            if cfg.cuda:
                total = torch.cuda.get_device_properties(cfg.device).total_memory
                torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), cfg.device)
            try:
                for interval in cfg.intervals:
                    row = rows[(cap_text, interval)]
                    lengths = generation_lengths(interval, cfg.num_requests, cfg.seed)
                    per_seq = per_seq_of(interval)
                    b = batch_under_cap(cap, weights, per_seq, cfg.activation_reserve,
                                        min(cfg.max_batch, cfg.num_requests))
                    row[f"{who}_batch"] = b
                    row[f"{who}_bytes_per_seq"] = per_seq
                    if b == 0:
                        row[f"{who}_error"] = "does not fit under the cap"
                        continue
                    try:
                        # warm-up (compilation, graph capture) outside the timed window
                        _timed_workload(run, [min(8, interval[1])] * b, b, cfg.prompt_len, vocab, cfg.device, cfg.seed)
                        secs = _timed_workload(run, lengths, b, cfg.prompt_len, vocab, cfg.device, cfg.seed)
                        row[f"{who}_s"] = round(secs, 3)
                        row[f"{who}_tokens_per_s"] = round(sum(lengths) / secs, 2)
                    except Exception as err:  # OOM under the cap is a result, not a crash
                        row[f"{who}_error"] = f"{type(err).__name__}: {err}"[:300]
                        if cfg.cuda:
                            torch.cuda.empty_cache()
                    if progress:
                        print({k: v for k, v in row.items() if k.startswith(who) or k in ("cap", "interval")}, flush=True)
            finally:
                if cfg.cuda:
                    torch.cuda.set_per_process_memory_fraction(1.0, cfg.device)
        del model, run
        if cfg.cuda:
            torch.cuda.empty_cache()
    for row in rows.values():
        if row.get("mamba_tokens_per_s") and row.get("transformer_tokens_per_s"):
            row["ratio"] = round(row["mamba_tokens_per_s"] / row["transformer_tokens_per_s"], 3)
    return {"benchmark": "throughput", "mode": "in-process", "config": asdict(cfg),
            "machine": machine_info(cfg.device), "models": models,
            "paper": {"ratio_24GB": 3.66, "ratio_72GB": 1.69}, "rows": list(rows.values())}


def run_endpoints(mamba_url: str, transformer_url: str, intervals, *, num_requests: int = 32,
                  prompt: str = "Write a long, careful proof that there are infinitely many primes.",
                  cap_label: str = "server-side", mamba_model: str | None = None,
                  transformer_model: str | None = None, concurrency: int = 256,
                  temperature: float = 0.8, progress: bool = True) -> dict[str, Any]:
    """The same measurement against two OpenAI-compatible servers (vLLM: start each with its cap,
    e.g. `--gpu-memory-utilization`); `min_tokens = a`, `max_tokens = b` as in the paper."""
    from promptcot_mamba.llm.base import GenerationRequest
    from promptcot_mamba.llm.openai_client import OpenAIClient

    rows = []
    clients = {"mamba": OpenAIClient(mamba_url, model=mamba_model, max_concurrency=concurrency),
               "transformer": OpenAIClient(transformer_url, model=transformer_model, max_concurrency=concurrency)}
    for a, b in intervals:
        row: dict[str, Any] = {"cap": cap_label, "interval": [a, b]}
        for who, client in clients.items():
            reqs = [GenerationRequest(prompt=prompt, max_tokens=b, min_tokens=a, temperature=temperature, seed=i)
                    for i in range(num_requests)]
            t = time.perf_counter()
            out = client.generate(reqs)
            secs = time.perf_counter() - t
            gens = [g for per in out for g in per]
            toks = sum(g.completion_tokens or 0 for g in gens if g.ok)
            row[f"{who}_s"] = round(secs, 3)
            row[f"{who}_tokens"] = toks
            row[f"{who}_failed"] = sum(not g.ok for g in gens)
            row[f"{who}_tokens_per_s"] = round(toks / secs, 2) if secs > 0 else math.nan
        if row["transformer_tokens_per_s"]:
            row["ratio"] = round(row["mamba_tokens_per_s"] / row["transformer_tokens_per_s"], 3)
        rows.append(row)
        if progress:
            print(row, flush=True)
    return {"benchmark": "throughput", "mode": "endpoints", "machine": machine_info("cpu"),
            "endpoints": {"mamba": mamba_url, "transformer": transformer_url},
            "paper": {"ratio_24GB": 3.66, "ratio_72GB": 1.69}, "rows": rows}


def plot_throughput(result: dict[str, Any], path: str | Path) -> Path:
    """Figure 2's layout: one panel per memory cap, grouped bars per generation-length interval."""
    plt = pyplot()
    rows = result["rows"]
    caps = list(dict.fromkeys(r["cap"] for r in rows))
    fig, axes = plt.subplots(1, len(caps), figsize=(5.5 * len(caps), 4), squeeze=False)
    for ax, cap in zip(axes[0], caps):
        sub = [r for r in rows if r["cap"] == cap]
        labels = [f"[{r['interval'][0]}, {r['interval'][1]}]" for r in sub]
        xs = range(len(sub))
        w = 0.38
        m = [r.get("mamba_tokens_per_s") or 0 for r in sub]
        t = [r.get("transformer_tokens_per_s") or 0 for r in sub]
        ax.bar([x - w / 2 for x in xs], m, w, label="Mamba-2", color="#d62728")
        ax.bar([x + w / 2 for x in xs], t, w, label="Transformer", color="#1f77b4")
        for x, r in zip(xs, sub):
            if r.get("ratio"):
                ax.annotate(f"{r['ratio']:.2f}×", (x, max(m[x], t[x])), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs), labels, rotation=30)
        ax.set(xlabel="generation length [min_tokens, max_tokens]", ylabel="tokens / s", title=f"memory cap {cap}")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Generation throughput ({result['mode']}) — {result['machine'].get('gpu') or result['machine']['device']}")
    return save_figure(fig, path)


def save(result: dict[str, Any], json_path: str | Path, plot: bool = True) -> dict[str, str]:
    return save_result(result, json_path, plot_throughput, plot)
