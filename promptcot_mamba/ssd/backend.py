"""The SSD backend type and the probes optional backends need. A leaf module: it imports nothing of
the project, so the kernels (triton_scan.py) and the dispatch table (dispatch.py) can both use it
without importing each other."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from torch import Tensor


@dataclass(frozen=True)
class Backend:
    name: str
    fn: Callable[..., tuple[Tensor, Tensor]]  # (x, dt, A, B, C, D, initial_state, doc[, chunk_size]) → (y, state)
    available: Callable[[Tensor], bool]  # may "auto" pick it for tensors like this one?
    priority: int  # higher wins under "auto"
    chunked: bool = False  # takes chunk_size
    # when named explicitly (not under "auto"); None = same as `available`. Lets the Triton backends
    # run on CPU tensors through TRITON_INTERPRET=1 in tests, which "auto" must never choose. It may
    # raise an error that says what is missing (e.g. which extra to install).
    forced_available: Callable[[Tensor], bool] | None = None


@cache
def importable(module: str) -> bool:
    """Whether `module` could be imported, without importing it (heavy GPU packages stay unloaded)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def interpreting() -> bool:
    """Triton's CPU interpreter is on (TRITON_INTERPRET, read now: Triton itself reads it at import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
