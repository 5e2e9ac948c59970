"""The decode step's projections: matrix-vector products that run at the memory's speed on CPU.

A decode step reads every weight once for a handful of tokens, so its speed is set by how fast the
projections stream the weights (516 MB at 130M in fp32). ATen's `F.linear` at batch 1..16 on CPU
does not get there: measured on the 2-core benchmark machine (idle, fp32, 130M shapes), the 154 MB
LM head streamed at 17 GB/s with 1 or 2 threads (a single-threaded GEMV), and at 7–10 GB/s for 2–16
rows, against 46–52 GB/s for a plain read. oneDNN's linear, given the same dense row-major weight
(no packed copy, so no extra memory), streamed it at 46 GB/s at batch 1 and ~30 GB/s at 2–16.

`project(x, weight, bias)` uses oneDNN for fp32 CPU inference and `F.linear` everywhere else
(autograd, other dtypes and devices, or a torch built without oneDNN). The choice is a module-level
setting, `set_backend("auto" | "onednn" | "aten")`, so tests can force each path; "auto" probes oneDNN
once on a tiny product and logs which one it uses. Results agree with `F.linear` to fp32 rounding
(a different summation order), tests/model/test_model_decode.py.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onednn", "aten")
_backend = "auto"
_onednn_ok: bool | None = None  # the probe's answer, once


def set_backend(name: str) -> None:
    """'auto' (oneDNN where it works, else ATen), 'onednn' (error if it does not work), 'aten'."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"matvec backend must be one of {BACKENDS}, got {name!r}")
    if name == "onednn" and not onednn_available():
        raise RuntimeError("matvec backend 'onednn': torch.ops.mkldnn._linear_pointwise does not work "
                           "in this torch build")
    _backend = name


def get_backend() -> str:
    return _backend


def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_available() -> bool:
    """Whether oneDNN's dense-weight linear runs here and agrees with F.linear on a small product."""
    global _onednn_ok
    if _onednn_ok is None:
        try:
            g = torch.Generator().manual_seed(0)
            x, w, b = (torch.randn(s, generator=g) for s in ((3, 40), (24, 40), (24,)))
            ok = (torch.backends.mkldnn.is_available()
                  and torch.allclose(_onednn_linear(x, w, b), F.linear(x, w, b), atol=1e-5)
                  and torch.allclose(_onednn_linear(x[:1], w, None), F.linear(x[:1], w), atol=1e-5))
            _onednn_ok = bool(ok)
        except Exception as e:  # a build without the op, or one that rejects dense weights
            log.info("matvec: oneDNN linear unusable (%s); decode projections use F.linear", e)
            _onednn_ok = False
        log.info("matvec: decode projections on CPU use %s", "oneDNN" if _onednn_ok else "F.linear")
    return _onednn_ok


def project(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (b, d_in) → x Wᵀ + bias (b, d_out); `F.linear` semantics, for the decode step."""
    if (_backend != "aten" and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and weight.is_contiguous() and not (torch.is_grad_enabled() and
                                                       (x.requires_grad or weight.requires_grad))
            and (_backend == "onednn" or onednn_available())):
        return _onednn_linear(x if x.is_contiguous() else x.contiguous(), weight, bias)
    return F.linear(x, weight, bias)
