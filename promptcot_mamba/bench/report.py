"""What every benchmark shares: the machine it ran on, a median timer that excludes warm-up and
synchronises the device, and the JSON + PNG it leaves behind (results kept with date and device)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    dev = torch.device(device)
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(dev),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info["gpu"] = props.name
        info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], Any], *, device: str | torch.device = "cpu", warmup: int = 1,
                iters: int = 5, budget_s: float | None = None) -> float:
    """Median seconds of `fn()` over `iters` runs after `warmup` untimed runs. With `budget_s`, stops
    early (keeping at least one timed run) once the timed runs have used that much wall time."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    spent = 0.0
    for _ in range(max(1, iters)):
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
        spent += times[-1]
        if budget_s is not None and spent > budget_s:
            break
    return statistics.median(times)


def peak_memory_reset(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: str | torch.device) -> float | None:
    if torch.device(device).type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return None


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def parse_dtype(name: str) -> torch.dtype:
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(table)}")
    return table[name]


def parse_bytes(text: str) -> int:
    """'24GB' / '24GiB' / '512MB' / '1e9' → bytes (GB = 10^9, GiB = 2^30, as nvidia-smi and vLLM differ)."""
    t = text.strip().upper().replace(" ", "")
    units = {"GIB": 2**30, "MIB": 2**20, "KIB": 2**10, "GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}
    for suffix, mult in units.items():
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult)
    return int(float(t))


def pyplot():
    """matplotlib with the Agg backend, or a clear error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install 'promptcot-mamba[plot]'") from err
    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG (creating the folder) and close it."""
    plt = pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_result(result: dict[str, Any], json_path: str | Path, plot_fn: Callable[[dict[str, Any], Path], Path],
                plot: bool = True) -> dict[str, str]:
    """The JSON every benchmark leaves behind, and its PNG beside it."""
    paths = {"json": str(write_json(json_path, result))}
    if plot:
        paths["png"] = str(plot_fn(result, Path(json_path).with_suffix(".png")))
    return paths
