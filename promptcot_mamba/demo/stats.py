"""Intervals and significance for the demo's accuracies over training seeds and held-out problems.

One accuracy cell of the demo is a matrix `acc[s, i]`: the share of correct samples on held-out
problem i by the model trained with seed s (the problems are the same for every seed: the data seed
is the run's, the training seeds vary initialisation and data order). Two sources of chance move it:

    training   another seed (or another machine's rounding: issue 15 saw one cell move 24 points)
    problems   another draw of the held-out set from the same generator

The interval says how far a rerun could land on both counts. Its half-width combines a Student-t
half-width over the seed means (df = seeds − 1: with three seeds the t quantile is 4.30, not 1.96,
which is what keeps the interval honest) with a normal half-width over the problem means (the
problem count is large):

    h_seed = t_{0.975, S−1} · sd_s( mean_i acc[s, i] ) / √S
    h_prob = z_{0.975}      · sd_i( mean_s acc[s, i] ) / √N
    mean ± √(h_seed² + h_prob²)

The seed term already holds some problem-level noise (each seed mean averages over the same N
problems), so the sum is a little conservative. A difference between two cells (phase 2 against
phase 1, Mamba-2 against Llama) uses the same formula on the paired differences `a[s, i] − b[s, i]`:
paired by problem (the same held-out problem), and by seed index (for the phase comparison the same
training run); it is called significant when its interval excludes zero.

No SciPy: the t quantile is found by bisection on the t distribution's CDF, integrated numerically
(checked against the printed table in tests/demo/test_demo_stats.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

Z_975 = 1.959963984540054  # the standard normal's 97.5% quantile


def t_cdf(x: float, df: int) -> float:
    """P(T ≤ x) for Student's t with `df` degrees of freedom (Simpson's rule on the density; 1e-9)."""
    if df < 1:
        raise ValueError(f"t_cdf: df must be >= 1, got {df}")
    if x < 0:
        return 1.0 - t_cdf(-x, df)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def pdf(t: float) -> float:
        return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))

    n = 2 * max(200, int(200 * x))  # even; the density is smooth, so a fine grid suffices
    h = x / n
    s = pdf(0.0) + pdf(x) + sum((4 if j % 2 else 2) * pdf(j * h) for j in range(1, n))
    return 0.5 + s * h / 3


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (p in (0.5, 1))."""
    if not 0.5 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0.5, 1), got {p}")
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _sd(xs: Sequence[float]) -> float:
    """Sample standard deviation (n − 1); 0 for a single value."""
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def t_interval(xs: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The textbook one-sample t interval for the mean: x̄ ± t_{(1+c)/2, n−1} · s / √n."""
    if len(xs) < 2:
        raise ValueError("t_interval: needs at least two values")
    m = _mean(xs)
    h = t_quantile((1 + confidence) / 2, len(xs) - 1) * _sd(xs) / math.sqrt(len(xs))
    return m - h, m + h


@dataclass(frozen=True)
class Interval:
    """A cell's (or a difference's) mean over seeds and problems with its 95% interval."""

    mean: float
    lo: float
    hi: float
    h_seed: float  # the training-seed part of the half-width
    h_prob: float  # the problem part
    seeds: tuple[float, ...]  # the per-seed means

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def to_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "h_seed": self.h_seed, "h_prob": self.h_prob,
                "seeds": list(self.seeds)}


def _matrix(acc: Sequence[Sequence[float]], what: str) -> list[list[float]]:
    rows = [list(map(float, r)) for r in acc]
    if not rows or not rows[0]:
        raise ValueError(f"{what}: needs at least one seed and one problem")
    if any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(f"{what}: every seed must be scored on the same problems "
                         f"(got {sorted({len(r) for r in rows})} problems)")
    return rows


def seed_problem_interval(acc: Sequence[Sequence[float]], confidence: float = 0.95) -> Interval:
    """The interval of the module docstring for a seeds × problems matrix of per-problem accuracies.
    With one seed the seed term is unknown and left out (the interval then covers problems only)."""
    rows = _matrix(acc, "seed_problem_interval")
    S, N = len(rows), len(rows[0])
    seed_means = [_mean(r) for r in rows]
    problem_means = [_mean([r[i] for r in rows]) for i in range(N)]
    m = _mean(seed_means)
    h_seed = t_quantile((1 + confidence) / 2, S - 1) * _sd(seed_means) / math.sqrt(S) if S > 1 else 0.0
    z = Z_975 if confidence == 0.95 else _normal_quantile((1 + confidence) / 2)
    h_prob = z * _sd(problem_means) / math.sqrt(N) if N > 1 else 0.0
    h = math.hypot(h_seed, h_prob)
    return Interval(m, m - h, m + h, h_seed, h_prob, tuple(seed_means))


def paired_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]],
                      confidence: float = 0.95) -> Interval:
    """The interval of mean(a − b), paired by seed index and problem (see the module docstring)."""
    ra, rb = _matrix(a, "paired_difference"), _matrix(b, "paired_difference")
    if (len(ra), len(ra[0])) != (len(rb), len(rb[0])):
        raise ValueError(f"paired_difference: shapes differ ({len(ra)}×{len(ra[0])} vs {len(rb)}×{len(rb[0])})")
    return seed_problem_interval([[x - y for x, y in zip(r, q)] for r, q in zip(ra, rb)], confidence)


def _normal_quantile(p: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * math.erfc(-mid / math.sqrt(2)) < p else (lo, mid)
    return (lo + hi) / 2
