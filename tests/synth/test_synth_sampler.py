"""The concept sampler follows its intended distribution, is indexed correctly, is stable for huge
co-occurrence counts, and is deterministic given a seed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from promptcot_mamba.synth.sampler import ConceptSampler, ConceptStats, stable_softmax


def _universe(seed=0, C=6, d=8):
    rng = np.random.default_rng(seed)
    names = [f"concept {i}" for i in range(C)]
    lists = [["concept 0", "concept 1", "concept 2"], ["concept 1", "concept 3"], ["concept 2", "concept 4"],
             ["concept 0", "concept 5"], ["concept 0", "concept 1"], ["concept 3", "concept 4", "concept 5"]]
    stats = ConceptStats.from_lists(lists)
    assert stats.concepts == names
    E = rng.normal(size=(C, d))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    return stats, E


def _exact_pair_probs(stats, E, T):
    """P(a, b) for size 2 from the definition: f-proportional first pick, then softmax((C[a] + cos)/T)."""
    f = stats.frequency / stats.frequency.sum()
    M = stats.cooc_dense()
    P = {}
    for a in range(len(f)):
        s = M[a] + E @ E[a]
        s[a] = -np.inf
        z = np.exp((s - s[np.isfinite(s)].max()) / T)
        z /= z.sum()
        for b in range(len(f)):
            if b != a:
                P[(a, b)] = f[a] * z[b]
    return P


def test_cooccurrence_and_frequency_statistics():
    stats, _ = _universe()
    M = stats.cooc_dense()
    assert np.array_equal(M, M.T) and np.all(np.diag(M) == 0)
    assert M[0, 1] == 2 and M[1, 3] == 1 and M[0, 4] == 0
    assert list(stats.frequency) == [3, 3, 2, 2, 2, 2]
    # case/spacing variants are one concept
    s2 = ConceptStats.from_lists([["Modular  Arithmetic", "primes"], ["modular arithmetic"]])
    assert len(s2) == 2 and s2.frequency[0] == 2


@pytest.mark.parametrize("T", [0.5, 1.0])
def test_sampler_matches_intended_distribution_chi_square(T):
    stats, E = _universe(seed=1)
    sampler = ConceptSampler(stats, E, temperature=T, size=2, seed=123)
    N = 30000
    counts = {}
    for _ in range(N):
        a, b = sampler.sample_ids()
        counts[(a, b)] = counts.get((a, b), 0) + 1
    P = _exact_pair_probs(stats, E, T)
    assert set(counts) <= set(P)
    # chi-square over cells with expected count >= 5 (the rest pooled)
    chi2, pooled_o, pooled_e, df = 0.0, 0, 0.0, -1
    for cell, p in P.items():
        e, o = N * p, counts.get(cell, 0)
        if e >= 5:
            chi2 += (o - e) ** 2 / e
            df += 1
        else:
            pooled_o += o
            pooled_e += e
    if pooled_e >= 5:
        chi2 += (pooled_o - pooled_e) ** 2 / pooled_e
        df += 1
    # 99.9% quantile of chi2(df) via Wilson–Hilferty; a wrong sampler lands far above it
    z = 3.09
    crit = df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3
    assert chi2 < crit, (chi2, crit, df)


def test_semantic_term_is_indexed_by_candidate():
    # No co-occurrence at all: only cosine similarity decides. Concept 4 is a near copy of concept 0.
    stats = ConceptStats.from_lists([[f"c{i}"] for i in range(6)])
    E = np.eye(6, 8)
    E[4] = E[0] + 0.05 * np.eye(6, 8)[4]
    freq = np.zeros(6, dtype=np.int64)
    freq[0] = 1
    stats.frequency = freq  # always start from c0
    sampler = ConceptSampler(stats, E, temperature=0.2, size=2, seed=0)
    seconds = [sampler.sample_ids()[1] for _ in range(300)]
    assert np.mean(np.array(seconds) == 4) > 0.9


def test_no_overflow_with_huge_cooccurrence_counts():
    stats = ConceptStats.from_lists([["a", "b"], ["a", "c"], ["d", "e"]])
    # pairs seen together millions of times (the reference's exp(s/0.2) overflows past ~140)
    stats.cooc_rows = [(js, cs * 1e6) for js, cs in stats.cooc_rows]
    s = ConceptSampler(stats, np.eye(5), temperature=0.2, size=3, seed=0)
    scores = s.next_scores([0])
    with np.errstate(over="ignore"):
        assert not np.all(np.isfinite(np.exp(scores[np.isfinite(scores)] / 0.2)))  # the naive formula
    p = stable_softmax(scores, 0.2)
    assert np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-12 and p[0] == 0
    assert p[1] == pytest.approx(0.5) and p[2] == pytest.approx(0.5)  # b and c tie, d and e vanish
    for _ in range(50):
        ids = s.sample_ids()
        assert len(set(ids)) == 3 and all(np.isfinite(stable_softmax(s.next_scores(ids[:2]), 0.2)))


def test_deterministic_given_seed_and_unique_sets():
    stats, E = _universe(seed=2)
    a = ConceptSampler(stats, E, size=3, levels=("AIME", "AMC12"), seed=7).sample_unique(10)
    b = ConceptSampler(stats, E, size=3, levels=("AIME", "AMC12"), seed=7).sample_unique(10)
    c = ConceptSampler(stats, E, size=3, levels=("AIME", "AMC12"), seed=8).sample_unique(10)
    assert a == b and a != c
    assert len({frozenset(x[0]) for x in a}) == len(a)
    assert all(level in ("AIME", "AMC12") for _, level in a)
    # the space of 3-subsets of 6 concepts is 20: asking for more stops without looping forever
    many = ConceptSampler(stats, E, size=3, temperature=5.0, seed=0).sample_unique(100)
    assert len(many) <= len(list(itertools.combinations(range(6), 3)))


def test_bad_inputs_are_clear_errors():
    stats, E = _universe()
    with pytest.raises(ValueError, match="embeddings"):
        ConceptSampler(stats, E[:3])
    with pytest.raises(ValueError, match="temperature"):
        ConceptSampler(stats, E, temperature=0)
    with pytest.raises(ValueError, match="size"):
        ConceptSampler(stats, E, size=99)
