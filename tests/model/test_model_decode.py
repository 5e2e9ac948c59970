"""The fast decode step: oneDNN/ATen projections agree, and steps equal the full forward on every path."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from promptcot_mamba import Mamba2LM, named_config
from promptcot_mamba.common.tolerances import SSD_TERMS, assert_close
from promptcot_mamba.model import matvec
from promptcot_mamba.model.kernels import Kernels

PROJECTION_BACKENDS = ["aten", "auto"] + (["onednn"] if matvec.onednn_available() else [])


@pytest.mark.parametrize("backend", PROJECTION_BACKENDS)
@pytest.mark.parametrize("rows", [1, 3, 17])
def test_project_equals_linear(backend, rows):
    g = torch.Generator().manual_seed(rows)
    x, w, b = torch.randn(rows, 48, generator=g), torch.randn(70, 48, generator=g), torch.randn(70, generator=g)
    with torch.no_grad():  # 48-term dot products, summed in another order by oneDNN
        assert_close(matvec.linear(x, w, b, backend), F.linear(x, w, b), reductions=48)
        assert_close(matvec.linear(x, w, None, backend), F.linear(x, w), reductions=48)
        # a non-contiguous input (a column slice, as the step's views are)
        wide = torch.randn(rows, 96, generator=g)
        assert_close(matvec.linear(wide[:, 10:58], w, None, backend), F.linear(wide[:, 10:58], w), reductions=48)
        # `project` takes the step's layer: an nn.Linear goes through `linear` with its weight and bias
        layer = torch.nn.Linear(48, 70)
        layer.weight.copy_(w), layer.bias.copy_(b)
        assert torch.equal(matvec.project(x, layer, backend), matvec.linear(x, w, b, backend))


def test_project_falls_back_to_linear_for_autograd_and_other_dtypes():
    w = torch.randn(8, 4, requires_grad=True)
    x = torch.randn(2, 4)
    y = matvec.linear(x, w)
    assert y.requires_grad  # autograd still flows: F.linear was used
    y.sum().backward()
    assert w.grad is not None
    xb, wb = x.bfloat16(), w.detach().bfloat16()
    assert torch.equal(matvec.linear(xb, wb), F.linear(xb, wb))


@pytest.mark.parametrize("bias", [False, True])
def test_project_rows_widens_bf16_weights_and_equals_linear(bias, monkeypatch):
    """Prefill projections of a bf16 model on CPU run as fp32 GEMMs over widened blocks of the weight
    (matvec.project_rows): the same product, rounded once to bf16 at the end."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 70, bias=bias).to(torch.bfloat16)
    monkeypatch.setattr(matvec, "UPCAST_BLOCK", 32)  # several blocks, the last one short
    x = torch.randn(2, 40, 48).to(torch.bfloat16)  # 80 rows ≥ UPCAST_ROWS
    with torch.no_grad():
        exact = F.linear(x.float(), layer.weight.float(), None if layer.bias is None else layer.bias.float())
        got = matvec.project_rows(x, layer)
        assert got.dtype == torch.bfloat16 and got.shape == (2, 40, 70)
        # fp32 sums of 48 terms, then one rounding to bf16: the rule's bf16 bound
        assert_close(got, exact, dtype=torch.bfloat16, reductions=48)
        assert_close(got, layer(x), dtype=torch.bfloat16, reductions=48)  # and ATen's bf16 GEMM
        if matvec.onednn_available():  # the widened path really ran: one fp32 product per block of 32 rows
            calls = []
            real = matvec._onednn_linear
            monkeypatch.setattr(matvec, "_onednn_linear", lambda *a: calls.append(a[1].dtype) or real(*a))
            monkeypatch.setattr(matvec, "_widen", True)  # as if the probe found widening faster here
            assert_close(matvec.project_rows(x, layer), exact, dtype=torch.bfloat16, reductions=48)
            assert calls == [torch.float32] * 3
            calls.clear()
            matvec.project_rows(x[:, :20], layer)  # 40 rows < UPCAST_ROWS: the layer's own bf16 GEMM
            matvec.project_rows(x, layer, "aten")
            assert calls == []
            monkeypatch.setattr(matvec, "_widen", False)  # the probe found bf16 faster: auto stays in bf16
            assert torch.equal(matvec.project_rows(x, layer), layer(x))
            assert calls == []
            matvec.project_rows(x, layer, "onednn")  # insisting on oneDNN widens whatever the probe says
            assert calls == [torch.float32] * 3
    # autograd, fp32 and short inputs keep the layer's own forward
    xg = x.float().requires_grad_()
    lf = torch.nn.Linear(48, 70).float()
    assert matvec.project_rows(xg, lf).requires_grad


def test_the_widening_probe_times_both_paths_once_and_logs_its_choice(monkeypatch, caplog):
    """Whether widening bf16 weights pays is a fact about the CPU (it did on one benchmark machine,
    not on the next): measured once per process, on a real product, and said in the log."""
    if not matvec.onednn_available():
        pytest.skip("oneDNN's linear does not run in this torch build: nothing to choose")
    monkeypatch.setattr(matvec, "_widen", None)
    monkeypatch.setattr(matvec, "PROBE", (64, 64, 96))  # small: the choice, not its speed, is tested here
    timed = []
    real = matvec._widened
    monkeypatch.setattr(matvec, "_widened", lambda *a: timed.append(1) or real(*a))
    with caplog.at_level("INFO", logger="promptcot_mamba.model.matvec"):
        first = matvec.widening_pays()
    assert isinstance(first, bool) and len(timed) == 4  # a warm-up and three timed passes
    assert "bf16 products of many rows on CPU" in caplog.text and "64 x 64 x 96" in caplog.text
    assert matvec.widening_pays() is first and len(timed) == 4  # once per process


def test_kernels_reject_unknown_names_and_parse_specs():
    with pytest.raises(ValueError, match="matvec must be one of"):
        Kernels(matvec="mkl")
    with pytest.raises(ValueError, match="ssd must be one of"):
        Kernels(ssd="cuda-magic")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        Kernels.parse("matvec")
    assert Kernels.parse("matvec=aten, step=fused") == Kernels(matvec="aten", step="fused")
    assert Kernels.parse("") == Kernels() and str(Kernels()) == "ssd=auto,matvec=auto,step=eager,decode=direct"


def _configs():
    tiny = named_config("tiny")
    return {
        "tiny": tiny,
        "tiny-g1": named_config("tiny-g1"),
        "bias-and-dt-limit": dataclasses.replace(tiny, use_bias=True, time_step_limit=(0.01, 0.2)),
        "no-conv-bias": dataclasses.replace(tiny, use_conv_bias=False, residual_in_fp32=False),
    }


@pytest.mark.parametrize("backend", PROJECTION_BACKENDS)
@pytest.mark.parametrize("name", list(_configs()))
@pytest.mark.parametrize("batch", [1, 3])
def test_steps_equal_full_forward(backend, name, batch):
    torch.manual_seed(11)
    model = Mamba2LM(_configs()[name], kernels=Kernels(matvec=backend)).eval()
    with torch.no_grad():  # non-trivial biases and skip, so every fused term is exercised
        for p_name, p in model.named_parameters():
            if p_name.endswith("bias") or p_name.endswith(".D"):
                p.normal_(0, 0.5)
    ids = torch.randint(0, model.config.vocab_size, (batch, 14))
    with torch.no_grad():
        full = model(ids).logits
        last, state = model.prefill(ids[:, :8])
        # the recurrence against the chunked scan: the SSD forms' rule
        assert_close(last, full[:, 7], reductions=SSD_TERMS)
        for t in range(8, 14):
            assert_close(model.step(ids[:, t], state), full[:, t], reductions=SSD_TERMS, what=f"{name} t={t}")


def test_bf16_step_follows_the_fp32_model():
    torch.manual_seed(12)
    model = Mamba2LM("tiny").eval()
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        ref = model(ids).logits[:, -1]
        low = model.to(torch.bfloat16)
        _, state = low.prefill(ids[:, :9])
        for t in range(9, 12):
            out = low.step(ids[:, t], state)
    assert out.dtype == torch.float32 and state.ssm.dtype == torch.float32
    assert (out - ref).abs().max() <= 5e-2 * ref.abs().max()


def test_step_updates_a_view_of_a_larger_state_pool_in_place():
    """The generation engine steps on rows [0, r) of its pool (generate/engine.py)."""
    torch.manual_seed(13)
    model = Mamba2LM("tiny").eval()
    pool = model.allocate_state(4)
    ids = torch.randint(0, 256, (2, 6))
    with torch.no_grad():
        _, s = model.prefill(ids[:, :5])
        pool.write([0, 1], s)
        untouched = pool.ssm[:, 2:].clone(), pool.conv[:, 2:].clone()
        view = type(pool)(pool.conv[:, :2], pool.ssm[:, :2])
        a = model.step(ids[:, 5], view)
        b = model.step(ids[:, 5], s)
    assert_close(a, b, reductions=model.config.hidden_size)  # the same step; only the memory layout differs
    assert torch.equal(pool.ssm[:, :2], s.ssm) and torch.equal(pool.conv[:, :2], s.conv)
    assert torch.equal(pool.ssm[:, 2:], untouched[0]) and torch.equal(pool.conv[:, 2:], untouched[1])
