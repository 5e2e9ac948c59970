"""`pcm bench ssd`: the SSD scan of one layer, backend against backend, over sequence length T.

For every T and backend: forward ms, forward+backward ms, peak memory (CUDA), the error against an
fp32 PyTorch reference, and the speed-up over the plain PyTorch chunked scan measured in the same
run. Targets at Codestral's layer shape (H=128, P=64, N=128, G=8), T = 16,384, bf16, one H100/H200:
fwd ≤ 1.0 ms, fwd+bwd ≤ 3.5 ms, rel err ≤ 1e-2. Measured there on an H200: the PyTorch chunked scan
15.8 ms forward / 39.0 ms forward+backward; fla's `chunk_simple_gla` 2.37 ms forward.

Backends are the names of `promptcot_mamba.ssd` (torch, triton, fla, quadratic, recurrent) plus
`torch-compile`, `torch.compile` of the reference chunked scan.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from promptcot_mamba.bench.report import (
    machine_info,
    median_time,
    parse_dtype,
    peak_memory_gb,
    peak_memory_reset,
    pyplot,
    save_figure,
    save_result,
)
from promptcot_mamba.common.tolerances import rel_err
from promptcot_mamba.ssd import available_backends, ssd
from promptcot_mamba.ssd.forms import ssd_chunked

# one layer's SSD dimensions (H heads of P channels, G groups of N-dim B/C)
SHAPES: dict[str, dict[str, int]] = {
    "codestral": {"H": 128, "P": 64, "N": 128, "G": 8},  # Mamba-Codestral-7B / PromptCoT-Mamba-7B
    "mamba2-130m": {"H": 24, "P": 64, "N": 128, "G": 1},
    "tiny": {"H": 8, "P": 16, "N": 16, "G": 2},
}


@dataclass
class SSDBenchConfig:
    lengths: tuple[int, ...] = (256, 1024)
    shape: str = "tiny"
    batch: int = 1
    dtype: str = "fp32"
    backends: tuple[str, ...] = ()  # () = every backend available on the device
    backward: bool = True
    chunk_size: int = 256
    warmup: int = 1
    iters: int = 5
    device: str = "cpu"
    check: bool = True  # relative error against the fp32 torch reference
    budget_s: float = 30.0  # per measurement; the median of what fitted
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"SSDBenchConfig.shape: unknown {self.shape!r}; known {sorted(SHAPES)}")
        if not self.lengths or any(t < 1 for t in self.lengths):
            raise ValueError(f"SSDBenchConfig.lengths must be positive, got {self.lengths}")
        if self.batch < 1 or self.iters < 1 or self.warmup < 0:
            raise ValueError("SSDBenchConfig: batch and iters must be >= 1, warmup >= 0")
        parse_dtype(self.dtype)

    def resolved_backends(self) -> list[str]:
        if self.backends:
            return list(self.backends)
        names = [b for b in available_backends(self.device) if b not in ("quadratic", "recurrent")]
        return names


def make_inputs(T: int, shape: dict[str, int], batch: int, dtype: torch.dtype, device: str, seed: int = 0):
    """Random SSD inputs at realistic scales: Δ = softplus(N(−3, 1)) (mostly 0.01–0.2), A ∈ [−1.5, −0.5]."""
    g = torch.Generator().manual_seed(seed)
    H, P, N, G = shape["H"], shape["P"], shape["N"], shape["G"]
    x = torch.randn(batch, T, H, P, generator=g)
    dt = F.softplus(torch.randn(batch, T, H, generator=g) - 3)
    A = -(torch.rand(H, generator=g) + 0.5)
    B = torch.randn(batch, T, G, N, generator=g)
    C = torch.randn(batch, T, G, N, generator=g)
    D = torch.ones(H)
    out = [t.to(device=device, dtype=dtype) for t in (x, dt)] + [A.to(device)]
    out += [t.to(device=device, dtype=dtype) for t in (B, C)] + [D.to(device)]
    return out


def _runner(name: str, chunk_size: int):
    if name == "torch-compile":
        compiled = torch.compile(ssd_chunked)
        return lambda x, dt, A, B, C, D: compiled(x, dt, A, B, C, D, None, None, chunk_size=chunk_size)
    return lambda x, dt, A, B, C, D: ssd(x, dt, A, B, C, D, chunk_size=chunk_size, backend=name)


def run_ssd_bench(cfg: SSDBenchConfig, progress: bool = True) -> dict[str, Any]:
    dtype = parse_dtype(cfg.dtype)
    shape = SHAPES[cfg.shape]
    rows: list[dict[str, Any]] = []
    names = cfg.resolved_backends()
    for T in cfg.lengths:
        inputs = make_inputs(T, shape, cfg.batch, dtype, cfg.device)
        ref = None
        if cfg.check:
            with torch.no_grad():
                ref = ssd_chunked(*(t.float() for t in inputs), chunk_size=cfg.chunk_size)[0]
        base_fwd = base_fb = None
        for name in names:
            row: dict[str, Any] = {"T": T, "backend": name, **shape, "batch": cfg.batch, "dtype": cfg.dtype}
            run = _runner(name, cfg.chunk_size)
            try:
                def fwd(run=run, inputs=inputs):
                    with torch.no_grad():
                        return run(*inputs)

                peak_memory_reset(cfg.device)
                row["fwd_ms"] = round(1e3 * median_time(fwd, device=cfg.device, warmup=cfg.warmup,
                                                        iters=cfg.iters, budget_s=cfg.budget_s), 4)
                row["fwd_peak_gb"] = peak_memory_gb(cfg.device)
                if ref is not None:
                    row["rel_err_vs_fp32"] = rel_err(fwd()[0], ref)
                if cfg.backward:
                    leaves = [t.detach().clone().requires_grad_(i in (0, 1, 2, 3, 4)) for i, t in enumerate(inputs)]

                    def fwd_bwd(run=run, leaves=leaves):
                        y, _ = run(*leaves)
                        y.float().sum().backward()

                    peak_memory_reset(cfg.device)
                    row["fwdbwd_ms"] = round(1e3 * median_time(fwd_bwd, device=cfg.device, warmup=cfg.warmup,
                                                               iters=cfg.iters, budget_s=cfg.budget_s), 4)
                    row["fwdbwd_peak_gb"] = peak_memory_gb(cfg.device)
            except Exception as err:  # a backend failing at one size must not lose the others' rows
                row["error"] = f"{type(err).__name__}: {err}"[:400]
            if name == "torch":
                base_fwd, base_fb = row.get("fwd_ms"), row.get("fwdbwd_ms")
            if base_fwd and row.get("fwd_ms"):
                row["fwd_speedup_vs_torch"] = round(base_fwd / row["fwd_ms"], 3)
            if base_fb and row.get("fwdbwd_ms"):
                row["fwdbwd_speedup_vs_torch"] = round(base_fb / row["fwdbwd_ms"], 3)
            rows.append(row)
            if progress:
                print({k: v for k, v in row.items() if k not in ("H", "P", "N", "G")}, flush=True)
        del inputs, ref
        if cfg.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {"benchmark": "ssd", "config": asdict(cfg), "machine": machine_info(cfg.device), "rows": rows}


def plot_ssd(result: dict[str, Any], path: str | Path) -> Path:
    plt = pyplot()
    rows = [r for r in result["rows"] if "error" not in r]
    keys = [("fwd_ms", "forward"), ("fwdbwd_ms", "forward + backward")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, title) in zip(axes, keys):
        for name in dict.fromkeys(r["backend"] for r in rows):
            pts = sorted((r["T"], r[key]) for r in rows if r["backend"] == name and r.get(key))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    m, c = result["machine"], result["config"]
    fig.suptitle(f"SSD scan, shape {c['shape']}, {c['dtype']}, batch {c['batch']} — {m.get('gpu') or m['device']}")
    return save_figure(fig, path)


def summary(result: dict[str, Any]) -> list[str]:
    """One line per (T, backend) with ratios against torch from the same run."""
    out = []
    for r in result["rows"]:
        if "error" in r:
            out.append(f"T={r['T']:>6} {r['backend']:<14} ERROR {r['error'][:100]}")
            continue
        fb = f"{r['fwdbwd_ms']:.3f}" if r.get("fwdbwd_ms") is not None else "-"
        err = r.get("rel_err_vs_fp32", math.nan)
        out.append(f"T={r['T']:>6} {r['backend']:<14} fwd {r['fwd_ms']:.3f} ms (x{r.get('fwd_speedup_vs_torch', 1):.2f})"
                   f"  fwd+bwd {fb} ms (x{r.get('fwdbwd_speedup_vs_torch', 1):.2f})  rel err {err:.1e}")
    return out


def save(result: dict[str, Any], json_path: str | Path, plot: bool = True) -> dict[str, str]:
    return save_result(result, json_path, plot_ssd, plot)
