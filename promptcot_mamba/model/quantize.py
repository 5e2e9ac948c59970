"""Weight-only int8 quantization for inference: `Int8Linear` and `quantize_model(model, "int8")`.

Batch-1 decode on a CPU is bound by the bytes of weights it reads (issue 13: a bf16 GEMV at the 7B
in_proj shape streams at the memory's speed), so int8 weights halve the bytes a bf16 step reads for
its big matrices. The product is PyTorch's own kernel, `torch.ops.aten._weight_int8pack_mm(x (M, K),
w int8 (N, K), scales (N,))`; no matmul is written here. (torchao 0.18's `Int8WeightOnlyConfig` ran
9x slower than bf16 in eager mode on this CPU: it dequantizes on every call.)

What is quantized, per output channel, symmetric: every mixer's `in_proj` and `out_proj`, and the
`lm_head`: the matrices every decode step reads in full. Kept in the model's dtype: every RMSNorm,
`A_log`, `D`, `dt_bias` and `conv1d` (0.21% of the parameters at 130M, 0.08% at 2.7B, 0.06% at 7B),
and the embeddings (30% at the tied 130M, 4.8% at 2.7B, 1.8% at 7B), whose decode step reads only one
row per sequence, so their bytes cost memory but not time. The small tensors are the
precision-sensitive part: A = −exp(A_log) and dt set the state's decay over thousands of steps, a
norm's gain multiplies a whole channel, and the conv and D are per-channel filters where one
rounding is a large relative change; quantizing them would save under 0.3% of the bytes.

A tied lm_head (`config.tie_word_embeddings`: the head's weight *is* the embedding tensor) gets its
own int8 copy, and the embedding stays in full precision for the lookup; the model then holds
vocab × hidden bytes (the int8 head) on top of the embedding it held before. At the tied 130M shape
(vocab 50,288 × hidden 768) that is 38.6 MB, and the weights go from 516 MB (fp32) to 285 MB, or
from 258 MB (bf16) to 207 MB; untied (7B), the head is simply replaced.

The numbers: benchmarks/bench_quantize.py's `ops` section, benchmarks/results/quantize-cpu.json (the
2-core CPU of issue 13, one thread, torch 2.13 CPU, one 4096 × 1024 product):
- The op's bfloat16 path is vectorized; its float32 and float16 paths are scalar loops (one row: bf16
  0.29 ms, fp32 4.0 ms, fp16 8.1 ms, against F.linear's 0.63 ms in fp32 and 0.71 ms in bf16). So the
  int8 product always runs in bfloat16: activations are rounded to bf16 (relative 2⁻⁹, below the
  weights' own rounding of up to 1/254 of a row's largest entry) and the result is cast back to the
  model's dtype (`Int8Linear` at one row: 0.45 ms from bf16, 0.51 ms from fp32, under load).
- The bf16 path needs K (the input width) to be a multiple of 16: at K = 8, 17, 24 or 40 it returned
  inf/NaN or crashed the process (probed one shape at a time). Weights whose K is not are padded with
  zero columns, and inputs with zeros, to the next multiple of 16 (exact: the extra terms are 0 · 0).
- At more than `GEMV_ROWS` rows (prefill, big decode batches) the op is slower than a GEMM (256 rows:
  39 ms against bf16 F.linear's 26 ms), so blocks of rows of the weight are dequantized and multiplied
  with `F.linear`, on a CPU in fp32 whatever the model's dtype (s·q is exact in fp32, and this CPU's
  fp32 GEMM ran 1.6x as fast as its bf16 one, model/matvec.py's `project_rows`): 24 ms from bf16 or
  fp32 activations, against F.linear's 26 ms in bf16 and 18 ms in fp32. The transient is one block
  (`DEQUANT_BLOCK` elements), never a full-precision copy of the weight.

Scales are stored in bfloat16 (the op's dtype), and the weights are rounded against the stored,
already-rounded scale, so each weight's error is at most half a step: |w − s·q| ≤ s/2 ≈ max|row|/254.

Two ways to get one: `Mamba2LM.from_pretrained(path, quantize="int8")` (what `--quantize int8` runs)
quantizes each projection as the loader reads it, a block of rows at a time, so the full-precision
projections are never held: loading the bf16 130M-shape checkpoint that way peaked at 1.03x the int8
model's bytes (tests/model/test_model_loading.py), where loading and then quantizing peaked at
2.1-2.3x them at 2.7B and 7B; `model.quantize("int8")` converts a model already in memory. Both run
the same rounding (`quantize_rows`) and give the same tensors.

A quantized model is for inference only: its int8 weights are buffers, quantizing freezes every
remaining parameter, `model.train()` raises, an `Int8Linear` given an input that requires grad raises,
and `save_pretrained` refuses (save the full-precision model; quantize at load time with
`--quantize int8`). The fused Triton step (model/fused_step.py) reads full-precision weights and
refuses a quantized model.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from promptcot_mamba.model.matvec import widening_pays

log = logging.getLogger(__name__)

METHODS = ("int8",)
GEMV_ROWS = 32  # up to this many rows the int8 op beats the dequantize-then-GEMM path (both dtypes, measured)
DEQUANT_BLOCK = 2**20  # elements of the weight dequantized at a time on the GEMM path (2 MB in bf16)
K_MULTIPLE = 16  # the op's bf16 path needs the input width to be a multiple of this (see the docstring)
KERNEL_DTYPE = torch.bfloat16
INFERENCE_ONLY = ("quantized models are inference-only: the int8 weights are buffers without gradients; "
                  "train the full-precision model and quantize it afterwards")


class QuantizationError(ValueError):
    """A quantization that cannot be done or an operation a quantized model does not support."""


def padded_width(K: int) -> int:
    """The int8 weight's width: K rounded up to a multiple of `K_MULTIPLE` (zero columns)."""
    return -(-K // K_MULTIPLE) * K_MULTIPLE


def quantize_rows(w: Tensor, q: Tensor, scales: Tensor, work: Tensor | None = None) -> None:
    """Symmetric per-row int8 of w (r, K) in any float dtype, into q (r, K') int8 (K' ≥ K; its extra
    columns are left as they are) and scales (r,) bf16: s = bf16(max|row| / 127), q = round(w / s) in
    [−127, 127]. `work`: a float32 buffer of ≥ r·K elements to reuse (else one is allocated): the
    only transient, so that quantizing block after block does not leave the heap full of holes."""
    r, K = w.shape
    f = torch.empty(r, K, device=w.device) if work is None else work[:r * K].view(r, K)
    f.copy_(w)  # (r, K) float32
    s = (torch.linalg.vector_norm(f, ord=math.inf, dim=1) / 127).to(KERNEL_DTYPE)  # (r,) = max|row| / 127
    s = torch.where(s > 0, s, torch.ones_like(s))  # an all-zero row: any scale, q = 0
    scales.copy_(s)
    # rounding against the stored (bf16) scale: |w − s·q| ≤ s/2; the clamp only trims the largest
    # entry when bf16 rounded s down, by at most 127·2⁻⁹·s < s/2
    q[:, :K].copy_(f.div_(s.float()[:, None]).round_().clamp_(-127, 127))  # integral floats: exact cast


def quantize_blocks(blocks, N: int, K: int, device=None) -> tuple[Tensor, Tensor]:
    """`quantize_rows` over (first row, block (r, K)) pairs covering rows 0..N of one weight, so that
    only one block is ever held in full precision -> (q (N, K') int8, K' = K padded with zero columns
    to a multiple of `K_MULTIPLE`; scales (N,) bf16)."""
    q = torch.zeros(N, padded_width(K), dtype=torch.int8, device=device)
    scales = torch.empty(N, dtype=KERNEL_DTYPE, device=device)
    work = None
    for i, blk in blocks:
        if work is None or work.numel() < blk.numel():
            work = torch.empty(blk.numel(), device=blk.device)
        quantize_rows(blk, q[i:i + len(blk)], scales[i:i + len(blk)], work)
    return q, scales


class Int8Linear(nn.Module):
    """`nn.Linear`'s forward with int8 weights and one bf16 scale per output channel.

    weight_int8 (N, K') int8, K' = K rounded up to a multiple of 16 (zero columns); scales (N,) bf16;
    bias (N,) in the original dtype or None. `forward(x (..., K)) -> (..., N)` in x's dtype."""

    def __init__(self, weight_int8: Tensor, scales: Tensor, bias: Tensor | None, in_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, weight_int8.shape[0]
        self.pad = weight_int8.shape[1] - in_features
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)
        self.training = False

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Symmetric per-output-channel int8 of a Linear's weight (`quantize_rows`), in blocks of rows."""
        w = linear.weight.detach()
        N, K = w.shape
        rows = max(1, DEQUANT_BLOCK // K)  # in blocks of rows: the float32 transient stays small
        q, scales = quantize_blocks(((i, w[i:i + rows]) for i in range(0, N, rows)), N, K, w.device)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(q, scales, bias, K)

    @classmethod
    def empty(cls, N: int, K: int, *, bias_dtype: torch.dtype | None, device="meta") -> Int8Linear:
        """A layer of the right shapes whose buffers a state dict then assigns (quantized at load time:
        model/checkpoint.py reads the full-precision weight a block of rows at a time)."""
        bias = None if bias_dtype is None else torch.empty(N, dtype=bias_dtype, device=device)
        return cls(torch.empty(N, padded_width(K), dtype=torch.int8, device=device),
                   torch.empty(N, dtype=KERNEL_DTYPE, device=device), bias, K)

    def dequantize(self) -> Tensor:
        """The weight the layer multiplies by, (N, K) float32: s · q (exact in float32)."""
        return (self.weight_int8[:, :self.in_features].float() * self.scales.float()[:, None])

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise QuantizationError(f"Int8Linear got an input that requires grad: {INFERENCE_ONLY}")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Int8Linear: input width {x.shape[-1]} != in_features {self.in_features}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if self.pad:
            x2 = F.pad(x2, (0, self.pad))
        scales = self.scales if self.scales.dtype == KERNEL_DTYPE else self.scales.to(KERNEL_DTYPE)  # after .to()
        if x2.shape[0] <= GEMV_ROWS:
            y = torch.ops.aten._weight_int8pack_mm(x2.to(KERNEL_DTYPE).contiguous(), self.weight_int8, scales)
            y = y.to(x.dtype)
        else:
            # on a CPU the GEMM runs in fp32 (s·q is exact there) unless x is bf16 and this CPU's bf16
            # GEMM beats its fp32 one (model/matvec.py's widening_pays: 1.6x slower on one benchmark
            # machine, 2x faster on the next); s·q then takes one bf16 rounding, like a bf16 weight's
            cdt = x.dtype
            if x.device.type == "cpu" and (x.dtype != torch.bfloat16 or widening_pays()):
                cdt = torch.float32
            xc = x2.to(cdt)
            y = torch.empty(x2.shape[0], self.out_features, dtype=cdt, device=x.device)  # (M, N)
            rows = max(1, DEQUANT_BLOCK // self.weight_int8.shape[1])
            for i in range(0, self.out_features, rows):
                w = self.weight_int8[i:i + rows].to(cdt) * scales[i:i + rows, None].to(cdt)  # (r, K')
                y[:, i:i + rows] = F.linear(xc, w)
            y = y.to(x.dtype)
        if self.bias is not None:
            y += self.bias.to(y.dtype)
        return y.view(*lead, self.out_features)

    def train(self, mode: bool = True) -> Int8Linear:
        if mode:
            raise QuantizationError(f"train(): {INFERENCE_ONLY}")
        return super().train(False)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weights=int8 per-channel, scales={str(self.scales.dtype).removeprefix('torch.')}")


def _targets(model) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every Linear to quantize: each mixer's in_proj and out_proj, the lm_head."""
    out = []
    for block in model.backbone.layers:
        out += [(block.mixer, "in_proj"), (block.mixer, "out_proj")]
    return out + [(model, "lm_head")]


def target_shapes(config) -> dict[str, tuple[int, int]]:
    """{module name: (N, K)} of the Linears `quantize_model` replaces, as the state dict names them."""
    out = {}
    for i in range(config.num_hidden_layers):
        out[f"backbone.layers.{i}.mixer.in_proj"] = (config.in_proj_dim, config.hidden_size)
        out[f"backbone.layers.{i}.mixer.out_proj"] = (config.hidden_size, config.d_inner)
    out["lm_head"] = (config.vocab_size, config.hidden_size)
    return out


def quantized_bytes(N: int, K: int) -> int:
    """Bytes of one `Int8Linear`'s weight and scales (its bias, if any, stays as it was)."""
    return N * padded_width(K) + N * KERNEL_DTYPE.itemsize


def _freeze(model) -> None:
    """Inference only: eval mode, no parameter requires grad."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def install_empty(model, method: str) -> None:
    """Replace the Linears `quantize_model` would quantize by empty `Int8Linear`s (on the meta device),
    for a state dict quantized while loading (model/checkpoint.py) to be assigned into."""
    check_method(method, getattr(model, "kernels", None))
    for parent, attr in _targets(model):
        lin = getattr(parent, attr)
        bias = None if lin.bias is None else lin.bias.dtype
        setattr(parent, attr, Int8Linear.empty(lin.out_features, lin.in_features, bias_dtype=bias))
    _freeze(model)
    model.quantization = method


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, each tensor once (a tied weight counts once)."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def check_op(device: torch.device) -> None:
    """The kernel must run where the weights are (a CPU build has it; other devices: try it)."""
    try:
        x = torch.ones(1, K_MULTIPLE, dtype=KERNEL_DTYPE, device=device)
        w = torch.ones(2, K_MULTIPLE, dtype=torch.int8, device=device)
        y = torch.ops.aten._weight_int8pack_mm(x, w, torch.ones(2, dtype=KERNEL_DTYPE, device=device))
        ok = torch.equal(y.float().cpu(), torch.full((1, 2), float(K_MULTIPLE)))
    except (RuntimeError, NotImplementedError) as err:
        raise QuantizationError(f"int8 weights need torch.ops.aten._weight_int8pack_mm on {device}, which this "
                                f"torch build does not run there ({str(err).splitlines()[0]})") from None
    if not ok:
        raise QuantizationError(f"torch.ops.aten._weight_int8pack_mm gives wrong results on {device}")


def check_method(method: str | None, kernels=None) -> str | None:
    """The method to apply (None for "none"/None), or an error for an unknown one or for kernels that
    cannot run it; callers that load a model check this first, so bad input fails before loading."""
    if method is None or method == "none":
        return None
    if method not in METHODS:
        raise QuantizationError(f"unknown quantization {method!r}; choose from {', '.join(('none',) + METHODS)}")
    if kernels is not None and kernels.step == "fused":
        raise QuantizationError("the fused Triton step (kernels step=fused) reads full-precision weights; "
                                f"a model quantized to {method} runs the eager step: use kernels step=eager")
    return method


@torch.no_grad()
def quantize_model(model, method: str = "int8"):
    """Replace the big projections of a `Mamba2LM` (see the module docstring) by `Int8Linear`, in place,
    freeing their full-precision weights; returns the model, in eval mode, frozen, with
    `model.quantization = method`. Errors leave the model as it was."""
    if check_method(method, getattr(model, "kernels", None)) is None:
        raise QuantizationError(f"quantize: method {method!r} quantizes nothing; choose from {', '.join(METHODS)}")
    if getattr(model, "quantization", None) or any(isinstance(m, Int8Linear) for m in model.modules()):
        raise QuantizationError(f"the model is already quantized ({getattr(model, 'quantization', None) or 'int8'}); "
                                "quantize the full-precision model once")
    targets = _targets(model)
    bad = [f"{type(p).__name__}.{a}" for p, a in targets if type(getattr(p, a)) is not nn.Linear]
    if bad:
        raise QuantizationError(f"cannot quantize: expected nn.Linear at {', '.join(bad)}")
    check_op(model.lm_head.weight.device)
    before = weight_bytes(model)
    _freeze(model)
    for parent, attr in targets:
        # the Linear (and, untied, its weight) is dropped here: each layer's full-precision weight is
        # freed as soon as its int8 copy exists, so the peak is the model plus one layer's int8 copy
        setattr(parent, attr, Int8Linear.from_linear(getattr(parent, attr)))
    # A checkpoint loaded in its stored dtype is views of one map per file (model/checkpoint.py): while
    # any kept tensor (an embedding, a norm) views a file's map, the whole map stays, and with it the
    # pages of the freed projections that quantizing read. Kept tensors get memory of their own, so the
    # maps close and memory falls to the quantized size.
    for t in (*model.parameters(), *model.buffers()):
        if t.untyped_storage().nbytes() > t.numel() * t.element_size():
            t.data = t.data.clone()
    model.quantization = method
    log.info("quantized %d linear layers to %s: weights %.3f GB -> %.3f GB", len(targets), method,
             before / 1e9, weight_bytes(model) / 1e9)
    return model
