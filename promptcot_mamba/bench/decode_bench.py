"""`pcm bench decode`: Mamba-2 decode speed and memory against batch size and context length.

For each (mode, batch size b, context length): prefill a random prompt of that length, then time
`steps` greedy decode steps (argmax fed back on the device: no host sync inside the loop). Reports
tokens/s (b · steps / time), ms per step, the inference state's bytes — constant in the context length,
the point of the architecture — and peak device memory.

Modes:
    eager        `Mamba2LM.step` as written (PyTorch ops, one launch per op)
    graph        the same step captured once per batch size in a CUDA graph (CUDA only)
    triton       the model's fused step (kernels step="fused", model/fused_step.py): conv, SSM update
                 and gated norm as Triton kernels
    triton-graph the fused step captured in a CUDA graph (CUDA only)

Targets at the Codestral shape on one H100/H200: ≥ 200 tok/s at b = 1, ≥ 4,000 tok/s at b = 128.
Measured there in plain PyTorch (H200, bf16 weights, fp32 state): eager 44 ms a step at b = 1; one
CUDA graph 104 tok/s at b = 1 and 1,237 tok/s at b = 128. Floors: ~290 tok/s at b = 1 (14.6 GB of
weights read per step at ~4.3 TB/s) and ~6,600 tok/s at b = 128 (the fp32 state read and written).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from promptcot_mamba.bench.report import (
    machine_info,
    parse_dtype,
    peak_memory_gb,
    peak_memory_reset,
    pyplot,
    save_figure,
    save_result,
)
from promptcot_mamba.generate.decode_graphs import CUDAGraphStep
from promptcot_mamba.model.kernels import Kernels

MODES = ("eager", "graph", "triton", "triton-graph")
__all__ = ["CUDAGraphStep", "DecodeBenchConfig", "run_decode_bench", "kernels_for"]


def kernels_for(mode: str, base: Kernels | None = None) -> Kernels:
    """The model's kernels for a mode: the fused Triton step for triton*, the eager step otherwise."""
    return (base or Kernels()).with_(step="fused" if mode.startswith("triton") else "eager")


@dataclass
class DecodeBenchConfig:
    model: str = "tiny"  # a named config (random weights) or a checkpoint folder
    dtype: str = "fp32"
    batch_sizes: tuple[int, ...] = (1, 4)
    contexts: tuple[int, ...] = (16, 64)
    steps: int = 16
    warmup_steps: int = 2
    modes: tuple[str, ...] = ("eager",)
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ValueError(f"DecodeBenchConfig.modes: unknown {bad}; known {MODES}")
        if not self.device.startswith("cuda") and any(m.endswith("graph") for m in self.modes):
            raise ValueError("DecodeBenchConfig: CUDA-graph modes need device='cuda'")
        if self.steps < 1 or not self.batch_sizes or not self.contexts or min(self.batch_sizes + self.contexts) < 1:
            raise ValueError("DecodeBenchConfig: steps, batch sizes and contexts must be >= 1")
        parse_dtype(self.dtype)


def load_model(name_or_path: str, dtype: torch.dtype, device: str, seed: int = 0):
    """A named config with random weights (built on the device) or a checkpoint folder."""
    from promptcot_mamba.model.config import NAMED_CONFIGS
    from promptcot_mamba.model.lm import Mamba2LM

    if name_or_path in NAMED_CONFIGS:
        torch.manual_seed(seed)
        with torch.device(device):
            model = Mamba2LM(name_or_path)
        return model.to(dtype).eval()
    return Mamba2LM.from_pretrained(name_or_path, dtype=dtype, device=device)


def measure_decode(model, mode: str, batch: int, context: int, steps: int, warmup: int,
                   device: str, seed: int = 0) -> dict[str, Any]:
    """Time `model.step` (whichever step the model's kernels choose) as `mode` runs it."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, context), generator=g).to(device)
    peak_memory_reset(device)
    t = time.perf_counter()
    logits, state = model.prefill(ids)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    prefill_s = time.perf_counter() - t
    tokens = logits.argmax(-1)
    run = (CUDAGraphStep(model.step, state, tokens) if mode.endswith("graph")
           else (lambda tok: model.step(tok, state)))
    with torch.no_grad():
        for _ in range(warmup):
            tokens = run(tokens).argmax(-1)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            tokens = run(tokens).argmax(-1)  # stays on the device: no host sync per step
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    return {"mode": mode, "batch": batch, "context": context, "steps": steps,
            "prefill_ms": round(prefill_s * 1e3, 2), "ms_per_step": round(dt / steps * 1e3, 3),
            "tokens_per_s": round(batch * steps / dt, 1), "state_bytes": state.nbytes,
            "state_bytes_per_seq": state.nbytes // batch, "peak_gb": peak_memory_gb(device)}


def run_decode_bench(cfg: DecodeBenchConfig, progress: bool = True) -> dict[str, Any]:
    dtype = parse_dtype(cfg.dtype)
    model = load_model(cfg.model, dtype, cfg.device, cfg.seed)
    rows = []
    for mode in cfg.modes:
        model.kernels = kernels_for(mode, model.kernels)
        for b in cfg.batch_sizes:
            for ctx in cfg.contexts:
                try:
                    row = measure_decode(model, mode, b, ctx, cfg.steps, cfg.warmup_steps, cfg.device, cfg.seed)
                except Exception as err:  # e.g. out of memory at the largest batch: keep the other rows
                    row = {"mode": mode, "batch": b, "context": ctx, "error": f"{type(err).__name__}: {err}"[:400]}
                    if cfg.device.startswith("cuda"):
                        torch.cuda.empty_cache()
                rows.append(row)
                if progress:
                    print(row, flush=True)
    base = {(r["batch"], r["context"]): r.get("tokens_per_s") for r in rows if r["mode"] == cfg.modes[0]}
    for r in rows:
        if r.get("tokens_per_s") and base.get((r["batch"], r["context"])):
            r[f"speedup_vs_{cfg.modes[0]}"] = round(r["tokens_per_s"] / base[(r["batch"], r["context"])], 3)
    return {"benchmark": "decode", "config": asdict(cfg), "machine": machine_info(cfg.device),
            "model_parameters": model.num_parameters(), "rows": rows}


def plot_decode(result: dict[str, Any], path: str | Path) -> Path:
    plt = pyplot()
    rows = [r for r in result["rows"] if "error" not in r]
    ctx = max(r["context"] for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        pts = sorted((r["batch"], r["tokens_per_s"]) for r in rows if r["mode"] == mode and r["context"] == ctx)
        axes[0].plot(*zip(*pts), marker="o", label=mode)
        b = max(r["batch"] for r in rows if r["mode"] == mode)
        mem = sorted((r["context"], r["state_bytes"] / 2**20) for r in rows if r["mode"] == mode and r["batch"] == b)
        axes[1].plot(*zip(*mem), marker="o", label=f"{mode}, batch {b}")
    axes[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="tokens/s",
                title=f"decode throughput (context {ctx})")
    axes[1].set(xscale="log", xlabel="context length (tokens)", ylabel="inference state (MiB)",
                title="state memory vs context")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    m = result["machine"]
    fig.suptitle(f"Mamba-2 decode, {result['config']['model']} {result['config']['dtype']} — {m.get('gpu') or m['device']}")
    return save_figure(fig, path)


def save(result: dict[str, Any], json_path: str | Path, plot: bool = True) -> dict[str, str]:
    return save_result(result, json_path, plot_decode, plot)
