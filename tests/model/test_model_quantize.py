"""Weight-only int8 (model/quantize.py): the layer's error stays within its rounding bound, the model's
logits stay near the full-precision model's (forward and step, fp32 and bf16), greedy decoding by
steps agrees with the quantized model's own prefill, memory drops, and what a quantized model cannot
do fails with one clear error."""

import gc
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from promptcot_mamba import Mamba2LM
from promptcot_mamba.common.tolerances import SSD_TERMS, UNIT_ROUNDOFF, assert_close, rel_err, rtol
from promptcot_mamba.generate.tiny import build_tiny_model
from promptcot_mamba.model import matvec
from promptcot_mamba.model.kernels import Kernels
from promptcot_mamba.model.quantize import (
    GEMV_ROWS,
    Int8Linear,
    QuantizationError,
    quantize_model,
    weight_bytes,
)

pytestmark = pytest.mark.usefixtures("one_thread")
U_BF16 = UNIT_ROUNDOFF[torch.bfloat16]  # 2⁻⁸: the int8 product's activations and outputs are bf16


def _copy(model: Mamba2LM) -> Mamba2LM:
    twin = Mamba2LM(model.config).to(model.dtype).eval()
    twin.load_state_dict(model.state_dict())
    if model.config.tie_word_embeddings:
        twin.lm_head.weight = twin.backbone.embeddings.weight
    twin.tokenizer = model.tokenizer
    return twin


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("K", [64, 17, 40])  # 17, 40: not multiples of 16, which the op's bf16 path needs
@pytest.mark.parametrize("rows", [1, 3, GEMV_ROWS + 5])  # the int8 op, and the dequantize-then-GEMM path
@pytest.mark.parametrize("widen", [True, False])  # that GEMM from bf16 in fp32 or in bf16 (matvec.widening_pays)
def test_int8_linear_within_its_rounding_bound(dtype, K, rows, widen, monkeypatch):
    """Per element |w − s·q| ≤ s/2 with s = bf16(max|row|/127) (the scheme's bound, ~max|row|/254), so
    |y − x Wᵀ| ≤ (s/2)·Σ|x| per output, plus the bf16 rounding of the activations and of the result
    on the int8 op's path (2 u(bf16) · Σ|w||x| + u(bf16) · |y|); a bf16 GEMM's rounding of s·q fits in
    the same terms."""
    monkeypatch.setattr(matvec, "_widen", widen)
    g = torch.Generator().manual_seed(K * 100 + rows)
    lin = torch.nn.Linear(K, 70).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(70, K, generator=g) * torch.rand(70, 1, generator=g))  # rows of unlike scale
        lin.weight[5].zero_()  # an all-zero row quantizes to zeros
    q = Int8Linear.from_linear(lin)
    W = lin.weight.detach().double()
    s = q.scales.double()
    amax = W.abs().amax(1)
    expected = (amax / 127).to(torch.bfloat16)
    expected[amax == 0] = 1.0
    assert torch.equal(q.scales, expected)
    assert q.weight_int8.shape == (70, -(-K // 16) * 16) and not q.weight_int8[:, K:].any()
    assert ((W - q.dequantize().double()).abs() <= s[:, None] * (0.5 + 1e-6)).all()  # the per-element bound

    x = torch.randn(2, rows, K, generator=g).to(dtype)  # leading dims are kept
    with torch.no_grad():
        y = q(x)
    assert y.shape == (2, rows, 70) and y.dtype == dtype
    xd = x.double().reshape(-1, K)
    ref = xd @ W.T + lin.bias.double()
    bound = (s / 2) * xd.abs().sum(1, keepdim=True) + 2 * U_BF16 * (xd.abs() @ W.abs().T) + U_BF16 * ref.abs()
    err = (y.double().reshape(-1, 70) - ref).abs()
    assert (err <= bound + 1e-6).all(), f"worst error / bound {float((err / bound).max()):.3g}"


def _projection_error(model: Mamba2LM) -> float:
    """The typical relative output error of one quantized projection: rounding errors uniform in ±s/2
    (std s/√12) move an output by about s/√12 · ‖x‖ against its size rms(row) · ‖x‖, and s ≈ max|row|/127,
    so (max|row| / rms(row)) / (127 √12), taken at the model's worst row."""
    kappa = 0.0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            w = m.weight.detach().float()
            kappa = max(kappa, float((w.abs().amax(1) / w.pow(2).mean(1).sqrt().clamp_min(1e-30)).max()))
    return kappa / (127 * math.sqrt(12))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("config", ["tiny", "tiny-g1"])  # tied and untied heads
def test_int8_logits_close_to_full_precision_forward_and_step(dtype, config):
    """The logits pass through 2L + 1 quantized products (in_proj and out_proj per layer, the head).
    Adding their typical errors without cancellation bounds the logits' scale-relative error by
    (2L + 1) · `_projection_error` (5 × 9.3-9.8e-3 for these models), plus the dtype's own rounding,
    rtol(dtype, SSD_TERMS): 4.6-4.9e-2 in float32, 8.6-8.8e-2 in bfloat16. Measured: 3.8e-3 to 1.3e-2."""
    torch.manual_seed(0)
    ref = build_tiny_model(config=config, tie_word_embeddings=config == "tiny").to(dtype)
    q = _copy(ref).quantize("int8")
    tol = (2 * ref.config.num_hidden_layers + 1) * _projection_error(ref) + rtol(dtype, SSD_TERMS)
    ids = torch.randint(0, ref.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, quant = ref(ids).logits, q(ids).logits  # 80 rows: the dequantize-then-GEMM path
        short = q(ids[:, :9]).logits  # 18 rows: the int8 op
    assert rel_err(quant, full) <= tol, (rel_err(quant, full), tol)
    assert rel_err(short, full[:, :9]) <= tol, (rel_err(short, full[:, :9]), tol)
    # decode: prefill 30 tokens, then 10 steps, each against the full model's forward at that position
    _, s_ref = ref.prefill(ids[:, :30])
    _, s_q = q.prefill(ids[:, :30])
    for t in range(30, 40):
        a, b = q.step(ids[:, t], s_q), ref.step(ids[:, t], s_ref)
        assert rel_err(a, b) <= tol, (t, rel_err(a, b), tol)
        assert rel_err(a, full[:, t]) <= tol, (t, rel_err(a, full[:, t]), tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_greedy_steps_agree_with_its_own_prefill(dtype):
    """Consistency of the quantized model with itself: 16 greedy tokens decoded by `step` are the argmax
    of its own forward over prompt + those tokens, except where that forward's top two logits are
    within rounding (here bf16's: the int8 products round activations to bf16 whatever the model's
    dtype); each step's logits match the forward's within the same rule."""
    model = build_tiny_model(config="tiny-g1").to(dtype).quantize("int8")
    prompt = model.tokenizer.encode("Let x be a real number")
    last, state = model.prefill(torch.tensor([prompt]))
    tokens, step_logits = [], [last[0]]
    for _ in range(16):
        tokens.append(int(step_logits[-1].argmax()))
        step_logits.append(model.step(torch.tensor([tokens[-1]]), state)[0])
    with torch.no_grad():
        full = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:]  # (17, vocab)
    tol = rtol(torch.bfloat16, SSD_TERMS)
    assert_close(torch.stack(step_logits), full, dtype=torch.bfloat16, reductions=SSD_TERMS, what="step vs forward")
    near_ties = 0
    for k, tok in enumerate(tokens):
        if int(full[k].argmax()) != tok:
            top2 = full[k].topk(2).values
            assert float(top2[0] - full[k][tok]) <= tol * float(full[k].abs().max()), f"step {k}: not a near-tie"
            near_ties += 1
    assert near_ties <= 2, "the comparison should not be carried by near-ties"


@pytest.mark.parametrize("tied", [False, True])
def test_memory_drops_and_full_precision_weights_are_freed(tied):
    torch.manual_seed(0)
    model = build_tiny_model(config="tiny", tie_word_embeddings=tied)
    c = model.config
    before = weight_bytes(model)
    old = weakref.ref(model.backbone.layers[0].mixer.in_proj.weight)
    old_head = weakref.ref(model.lm_head.weight)
    shapes = [(c.in_proj_dim, c.hidden_size), (c.hidden_size, c.d_inner)] * c.num_hidden_layers
    shapes.append((c.vocab_size, c.hidden_size))
    model.quantize("int8")
    gc.collect()
    assert old() is None  # the full-precision in_proj weight is gone
    assert (old_head() is None) != tied  # tied: the tensor lives on as the embedding
    assert model.quantization == "int8" and "quantization=int8" in repr(model)
    int8 = sum(n * -(-k // 16) * 16 + 2 * n for n, k in shapes)  # int8 weights (K padded to 16) + bf16 scales
    full = sum(n * k * 4 for n, k in shapes[:-1]) + (0 if tied else c.vocab_size * c.hidden_size * 4)
    after = weight_bytes(model)
    assert after == before - full + int8
    if tied:  # the head's own int8 copy; the embedding stays
        assert model.backbone.embeddings.weight.dtype == torch.float32
    assert after < before
    assert not [n for n, _ in model.named_parameters() if "proj" in n or "lm_head" in n]


def test_quantizing_a_loaded_checkpoint_releases_the_files_map(tmp_path):
    """Loaded in its stored dtype, every tensor is a view of one map of the file (model/checkpoint.py);
    a kept embedding or norm would hold the whole map, and the freed projections' pages with it. At
    hidden 1,024 × 16 layers in bf16 (a 314 MB file) RSS went from 698 MB to 860 MB on quantizing
    before the kept tensors got memory of their own, and to 658 MB after (file pages 464 -> 165 MB)."""
    build_tiny_model(config="tiny-g1").to(torch.bfloat16).save_pretrained(tmp_path)
    model = Mamba2LM.from_pretrained(tmp_path)
    emb = model.backbone.embeddings.weight
    assert emb.untyped_storage().nbytes() > emb.numel() * emb.element_size()  # a view of the file's map
    model.quantize("int8")
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), name  # nothing views the map
    assert model.backbone.embeddings.weight is emb  # the same Parameter, with memory of its own


def test_errors_unknown_method_twice_training_saving(tmp_path):
    model = build_tiny_model(config="tiny-g1")
    with pytest.raises(ValueError, match="unknown quantization 'int4'; choose from none, int8"):
        model.quantize("int4")
    assert model.quantization is None and isinstance(model.lm_head, torch.nn.Linear)  # nothing changed
    model.quantize("int8")
    with pytest.raises(QuantizationError, match=r"already quantized \(int8\)"):
        model.quantize("int8")
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_model(model)
    # inference only: train() refuses before changing anything; every parameter is frozen
    with pytest.raises(QuantizationError, match="inference-only"):
        model.train()
    assert not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    ids = torch.tensor([[1, 2, 3]])
    model(ids)  # a forward with autograd on is fine: nothing requires grad
    model.backbone.embeddings.weight.requires_grad_(True)  # someone tries to fine-tune around it
    with pytest.raises(QuantizationError, match="inference-only"):
        model(ids)
    model.backbone.embeddings.weight.requires_grad_(False)
    with pytest.raises(QuantizationError, match="quantized models are not saved.*--quantize int8"):
        model.save_pretrained(tmp_path / "q")
    assert not (tmp_path / "q").exists()  # refused before writing anything


def test_fused_step_is_refused_before_quantizing():
    model = build_tiny_model(config="tiny-g1")
    model.kernels = Kernels(step="fused")
    with pytest.raises(QuantizationError, match="step=fused.*step=eager"):
        model.quantize("int8")
    assert model.quantization is None and isinstance(model.lm_head, torch.nn.Linear)


def test_quantized_model_follows_dtype_changes():
    """`.to(dtype)` after quantizing converts the kept tensors (and the scales); the int8 weights stay."""
    model = build_tiny_model(config="tiny-g1").quantize("int8")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a = model(ids).logits
        model.to(torch.bfloat16)
        b = model(ids).logits
    assert model.dtype == torch.bfloat16 and model.lm_head.weight_int8.dtype == torch.int8
    assert_close(b, a, dtype=torch.bfloat16, reductions=SSD_TERMS)
    assert F.softmax(b, -1).shape == a.shape


@pytest.mark.parametrize("fmt", ["sharded", "bin"])
@pytest.mark.parametrize("config,dtype", [("tiny", "auto"), ("tiny-g1", "auto"), ("tiny-g1", "float32")])
def test_quantizing_while_loading_equals_quantizing_after(tmp_path, fmt, config, dtype):
    """`from_pretrained(quantize="int8")` reads the projections a block of rows at a time and never
    holds them in full precision; the result is the same model, bit for bit, as loading and then
    `.quantize("int8")` (one machine, the same rounding code): tied head (tiny) and untied (tiny-g1),
    sharded safetensors and pytorch_model.bin, in the stored dtype and converted."""
    torch.manual_seed(5)
    Mamba2LM(config).to(torch.bfloat16).save_pretrained(tmp_path, max_shard_bytes=30_000)
    if fmt == "bin":
        state = {k: v for f in tmp_path.glob("model-*.safetensors") for k, v in load_file(f).items()}
        for f in [*tmp_path.glob("model-*.safetensors"), tmp_path / "model.safetensors.index.json"]:
            f.unlink()
        torch.save(state, tmp_path / "pytorch_model.bin")
    after = Mamba2LM.from_pretrained(tmp_path, dtype=dtype).quantize("int8")
    loaded = Mamba2LM.from_pretrained(tmp_path, dtype=dtype, quantize="int8")
    a, b = after.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert loaded.quantization == "int8" and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert all(t.device.type == "cpu" for t in (*loaded.parameters(), *loaded.buffers()))  # nothing left on meta
    for t in (*loaded.parameters(), *loaded.buffers()):  # memory of its own: no view keeps a file's map
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, after(ids).logits)
    with pytest.raises(QuantizationError, match="inference-only"):
        loaded.train()
    with pytest.raises(QuantizationError, match="already quantized"):
        loaded.quantize("int8")


def test_quantizing_while_loading_refuses_bad_methods_before_reading(tmp_path):
    build_tiny_model(config="tiny-g1").save_pretrained(tmp_path)
    with pytest.raises(QuantizationError, match="unknown quantization 'int4'"):
        Mamba2LM.from_pretrained(tmp_path / "missing", quantize="int4")  # the method fails, not the path
    with pytest.raises(QuantizationError, match="step=fused"):
        Mamba2LM.from_pretrained(tmp_path, quantize="int8", kernels=Kernels(step="fused"))
    assert Mamba2LM.from_pretrained(tmp_path, quantize="none").quantization is None
