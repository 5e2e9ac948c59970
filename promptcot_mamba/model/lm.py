"""The Mamba-2 language model: embeddings → pre-norm mixer blocks → final norm → LM head.

Pure and single-device: no distribution, compile or checkpointing in here; those are applied from
outside (train/, generate/). Parameter names match transformers' `Mamba2ForCausalLM`, so a state
dict moves between the two without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from promptcot_mamba.model.config import Mamba2Config, named_config
from promptcot_mamba.model.kernels import Kernels
from promptcot_mamba.model.matvec import project, project_rows
from promptcot_mamba.model.mixer import Mamba2Mixer
from promptcot_mamba.model.norm import RMSNorm
from promptcot_mamba.model.state import InferenceState


@dataclass
class LMOutput:
    logits: Tensor  # (b, T or logits_to_keep, vocab) fp32
    state: InferenceState | None = None


class Mamba2Block(nn.Module):
    def __init__(self, config: Mamba2Config, layer_idx: int):
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mixer = Mamba2Mixer(config, layer_idx)

    def forward(self, residual: Tensor, seq_idx=None, conv_state=None, ssm_state=None, ssd_backend: str = "auto",
                matvec: str = "auto"):
        h = self.norm(residual.to(self.norm.weight.dtype))
        if self.residual_in_fp32:
            residual = residual.float()
        out, window, ssm = self.mixer(h, seq_idx=seq_idx, conv_state=conv_state, ssm_state=ssm_state,
                                      ssd_backend=ssd_backend, matvec=matvec)
        return residual + out, window, ssm

    def step(self, residual: Tensor, conv_state: Tensor, ssm_state: Tensor, matvec: str = "auto") -> Tensor:
        h = self.norm(residual.to(self.norm.weight.dtype))
        if self.residual_in_fp32:
            residual = residual.float()
        return residual + self.mixer.step(h, conv_state, ssm_state, matvec)


class Mamba2Backbone(nn.Module):
    def __init__(self, config: Mamba2Config):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Mamba2Block(config, i) for i in range(config.num_hidden_layers))
        self.norm_f = RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)


# Prompt tokens per piece in `Mamba2LM.prefill`: at the 7B shape a piece's largest activations are the
# in_proj output (2048 × 18,560) and the scan's intra-chunk scores (2048 × 128 heads × 128, fp32),
# ~0.15 GB each, whatever the prompt's length.
PREFILL_CHUNK = 2048


class Mamba2LM(nn.Module):
    """`Mamba2LM(config)` or `Mamba2LM.from_pretrained(path_or_hub_id)`; `model(input_ids).logits`.

    `kernels` (model/kernels.py) chooses the implementation of the scan, the decode projections and
    the decode step; it is read at every call, so `model.kernels = Kernels(...)` switches them."""

    def __init__(self, config: Mamba2Config | str, *, kernels: Kernels | None = None):
        super().__init__()
        if isinstance(config, str):
            config = named_config(config)
        self.config = config
        self.kernels = kernels or Kernels()
        self.backbone = Mamba2Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tokenizer = None  # set by from_pretrained when the folder has tokenizer.json
        self.quantization: str | None = None  # "int8" after `quantize` (model/quantize.py)
        nn.init.normal_(self.backbone.embeddings.weight, std=config.initializer_range)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=config.initializer_range)

    # ----------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.backbone.embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.embeddings.weight.dtype  # never quantized (model/quantize.py)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    def allocate_state(self, batch_size: int) -> InferenceState:
        return InferenceState.zeros(self.config, batch_size, device=self.device, dtype=self.dtype)

    # -------------------------------------------------------------------------------- forward
    def forward(self, input_ids: Tensor, *, seq_idx: Tensor | None = None, state: InferenceState | None = None,
                return_state: bool = False, logits_to_keep: int = 0) -> LMOutput:
        """input_ids (b, T) → logits (b, T, vocab).

        seq_idx (b, T): document ids of packed rows; SSM state and conv window reset at each change.
        state: continue from this state (prefill of a continuation); it is not modified. With
        `return_state` the state after the last token comes back (fresh tensors).
        logits_to_keep: compute logits for the last k positions only (0 = all).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"Mamba2LM: input_ids must be (batch, T), got shape {tuple(input_ids.shape)}")
        b, T = input_ids.shape
        if T == 0:
            raise ValueError("Mamba2LM: input_ids has no tokens (T = 0)")
        if input_ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"Mamba2LM: input_ids must be integer token ids, got {input_ids.dtype}")
        if input_ids.device.type == "cpu":  # on an accelerator this check would be a host sync per call
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if hi >= self.config.vocab_size or lo < 0:
                raise ValueError(f"Mamba2LM: token id {hi if hi >= self.config.vocab_size else lo} "
                                 f"is outside the vocabulary [0, {self.config.vocab_size})")
        if seq_idx is not None and seq_idx.shape != input_ids.shape:
            raise ValueError(f"Mamba2LM: seq_idx shape {tuple(seq_idx.shape)} != input_ids shape {tuple(input_ids.shape)}")
        if state is not None and state.batch_size != b:
            raise ValueError(f"Mamba2LM: state holds {state.batch_size} sequences but input_ids has {b}")
        h = self.backbone.embeddings(input_ids)
        # the returned state is allocated once and each layer's final state copied into its slot, so a
        # prefill holds one state plus one layer's (stacking per-layer results held two: 2.7 GB extra
        # at batch 8 on the 2.7B shape, measured by bench_real_size)
        new_state = InferenceState.zeros(self.config, b, device=h.device, dtype=self.dtype) if return_state else None
        for i, block in enumerate(self.backbone.layers):
            h, window, ssm = block(h, seq_idx,
                                   state.conv[i] if state is not None else None,
                                   state.ssm[i] if state is not None else None, self.kernels.ssd,
                                   self.kernels.matvec)
            if new_state is not None:
                new_state.conv[i].copy_(window)
                new_state.ssm[i].copy_(ssm)
            del window, ssm
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        h = self.backbone.norm_f(h.to(self.backbone.norm_f.weight.dtype))
        logits = project_rows(h.to(self.dtype), self.lm_head, self.kernels.matvec).float()
        return LMOutput(logits, new_state)

    @torch.no_grad()
    def prefill(self, input_ids: Tensor, state: InferenceState | None = None, *,
                chunk: int = PREFILL_CHUNK) -> tuple[Tensor, InferenceState]:
        """Run a prompt (any length) and return (last-position logits (b, vocab), state).

        The prompt runs `chunk` tokens at a time, each piece continuing from the last one's state, so
        activation memory is bounded by the piece, not the prompt (issue 13, item 4); the result equals
        one pass up to summation order (the scan's chunk boundaries do not move: `chunk` is a multiple
        of every chunk length the scan uses)."""
        T = input_ids.shape[1]
        if chunk <= 0:
            raise ValueError(f"Mamba2LM.prefill: chunk must be positive, got {chunk}")
        for start in range(0, T, chunk):
            out = self.forward(input_ids[:, start:start + chunk], state=state, return_state=True, logits_to_keep=1)
            state = out.state
        return out.logits[:, -1], out.state

    @torch.no_grad()
    def step(self, tokens: Tensor, state: InferenceState) -> Tensor:
        """One decode step: tokens (b,) → logits (b, vocab); `state` is updated in place. With
        `kernels.step == "fused"` the Triton twin of this loop runs (model/fused_step.py)."""
        if self.kernels.step == "fused":
            from promptcot_mamba.model.fused_step import model_step_fused

            return model_step_fused(self, tokens, state)
        matvec = self.kernels.matvec
        h = self.backbone.embeddings(tokens)
        for i, block in enumerate(self.backbone.layers):
            h = block.step(h, state.conv[i], state.ssm[i], matvec)
        h = self.backbone.norm_f(h.to(self.backbone.norm_f.weight.dtype))
        return project(h.to(self.dtype), self.lm_head, matvec).float()

    # ---------------------------------------------------------------------------- quantization
    def quantize(self, method: str = "int8") -> Mamba2LM:
        """Weight-only int8 for inference, in place (model/quantize.py says what is quantized)."""
        from promptcot_mamba.model.quantize import quantize_model

        return quantize_model(self, method)

    def train(self, mode: bool = True) -> Mamba2LM:
        if mode and self.quantization:
            from promptcot_mamba.model.quantize import INFERENCE_ONLY, QuantizationError

            raise QuantizationError(f"train(): {INFERENCE_ONLY}")
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"quantization={self.quantization}" if self.quantization else ""

    # ------------------------------------------------------------------------- checkpoint I/O
    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, *, dtype: torch.dtype | str | None = "auto",
                        device: str | torch.device = "cpu", kernels: Kernels | None = None,
                        revision: str | None = None, max_memory_gb: float | None = None,
                        quantize: str | None = None) -> Mamba2LM:
        """Load a `Mamba2ForCausalLM` checkpoint (transformers or mamba_ssm dialect) from a folder or
        a Hub id (downloaded only when the path does not exist locally).

        `dtype="auto"` (the default, as in transformers 5) keeps the dtype the weights are stored in;
        a checkpoint mixing dtypes loads in the one holding most parameters. float32, bfloat16 or
        float16 (a name or a torch dtype) converts each tensor as it is read, so memory never holds
        two copies; weights kept as stored (on the CPU) are views of a private map of their file, so
        the checkpoint's files must be replaced, not rewritten in place, while the model is in use.
        A checkpoint that needs more than `max_memory_gb` (10^9 bytes) or than the memory available
        (Linux's MemAvailable; a CUDA device's free memory) fails before anything is loaded.

        `quantize="int8"` quantizes as it loads (the result of `.quantize("int8")` without ever
        holding the full-precision projections: peak memory is the int8 model's, and the memory check
        counts that size); "none" or None loads as stored."""
        from promptcot_mamba.model.checkpoint import load_checkpoint
        from promptcot_mamba.model.quantize import check_method, install_empty

        method = check_method(quantize, kernels)  # before anything is read
        folder, config, state_dict = load_checkpoint(path_or_id, dtype=dtype, device=device, quantize=method,
                                                     max_memory_gb=max_memory_gb, revision=revision)
        with torch.device("meta"):
            model = cls(config, kernels=kernels)
        if method:
            install_empty(model, method)  # Int8Linear shells for the quantized weights to be assigned to
        # assign=True adopts the loaded tensors (already in their final dtype and device) instead of
        # copying them into fresh ones: loading holds one copy of the weights, never two
        missing, _ = model.load_state_dict(state_dict, strict=False, assign=True)
        if config.tie_word_embeddings and not method:
            model.lm_head.weight = model.backbone.embeddings.weight
        elif missing:  # the loader validated every key against the config: this is a bug, not bad input
            raise RuntimeError(f"from_pretrained: the loaded state dict misses {missing[:3]}")
        model.tokenizer = _maybe_tokenizer(folder)
        return model.eval()

    def save_pretrained(self, path: str | Path, *, max_shard_bytes: int = 5 * 2**30) -> Path:
        from promptcot_mamba.model.checkpoint import save_checkpoint

        folder = save_checkpoint(self, path, max_shard_bytes=max_shard_bytes)
        if self.tokenizer is not None:
            self.tokenizer.save(folder)
        return folder


def _maybe_tokenizer(folder: Path):
    if (folder / "tokenizer.json").exists():
        from promptcot_mamba.text.tokenizer import Tokenizer

        return Tokenizer.from_pretrained(folder)
    return None
