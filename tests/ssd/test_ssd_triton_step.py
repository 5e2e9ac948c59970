"""The SSD decode step as a Triton kernel (ssd/triton_step.py) against `forms.ssd_step`, on CPU through
the Triton interpreter: groups, D shapes, the fused softplus and dt limit, the fp32 state."""

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

from promptcot_mamba.common.tolerances import RTOL, rel_err  # noqa: E402
from promptcot_mamba.ssd.forms import ssd_step  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


@pytest.mark.parametrize("G,D_shape", [(1, None), (3, "H"), (6, "HP")])
def test_ssd_step_matches_reference(G, D_shape):
    from promptcot_mamba.ssd.triton_step import ssd_step_triton

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
    from promptcot_mamba.ssd.triton_step import ssd_step_triton

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
    from promptcot_mamba.ssd.triton_step import ssd_step_triton

    with pytest.raises(ValueError, match="fp32"):
        ssd_step_triton(torch.zeros(1, 2, 4, 4, dtype=torch.bfloat16), torch.zeros(1, 2, 4), torch.ones(1, 2),
                        -torch.ones(2), torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))


def test_rerun_in_fresh_process(rerun_in_fresh_process):
    rerun_in_fresh_process()  # the guard and the rerun live in tests/conftest.py
