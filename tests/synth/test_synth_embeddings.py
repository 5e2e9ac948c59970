"""Sentence embeddings for concepts: the offline all-MiniLM-L6-v2 model (if installed) and the explicit
hashing fallback."""

from __future__ import annotations

import numpy as np
import pytest

from promptcot_mamba.synth.embeddings import HashingEmbedder, make_embedder, minilm_model_dir


def test_hashing_embedder_is_deterministic_and_normalised():
    e = HashingEmbedder(64)
    a = e.encode(["modular arithmetic", "Modular arithmetic", "triangle area"])
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert np.allclose(a[0], a[1]) and a[0] @ a[2] < 0.9
    assert np.array_equal(a, HashingEmbedder(64).encode(["modular arithmetic", "Modular arithmetic", "triangle area"]))
    with pytest.raises(ValueError):
        make_embedder("nope")


def test_minilm_embeddings_offline_and_semantic():
    try:
        minilm_model_dir()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    e = make_embedder("minilm")
    v = e.encode(["Pythagorean theorem", "right triangle side lengths", "binary search", "sorting algorithms"])
    assert v.shape == (4, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[2, 3] > sim[2, 0] + 0.2
