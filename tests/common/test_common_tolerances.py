"""The one tolerance rule: by dtype and by the number of terms of the longest reduction."""

import math

import pytest
import torch

from promptcot_mamba.common.tolerances import RTOL, SSD_TERMS, assert_close, rel_err, rtol


def test_rule_grows_with_reductions_and_coarser_dtypes():
    assert rtol(torch.float32, 100) < rtol(torch.float32, 10_000) < rtol(torch.float16, 10_000) < rtol(
        torch.bfloat16, 10_000)
    assert rtol(torch.float64, 100) < 1e-13  # float64 sums run in float64
    # the SSD forms' table is the rule at the tests' longest scan
    assert RTOL[torch.float32] == rtol(torch.float32, SSD_TERMS) == pytest.approx(1.09e-4, rel=0.01)
    with pytest.raises(ValueError):
        rtol(torch.int32)


def test_two_summation_orders_of_a_float32_sum_stay_inside_the_rule():
    g = torch.Generator().manual_seed(0)
    for n in (100, 10_000, 1_000_000):
        x = torch.randn(n, generator=g)
        forward, backward = x.sum(), x.flip(0).cumsum(0)[-1]  # another order of the same sum
        exact = x.double().sum().float()
        scale = x.abs().sum()  # the rule bounds the error relative to the terms' size
        assert abs(float(forward - exact)) <= rtol(torch.float32, n) * float(scale)
        assert abs(float(backward - exact)) <= rtol(torch.float32, n) * float(scale)


def test_rel_err_is_scale_relative_and_assert_close_explains():
    b = torch.tensor([1000.0, 1e-9])
    a = b + torch.tensor([0.0, 1e-5])  # 1e4x off in the tiny entry, nothing at the scale of the vector
    assert rel_err(a, b) == pytest.approx(1e-8, rel=1e-3)
    assert_close(a, b, reductions=1)
    with pytest.raises(AssertionError, match=r"grad: relative error 0\.01 > .* \(dtype float32, 4 reduction terms\)"):
        assert_close(b * 1.01, b, reductions=4, what="grad")
    with pytest.raises(AssertionError, match="shape"):
        assert_close(b[:1], b)
    assert math.isfinite(rel_err(torch.zeros(3), torch.zeros(3)))
