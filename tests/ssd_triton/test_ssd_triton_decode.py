"""The fused Triton decode step (ssd/triton_decode.py) against its PyTorch twins, on CPU through the
Triton interpreter: `ssd_step`, the mixer's conv window update, `GatedRMSNorm`, `Mamba2Mixer.step`."""

import math  # noqa: I001
import os
import sys

# Triton's own library functions (tl.sum, …) are compiled-mode or interpreted depending on
# TRITON_INTERPRET at the moment triton is FIRST imported; if another test module imported it earlier
# without the variable, these kernels cannot run in this process: then one test reruns this file in
# a fresh interpreter instead (see _fresh_process_guard).
_TRITON_TOO_EARLY = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") is None
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from promptcot_mamba.model.config import named_config  # noqa: E402
from promptcot_mamba.model.mixer import Mamba2Mixer  # noqa: E402
from promptcot_mamba.model.norm import GatedRMSNorm  # noqa: E402
from promptcot_mamba.ssd.forms import ssd_step  # noqa: E402
from promptcot_mamba.ssd.tolerances import RTOL, rel_err  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


@pytest.mark.parametrize("G,D_shape", [(1, None), (3, "H"), (6, "HP")])
def test_ssd_step_matches_reference(G, D_shape):
    from promptcot_mamba.ssd.triton_decode import ssd_step_triton

    torch.manual_seed(G)
    b, H, P, N = 3, 6, 5, 12
    state = torch.randn(b, H, P, N, device=DEV)
    x, dt = torch.randn(b, H, P, device=DEV), torch.rand(b, H, device=DEV)
    A = -torch.rand(H, device=DEV)
    B, C = torch.randn(b, G, N, device=DEV), torch.randn(b, G, N, device=DEV)
    D = {None: None, "H": torch.randn(H, device=DEV), "HP": torch.randn(H, P, device=DEV)}[D_shape]
    s_ref, s_fast = state.clone(), state.clone()
    for _ in range(3):  # several steps: the in-place update compounds
        y_ref = ssd_step(s_ref, x, dt, A, B, C, D)
        y = ssd_step_triton(s_fast, x, dt, A, B, C, D)
    assert rel_err(y, y_ref) < RTOL[torch.float32]
    assert rel_err(s_fast, s_ref) < RTOL[torch.float32]


def test_fused_dt_softplus_and_limit():
    from promptcot_mamba.ssd.triton_decode import ssd_step_triton

    b, H, P, N, G = 2, 4, 4, 8, 2
    raw = torch.randn(b, H, device=DEV) * 10  # both sides of softplus's threshold
    raw[0, 0] = 25.0
    bias = torch.randn(H, device=DEV)
    lim = (0.01, 2.0)
    dt_ref = torch.nn.functional.softplus(raw + bias).clamp(*lim)
    args = (torch.randn(b, H, P, device=DEV), -torch.rand(H, device=DEV),
            torch.randn(b, G, N, device=DEV), torch.randn(b, G, N, device=DEV))
    s_ref, s_fast = torch.zeros(b, H, P, N, device=DEV), torch.zeros(b, H, P, N, device=DEV)
    y_ref = ssd_step(s_ref, args[0], dt_ref, *args[1:])
    y = ssd_step_triton(s_fast, args[0], raw, *args[1:], dt_bias=bias, dt_limit=lim)
    assert rel_err(y, y_ref) < RTOL[torch.float32] and rel_err(s_fast, s_ref) < RTOL[torch.float32]
    y_inf = ssd_step_triton(torch.zeros_like(s_fast), args[0], raw, *args[1:], dt_bias=bias, dt_limit=(0.0, math.inf))
    y_inf_ref = ssd_step(torch.zeros_like(s_ref), args[0], torch.nn.functional.softplus(raw + bias), *args[1:])
    assert rel_err(y_inf, y_inf_ref) < RTOL[torch.float32]


def test_ssd_step_rejects_half_state():
    from promptcot_mamba.ssd.triton_decode import ssd_step_triton

    with pytest.raises(ValueError, match="fp32"):
        ssd_step_triton(torch.zeros(1, 2, 4, 4, dtype=torch.bfloat16), torch.zeros(1, 2, 4), torch.ones(1, 2),
                        -torch.ones(2), torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))


def test_conv_step_and_gated_norm_match_reference():
    from promptcot_mamba.ssd.triton_decode import conv_step, gated_norm

    b, Cdim, K = 3, 40, 4
    win = torch.randn(b, Cdim, K, device=DEV)
    new = torch.randn(b, Cdim, device=DEV)
    w, bias = torch.randn(Cdim, 1, K, device=DEV), torch.randn(Cdim, device=DEV)
    ref_win = torch.cat([win[:, :, 1:], new[:, :, None]], dim=-1)
    ref = torch.nn.functional.silu((ref_win * w[:, 0]).sum(-1) + bias)
    out = conv_step(win, new, w, bias)
    assert torch.equal(win, ref_win)
    assert rel_err(out, ref) < RTOL[torch.float32]

    norm = GatedRMSNorm(48, 4).to(DEV)
    torch.nn.init.normal_(norm.weight)
    y, z = torch.randn(5, 48, device=DEV), torch.randn(5, 48, device=DEV)
    with torch.no_grad():
        assert rel_err(gated_norm(y, z, norm.weight, 4, norm.eps), norm(y, z)) < RTOL[torch.float32]


@pytest.mark.parametrize("name,dtype", [("tiny", torch.float32), ("tiny-g1", torch.float32), ("tiny", torch.bfloat16)])
def test_mixer_step_matches_mixer_step(name, dtype):
    """The fused step is a drop-in twin of Mamba2Mixer.step over several tokens (both states in place)."""
    from promptcot_mamba.ssd.triton_decode import mixer_step_triton

    torch.manual_seed(0)
    cfg = named_config(name)
    mixer = Mamba2Mixer(cfg).to(DEV, dtype)
    torch.nn.init.normal_(mixer.norm.weight)
    b = 4
    conv = torch.randn(b, cfg.conv_dim, cfg.conv_kernel, device=DEV, dtype=dtype)
    ssm = torch.randn(b, cfg.num_heads, cfg.head_dim, cfg.state_size, device=DEV)
    c_ref, s_ref, c_fast, s_fast = conv.clone(), ssm.clone(), conv.clone(), ssm.clone()
    with torch.no_grad():
        for _ in range(3):
            h = torch.randn(b, cfg.hidden_size, device=DEV, dtype=dtype)
            out_ref = mixer.step(h, c_ref, s_ref)
            out = mixer_step_triton(mixer, h, c_fast, s_fast)
            assert out.dtype == out_ref.dtype
            assert rel_err(out, out_ref) < RTOL[dtype]
    assert rel_err(c_fast, c_ref) < RTOL[dtype]
    assert rel_err(s_fast, s_ref) < RTOL[dtype]


def test_model_step_matches_model_step():
    from promptcot_mamba.model.lm import Mamba2LM
    from promptcot_mamba.ssd.triton_decode import model_step_triton

    torch.manual_seed(0)
    model = Mamba2LM("tiny").to(DEV).eval()
    ids = torch.randint(0, 256, (2, 9), device=DEV)
    _, state = model.prefill(ids)
    s_ref, s_fast = state.clone(), state.clone()
    tok = ids[:, -1]
    for _ in range(3):
        ref = model.step(tok, s_ref)
        out = model_step_triton(model, tok, s_fast)
        assert rel_err(out, ref) < 1e-4
        tok = ref.argmax(-1)
    assert rel_err(s_fast.ssm, s_ref.ssm) < 1e-4


def test_rerun_in_fresh_process(rerun_in_fresh_process):
    rerun_in_fresh_process()  # the guard and the rerun live in tests/ssd_triton/conftest.py
