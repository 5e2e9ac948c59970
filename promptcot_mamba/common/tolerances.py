"""How close two computations of the same value must be: one rule, by dtype and by reductions.

Every equivalence check in the project (SSD forms and kernels, fused and eager decode steps, packed
and unpacked training, sharded and single-process gradients) compares with

    rel_err(actual, expected) = max|actual − expected| / max|expected|   ≤   rtol(dtype, reductions)

    rtol(dtype, n) = INPUT_ROUNDINGS · u(dtype) + ACCUMULATION · √n · u(float32)

- `u` is the unit roundoff: 2⁻²⁴ ≈ 6.0e-8 for float32, 2⁻⁸ ≈ 3.9e-3 for bfloat16, 2⁻¹¹ ≈ 4.9e-4 for
  float16. `dtype` is the dtype the operands are stored in: each bf16 rounding of an input or an
  intermediate costs up to u(bf16) relative, and a value passes through a handful of them.
- `n` is the number of terms in the longest sum on the value's path (a dot product over N, a scan over
  T·N, a gradient summed over batch × T tokens × width). Sums run in float32 (float64 for float64). Two correct
  implementations that add in a different order — another kernel, thread count or CPU's SIMD width —
  differ by a random walk of roundings, about √n · u(float32) of the largest magnitude (the worst
  case, n · u, needs every rounding to fall the same way).
- The comparison is scale-relative, not elementwise: an entry that is a near-cancelling sum has a
  tiny value but an absolute error of the size of its terms, so an elementwise rtol/atol fails it on
  some CPUs and not others (a gradient compared at atol=1e-6 measured 2.4e-6 on another machine).

Bit equality is asked for only where it is the point (same code, same machine: resume, seeds,
greedy tokens of one engine against itself), never across implementations.
"""

from __future__ import annotations

import math

import torch

UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
INPUT_ROUNDINGS = 10  # roundings of the operands (and headroom) in the operand dtype
ACCUMULATION = 10  # headroom over the √n random-walk estimate of float32 summation-order differences

# The SSD tests' longest reduction: a scan over T = 512 tokens of N = 64 state channels. At that size
# the rule gives 1.1e-4 for float32, 3.9e-2 for bfloat16 and 5.0e-3 for float16.
SSD_TERMS = 512 * 64


def rtol(dtype: torch.dtype, reductions: int = 1) -> float:
    """The scale-relative tolerance of a value stored in `dtype` whose longest float32 sum had
    `reductions` terms (see the module docstring)."""
    if dtype not in UNIT_ROUNDOFF:
        raise ValueError(f"rtol: no unit roundoff known for {dtype}")
    if reductions < 1:
        raise ValueError(f"rtol: reductions must be >= 1, got {reductions}")
    acc = torch.float64 if dtype == torch.float64 else torch.float32  # what the sums run in
    return INPUT_ROUNDINGS * UNIT_ROUNDOFF[dtype] + ACCUMULATION * math.sqrt(reductions) * UNIT_ROUNDOFF[acc]


RTOL = {dt: rtol(dt, SSD_TERMS) for dt in (torch.float32, torch.bfloat16, torch.float16)}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a − b| / max|b|, in float32 (0 when both are zero)."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) if b.numel() else 0.0


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype | None = None,
                 reductions: int = 1, what: str = "") -> None:
    """Assert `rel_err(actual, expected) <= rtol(dtype, reductions)`; `dtype` defaults to the
    expected tensor's. The message says which value, by how much, and against which bound."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{what or 'value'}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    dt = dtype or expected.dtype
    err, tol = rel_err(actual, expected), rtol(dt, reductions)
    if not err <= tol:
        raise AssertionError(f"{what or 'value'}: relative error {err:.3g} > {tol:.3g} "
                             f"(dtype {str(dt).replace('torch.', '')}, {reductions} reduction terms)")
