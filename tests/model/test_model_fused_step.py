"""The fused decode step (model/fused_step.py) against its PyTorch twins, on CPU through the Triton
interpreter: the conv window update, `GatedRMSNorm`, `Mamba2Mixer.step` and `Mamba2LM.step`."""

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
from promptcot_mamba.model.config import named_config  # noqa: E402
from promptcot_mamba.model.mixer import Mamba2Mixer  # noqa: E402
from promptcot_mamba.model.norm import GatedRMSNorm  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


def test_conv_step_and_gated_norm_match_reference():
    from promptcot_mamba.model.fused_step import conv_step, gated_norm

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
    from promptcot_mamba.model.fused_step import mixer_step_fused

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
            out = mixer_step_fused(mixer, h, c_fast, s_fast)
            assert out.dtype == out_ref.dtype
            assert rel_err(out, out_ref) < RTOL[dtype]
    assert rel_err(c_fast, c_ref) < RTOL[dtype]
    assert rel_err(s_fast, s_ref) < RTOL[dtype]


def test_model_step_matches_model_step():
    """`kernels.step = "fused"` makes Mamba2LM.step run the Triton twin; it equals the eager step."""
    from promptcot_mamba.model.kernels import Kernels
    from promptcot_mamba.model.lm import Mamba2LM

    torch.manual_seed(0)
    model = Mamba2LM("tiny").to(DEV).eval()
    fused = Mamba2LM("tiny", kernels=Kernels(step="fused")).to(DEV).eval()
    fused.load_state_dict(model.state_dict())
    ids = torch.randint(0, 256, (2, 9), device=DEV)
    _, state = model.prefill(ids)
    s_ref, s_fast = state.clone(), state.clone()
    tok = ids[:, -1]
    for _ in range(3):
        ref = model.step(tok, s_ref)
        out = fused.step(tok, s_fast)
        assert rel_err(out, ref) < RTOL[torch.float32]
        tok = ref.argmax(-1)
    assert rel_err(s_fast.ssm, s_ref.ssm) < RTOL[torch.float32]


def test_quantized_model_refuses_the_fused_step():
    """Int8 weights (model/quantize.py) leave no full-precision weights for the fused step to read."""
    from promptcot_mamba.model.kernels import Kernels
    from promptcot_mamba.model.lm import Mamba2LM
    from promptcot_mamba.model.quantize import QuantizationError

    model = Mamba2LM("tiny").eval().quantize("int8")
    model.kernels = Kernels(step="fused")  # switched after quantizing (quantize itself refuses step=fused)
    with pytest.raises(QuantizationError, match=r"step=fused.*quantized \(int8\).*step=eager"):
        model.step(torch.tensor([1]), model.allocate_state(1))


def test_rerun_in_fresh_process(rerun_in_fresh_process):
    rerun_in_fresh_process()  # the guard and the rerun live in tests/conftest.py
