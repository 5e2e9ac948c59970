"""The causal conv with a hand-written backward equals the autograd reference (values and gradients)."""

import pytest
import torch

from promptcot_mamba.common.tolerances import SSD_TERMS, assert_close
from promptcot_mamba.model.conv import _ShiftConv, _tap_masks, causal_conv, causal_conv_ref


def _inputs(seed, b, T, C, K, with_prev, with_doc, with_bias, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, C, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(C, 1, K, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(C, generator=g, dtype=dtype, requires_grad=True) if with_bias else None
    prev = torch.randn(b, C, K, generator=g, dtype=dtype, requires_grad=True) if with_prev else None
    doc = None
    if with_doc:  # contiguous runs with a boundary inside the first K positions and later ones
        cuts = torch.zeros(b, T, dtype=torch.long)
        for i in range(b):
            extra = {int(torch.randint(1, T, (1,), generator=g))} if T > 1 else set()
            for t in {1, T // 2, T - 1} | extra:
                if 0 < t < T:
                    cuts[i, t] = 1
        doc = cuts.cumsum(1)
    return x, w, bias, prev, doc


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("T", [1, 3, 11])
@pytest.mark.parametrize("with_prev, with_doc, with_bias", [
    (False, False, True), (True, False, True), (False, True, False), (True, True, True)])
def test_values_and_gradients_match_reference(K, T, with_prev, with_doc, with_bias):
    x, w, bias, prev, doc = _inputs(K * 100 + T, 2, T, 5, K, with_prev, with_doc, with_bias)
    leaves = [t for t in (x, w, bias, prev) if t is not None]
    out_r, win_r = causal_conv_ref(x, w, bias, prev, doc)
    out_f, win_f = causal_conv(x, w, bias, prev, doc)
    assert_close(out_f, out_r, reductions=K)  # float64: a K-tap sum
    assert torch.equal(win_f, win_r)  # the window is a copy of inputs: no arithmetic
    # a loss through both outputs, so the window's gradient path is checked too
    go, gw = torch.randn_like(out_r), torch.randn_like(win_r)
    grads_r = torch.autograd.grad((out_r * go).sum() + (win_r * gw).sum(), leaves)
    grads_f = torch.autograd.grad((out_f * go).sum() + (win_f * gw).sum(), leaves)
    for a, b in zip(grads_f, grads_r):
        assert_close(a, b, reductions=2 * T * K)  # a weight's gradient sums over batch × T × taps


@pytest.mark.parametrize("with_doc", [False, True])
def test_fp32_gradients_take_the_dot_path_and_match_float64(with_doc):
    """fp32 is what training runs; its weight gradient is a dot over T (conv.py `_tap_dot`), which
    the float64 tests above never reach."""
    x, w, bias, prev, doc = _inputs(11, 3, 40, 24, 4, False, with_doc, True)
    go = torch.randn(3, 40, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = torch.autograd.grad((causal_conv_ref(x, w, bias, prev, doc)[0] * go).sum(), [x, w, bias])
    x32, w32, b32 = (t.detach().float().requires_grad_() for t in (x, w, bias))
    got = torch.autograd.grad((causal_conv(x32, w32, b32, None, doc)[0] * go.float()).sum(), [x32, w32, b32])
    for a, b in zip(got, ref):
        assert_close(a.double(), b, dtype=torch.float32, reductions=3 * 40)  # sums over batch × T


def test_gradcheck_of_the_function_with_document_masks():
    x, w, bias, prev, doc = _inputs(7, 2, 9, 3, 4, True, True, True)
    K = 4
    ext = torch.cat([prev[:, :, 1:].transpose(1, 2), x], dim=1).detach().requires_grad_()
    masks = _tap_masks(doc, K, torch.float64)
    assert torch.autograd.gradcheck(_ShiftConv.apply, (ext, w[:, 0].detach().requires_grad_(),
                                                       bias, masks))
    assert torch.autograd.gradcheck(_ShiftConv.apply, (ext, w[:, 0].detach().requires_grad_(), None, None))


def test_bf16_close_to_fp32_reference():
    x, w, bias, prev, doc = _inputs(3, 2, 64, 16, 4, True, True, True, dtype=torch.float32)
    out_r, _ = causal_conv_ref(x, w, bias, prev, doc)
    gr = torch.autograd.grad(out_r.square().sum(), [x, w])
    xb, wb = x.detach().bfloat16().requires_grad_(), w.detach().bfloat16().requires_grad_()
    out_b, _ = causal_conv(xb, wb, bias.bfloat16(), prev.bfloat16(), doc)
    gb = torch.autograd.grad(out_b.float().square().sum(), [xb, wb])
    assert out_b.dtype == torch.bfloat16
    assert (out_b.float() - out_r).abs().max() <= 3e-2 * out_r.abs().max()
    for a, b in zip(gb, gr):
        assert (a.float() - b).abs().max() <= 3e-2 * b.abs().max()


def test_mixer_uses_the_fast_conv_and_its_training_gradients_match(monkeypatch):
    """The whole LM's parameter gradients are the same with the reference conv swapped in."""
    from promptcot_mamba import Mamba2LM
    from promptcot_mamba.model import mixer

    torch.manual_seed(0)
    model = Mamba2LM("tiny")
    ids = torch.randint(0, 256, (2, 37))
    seq_idx = torch.tensor([[0] * 20 + [1] * 17, [0] * 37])

    def grads():
        model.zero_grad(set_to_none=True)
        model(ids, seq_idx=seq_idx).logits.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    fast = grads()
    monkeypatch.setattr(mixer, "causal_conv", causal_conv_ref)
    ref = grads()
    for name in ref:
        assert_close(fast[name], ref[name], reductions=SSD_TERMS, what=name)
