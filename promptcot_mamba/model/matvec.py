"""The decode step's projections: matrix-vector products that run at the memory's speed on CPU.

A decode step reads every weight once for a handful of tokens, so its speed is set by how fast the
projections stream the weights (516 MB at 130M in fp32). ATen's `F.linear` at batch 1..16 on CPU
does not get there: measured on the 2-core benchmark machine (idle, fp32, 130M shapes), the 154 MB
LM head streamed at 17 GB/s with 1 or 2 threads (a single-threaded GEMV), and at 7–10 GB/s for 2–16
rows, against 46–52 GB/s for a plain read. oneDNN's linear, given the same dense row-major weight
(no packed copy, so no extra memory), streamed it at 46 GB/s at batch 1 and ~30 GB/s at 2–16.

`project(x, layer, backend)` takes the step's layer: an `nn.Linear` goes through `linear(x, weight,
bias, backend)`, which uses oneDNN for fp32 CPU inference and `F.linear` everywhere else (autograd,
other dtypes and devices, or a torch built without oneDNN); any other layer (an int8 `Int8Linear`,
model/quantize.py, with its own kernel) through its own forward. `backend` is the
`matvec` field of the model's kernels (model/kernels.py): "auto" probes oneDNN once on a tiny
product and logs which one it uses, "onednn" insists on it, "aten" never uses it. Results agree with
`F.linear` to fp32 rounding (a different summation order), tests/model/test_model_decode.py.

`project_rows(x, layer, backend)` is the same choice for many rows (prefill, scoring). Whether a bf16
GEMM is faster as it is or widened to fp32 depends on the CPU, so it is measured, once per process
(`widening_pays`). On the first benchmark machine (avx512_bf16, no AMX) ATen's and oneDNN's bf16
GEMMs ran at 80-83 GFLOP/s on one thread against 138-143 for fp32 (256 × 2560 × 10,576, the 2.7B
in_proj), and the widened product took 113 ms against 171 at 256 rows; on a later one (an AMD EPYC,
also avx512_bf16) the probe's product took 2.3 ms in bf16 against 4.8 ms widened, and bf16 prefill at
2.7B went from 4.7 s widened to 3.2 s native (transformers: 4.7 s; results/real-size-cpu.json).
Widening goes a block of rows at a time (the transient is one block, never a full fp32 copy) into
oneDNN's fp32 GEMM. Below `UPCAST_ROWS` rows the widening costs more than it saves (1 row: 14 ms
against 6), so short inputs keep `F.linear`. The result is rounded to the input's dtype, as bf16 GEMMs
(which accumulate in fp32) do.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from promptcot_mamba.common.tolerances import rel_err, rtol

log = logging.getLogger(__name__)

_onednn_ok: bool | None = None  # the probe's answer, once per process (a fact about this torch build)


def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_available() -> bool:
    """Whether oneDNN's dense-weight linear runs here and agrees with F.linear on a small product."""
    global _onednn_ok
    if _onednn_ok is None:
        try:
            g = torch.Generator().manual_seed(0)
            x, w, b = (torch.randn(s, generator=g) for s in ((3, 40), (24, 40), (24,)))
            tol = rtol(torch.float32, 40)  # 40-term dot products summed in another order
            ok = (torch.backends.mkldnn.is_available()
                  and rel_err(_onednn_linear(x, w, b), F.linear(x, w, b)) <= tol
                  and rel_err(_onednn_linear(x[:1], w, None), F.linear(x[:1], w)) <= tol)
            _onednn_ok = bool(ok)
        except Exception as e:  # a build without the op, or one that rejects dense weights
            log.info("matvec: oneDNN linear unusable (%s); decode projections use F.linear", e)
            _onednn_ok = False
        log.info("matvec: decode projections on CPU use %s", "oneDNN" if _onednn_ok else "F.linear")
    return _onednn_ok


_widen: bool | None = None  # widening_pays' answer, once per process (a fact about this CPU)
PROBE = (256, 1024, 2048)  # rows, d_in, d_out of the timed product: 1 GFLOP, a few ms either way


def widening_pays() -> bool:
    """Whether a bf16 product of many rows runs faster with the weight widened to fp32 (oneDNN's
    fp32 GEMM, `project_rows`) than as ATen's bf16 GEMM, on this CPU: both timed on one product of
    `PROBE`'s shape (best of 3, interleaved), the first time a bf16 model runs many rows; logged."""
    global _widen
    if _widen is None:
        if not onednn_available():
            _widen = False
            return _widen
        rows, d_in, d_out = PROBE
        g = torch.Generator().manual_seed(0)
        x = torch.randn(rows, d_in, generator=g).to(torch.bfloat16)
        w = torch.randn(d_out, d_in, generator=g).to(torch.bfloat16)
        layer = nn.Linear(d_in, d_out, bias=False, dtype=torch.bfloat16)
        with torch.no_grad():
            layer.weight.copy_(w)
        best = {True: float("inf"), False: float("inf")}
        with torch.no_grad():
            for rep in range(4):  # the first pass warms both paths up and is not counted
                for widen in (True, False):
                    t = time.perf_counter()
                    _widened(x, layer) if widen else F.linear(x, w)
                    if rep:
                        best[widen] = min(best[widen], time.perf_counter() - t)
        _widen = best[True] < best[False]
        log.info("matvec: bf16 products of many rows on CPU %s (a %d x %d x %d product: %.1f ms widened to "
                 "fp32, %.1f ms in bf16)", "widen the weights to fp32" if _widen else "stay in bf16",
                 rows, d_in, d_out, best[True] * 1e3, best[False] * 1e3)
    return _widen


def project(x: Tensor, layer: nn.Module, backend: str = "auto") -> Tensor:
    """x (b, d_in) → layer(x) (b, d_out) for the decode step: an `nn.Linear` through `linear` (the
    `backend` choice), any other layer (model/quantize.py's `Int8Linear`) through its own forward."""
    if isinstance(layer, nn.Linear):
        return linear(x, layer.weight, layer.bias, backend)
    return layer(x)


UPCAST_ROWS = 64  # rows from which a bf16 weight is widened to fp32 for the product (measured, above)
UPCAST_BLOCK = 1024  # weight rows widened at a time (10 MB of fp32 at hidden 2560: stays in cache)


def project_rows(x: Tensor, layer: nn.Module, backend: str = "auto") -> Tensor:
    """x (..., d_in) → layer(x) (..., d_out) for many rows at once (the forward/prefill projections):
    bf16 weights are multiplied in fp32 on CPU inference where that is faster here (module docstring);
    everything else is the layer's own forward. backend "aten" (kernels matvec=aten) always uses the
    layer's forward, "onednn" always widens, "auto" asks `widening_pays`."""
    w = getattr(layer, "weight", None)
    if (backend == "aten" or not isinstance(layer, nn.Linear) or w.dtype != torch.bfloat16
            or x.device.type != "cpu" or x.dtype != torch.bfloat16 or torch.is_grad_enabled()
            or x.numel() // x.shape[-1] < UPCAST_ROWS or not onednn_available()
            or (backend == "auto" and not widening_pays())):
        return layer(x)
    return _widened(x, layer)


def _widened(x: Tensor, layer: nn.Linear) -> Tensor:
    """`layer(x)` for a bf16 layer as fp32 GEMMs over widened blocks of its weight, rounded to bf16."""
    w = layer.weight
    x2 = x.reshape(-1, x.shape[-1]).float()
    out = torch.empty(x2.shape[0], w.shape[0], dtype=torch.float32, device=x.device)
    buf = torch.empty(min(UPCAST_BLOCK, w.shape[0]), w.shape[1], dtype=torch.float32, device=x.device)
    for i in range(0, w.shape[0], UPCAST_BLOCK):
        blk = buf[:min(UPCAST_BLOCK, w.shape[0] - i)]
        blk.copy_(w[i:i + blk.shape[0]])
        out[:, i:i + blk.shape[0]] = _onednn_linear(x2, blk, None)
    if layer.bias is not None:
        out += layer.bias
    return out.to(x.dtype).view(*x.shape[:-1], w.shape[0])


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, backend: str = "auto") -> Tensor:
    """x (b, d_in) → x Wᵀ + bias (b, d_out); `F.linear` semantics, for the decode step.
    backend: "auto" | "onednn" (a RuntimeError where oneDNN's linear does not work) | "aten"."""
    if backend == "aten":
        return F.linear(x, weight, bias)
    if backend == "onednn" and not onednn_available():
        raise RuntimeError("matvec backend 'onednn': torch.ops.mkldnn._linear_pointwise does not work "
                           "in this torch build; use kernels matvec=auto or matvec=aten")
    if (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and weight.is_contiguous() and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and onednn_available()):
        return _onednn_linear(x if x.is_contiguous() else x.contiguous(), weight, bias)
    return F.linear(x, weight, bias)
