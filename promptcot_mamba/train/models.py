"""The network a recipe trains: our Mamba2LM or any transformers causal LM, built, run and exported.

The trainer sees only three functions: `build_model` (from the recipe's model section or a previous
phase's export), `token_losses` (summed next-token cross-entropy of a micro-batch) and `export_hf`
(a Hugging Face-format folder with the tokenizer). Nothing here knows about phases or devices.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from promptcot_mamba.train.batches import IGNORE, MicroBatch
from promptcot_mamba.train.recipe import ModelSpec, RecipeError

log = logging.getLogger(__name__)


def round_vocab(n: int, multiple: int = 8) -> int:
    """The vocabulary size a model built from a config gets for an n-token tokenizer."""
    return -(-n // multiple) * multiple


def load_tokenizer(ref: str):
    """`builtin:bytes` or a folder with tokenizer.json (an error names the path when it is missing)."""
    if ref == "builtin:bytes":
        from promptcot_mamba.train.byte_tokenizer import byte_tokenizer

        return byte_tokenizer()
    from promptcot_mamba.text.tokenizer import Tokenizer

    p = Path(ref)
    if not p.exists():
        from promptcot_mamba.model.checkpoint import CheckpointError, resolve_path

        try:
            p = resolve_path(ref)  # a Hub id: downloaded once (config, tokenizer files, weights)
        except CheckpointError as err:
            raise RecipeError(f"tokenizer {ref}: {err}") from None
    if not (p / "tokenizer.json").exists():
        raise RecipeError(f"tokenizer {ref}: no tokenizer.json in that folder")
    tok = Tokenizer.from_pretrained(p)
    if tok.eos_token_id is None:
        # fall back to ChatML's turn end, which our rendering always closes the completion with
        if tok.token_to_id("<|im_end|>") is None:
            raise RecipeError(f"tokenizer {ref}: no eos_token in tokenizer_config.json and no <|im_end|> token")
        tok.eos_token = "<|im_end|>"
    return tok


def is_mamba(model: nn.Module) -> bool:
    from promptcot_mamba.model.lm import Mamba2LM

    return isinstance(model, Mamba2LM)


def build_model(spec: ModelSpec, tokenizer, *, from_folder: str | Path | None = None) -> nn.Module:
    """A fresh model in fp32 (or spec.dtype) on the CPU, in training mode.

    `from_folder`: a previous phase's HF export (the curriculum hand-off), same kind as the spec.
    For models built from a config, the vocabulary is sized to the tokenizer (rounded up to a
    multiple of 8) unless the config sets `vocab_size`, which must then be large enough.
    """
    dtype = getattr(torch, spec.dtype)
    folder = from_folder if from_folder is not None else spec.path
    vocab = tokenizer.vocab_size
    special = {"eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.token_to_id(tokenizer.pad_token) if tokenizer.pad_token else None,
               "bos_token_id": tokenizer.token_to_id(tokenizer.bos_token) if tokenizer.bos_token else None}
    if spec.kind == "mamba2":
        from promptcot_mamba.model.config import ConfigError, Mamba2Config, named_config
        from promptcot_mamba.model.lm import Mamba2LM

        if folder is not None:
            model = Mamba2LM.from_pretrained(folder, dtype=dtype)
        else:
            try:
                if isinstance(spec.config, str):
                    cfg = named_config(spec.config, vocab_size=round_vocab(vocab), **special)
                else:
                    fields = dict(spec.config)
                    base = fields.pop("name", None)
                    fields.setdefault("vocab_size", round_vocab(vocab))
                    for k, v in special.items():
                        fields.setdefault(k, v)
                    cfg = named_config(base, **fields) if base else Mamba2Config.from_dict(fields, source="model.config")
            except (ConfigError, TypeError) as err:
                raise RecipeError(f"model.config: {err}") from None
            model = Mamba2LM(cfg).to(dtype)
        model.tokenizer = tokenizer
        vsize = model.config.vocab_size
    else:
        try:
            import transformers
        except ImportError:
            raise RecipeError("model kind 'hf' needs transformers (pip install 'promptcot-mamba[hf]')") from None
        if folder is not None:
            model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        else:
            cls = getattr(transformers, spec.architecture, None)
            if cls is None or not hasattr(cls, "config_class"):
                raise RecipeError(f"model.architecture: transformers has no model class {spec.architecture!r}")
            fields = dict(spec.config or {})
            fields.setdefault("vocab_size", round_vocab(vocab))
            for k, v in special.items():
                fields.setdefault(k, v)
            fields.setdefault("use_cache", False)
            try:
                cfg = cls.config_class(**fields)
            except (TypeError, ValueError) as err:
                raise RecipeError(f"model.config: {err}") from None
            model = cls(cfg).to(dtype)
        vsize = model.config.vocab_size
    if vsize < vocab:
        raise RecipeError(f"model.config.vocab_size {vsize} is smaller than the tokenizer's {vocab} tokens")
    return model.train()


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The repeated blocks, where activation checkpointing and FSDP units go."""
    if is_mamba(model):
        return model.backbone.layers
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and name.split(".")[-1] in ("layers", "h", "blocks") and len(mod):
            return mod
    raise RecipeError(f"{type(model).__name__}: could not find its list of blocks (layers/h/blocks)")


def logits_of(model: nn.Module, batch: MicroBatch, mamba: bool) -> Tensor:
    """(b, T, V) logits of a micro-batch (all positions; tests and evaluation use this)."""
    if mamba:
        return model(batch.input_ids, seq_idx=batch.seq_idx).logits
    if batch.seq_idx is not None:
        raise RecipeError("packing needs a model that resets at document boundaries (Mamba2LM); "
                          "set packing: false for a transformers model")
    # right padding only follows the real tokens, so causal attention never sees it: no mask needed
    return model(input_ids=batch.input_ids, use_cache=False).logits


def token_losses(logits: Tensor, labels: Tensor) -> Tensor:
    """Σ over labelled positions of −log p(label) (fp32 scalar); labels pre-shifted, -100 = none."""
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V).float(), labels.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")


class SFTObjective(nn.Module):
    """The training objective around the pure model: Σ next-token losses of a micro-batch.

    For Mamba2LM the LM head and the cross-entropy run only at labelled positions (completion and
    closing tokens): prompt positions never need logits, and at V = 50k the head is a large share
    of a small model's FLOPs. The positions come pre-computed from the host (`label_index`), so
    there is no host sync. This module is the root that FSDP2 and DDP wrap, so the root's
    parameters (embeddings, final norm, head) are gathered around this forward.
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.mamba = is_mamba(lm)

    def forward(self, input_ids: Tensor, labels: Tensor, seq_idx: Tensor | None = None,
                label_index: Tensor | None = None) -> Tensor:
        if not self.mamba:
            if seq_idx is not None:
                raise RecipeError("packing needs a model that resets at document boundaries (Mamba2LM); "
                                  "set packing: false for a transformers model")
            return token_losses(self.lm(input_ids=input_ids, use_cache=False).logits, labels)
        # Mamba2LM.forward, minus the logits of unlabelled positions (same modules, same order)
        bb = self.lm.backbone
        h = bb.embeddings(input_ids)  # (b, T, d)
        for block in bb.layers:
            h, _, _ = block(h, seq_idx)
        flat_labels = labels.reshape(-1)
        h = h.reshape(-1, h.shape[-1])  # (b·T, d)
        if label_index is not None:
            h = h.index_select(0, label_index)  # (n_loss, d)
            flat_labels = flat_labels.index_select(0, label_index)
        h = bb.norm_f(h.to(bb.norm_f.weight.dtype))
        logits = self.lm.lm_head(h.to(self.lm.lm_head.weight.dtype))  # (n_loss, V)
        return token_losses(logits, flat_labels)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def export_hf(model: nn.Module, tokenizer, folder: str | Path) -> Path:
    """Write a Hugging Face-format folder (config.json, safetensors, tokenizer files)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if is_mamba(model):
        model.tokenizer = tokenizer
        model.save_pretrained(folder)
    else:
        model.save_pretrained(folder)
        tokenizer.save(folder)
    return folder


def fresh_like(model: nn.Module) -> nn.Module:
    """An uninitialised CPU copy of the same architecture (for exporting a gathered state dict)."""
    if is_mamba(model):
        from promptcot_mamba.model.lm import Mamba2LM

        with torch.device("meta"):
            new = Mamba2LM(model.config)
    else:
        with torch.device("meta"):
            new = type(model)(model.config)
    return new.to_empty(device="cpu")


def load_full_state(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied embeddings appear once in the state dict; re-tie after loading
    tied = getattr(model.config, "tie_word_embeddings", False)
    if tied:
        if is_mamba(model):
            model.lm_head.weight = model.backbone.embeddings.weight
        elif hasattr(model, "tie_weights"):
            model.tie_weights()
    bad = [k for k in missing if not (tied and k.endswith("lm_head.weight"))]
    if bad or unexpected:
        raise RuntimeError(f"export: state dict mismatch, missing {bad[:3]}, unexpected {unexpected[:3]}")
    return model
