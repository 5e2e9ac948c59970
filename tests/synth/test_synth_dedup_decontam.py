"""Near-duplicate removal and benchmark decontamination (planted AIME / MATH-500 near-copies)."""

from __future__ import annotations

import random
import re

import pytest

from promptcot_mamba.synth.decontam import Decontaminator, load_benchmarks
from promptcot_mamba.synth.dedup import Deduplicator, jaccard, word_set
from promptcot_mamba.synth.records import read_jsonl


def test_dedup_keeps_first_and_reports_pairs():
    items = [("a", "Find the number of positive integers n below 1000 such that n squared ends in 9."),
             ("b", "Find the number of positive integers n below 1000 such that n squared ends in 9!"),  # exact-ish
             ("c", "Find the number of positive integers n below 1000 such that n cubed ends in 9."),
             ("d", "A circle of radius 3 is inscribed in a right triangle; find its area."),
             ("e", "find the number of positive integers n below 1000 such that n squared ends in 9.")]
    res = Deduplicator(threshold=0.7).run(items)
    assert res.kept == ["a", "d"]
    rm = res.removed_ids
    assert rm["b"]["duplicate_of"] == "a" and rm["e"]["kind"] == "exact" and rm["c"]["jaccard"] > 0.7
    # numbers are words by default: problems that differ only in their numbers stay
    res2 = Deduplicator(threshold=0.7).run([("x", "What is 3 + 5?"), ("y", "What is 4 + 6?")])
    assert res2.kept == ["x", "y"]
    # the reference's filter (>= 4 chars, no numbers) merges them
    assert word_set("What is 3 + 5?", min_word_len=4, drop_numeric=True) == {"what"}
    assert jaccard(frozenset(), frozenset()) == 1.0


def test_dedup_random_near_copies_found():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(2000)]
    base = [(f"p{i}", " ".join(rng.choice(vocab) for _ in range(40))) for i in range(500)]
    copies = []
    for i in range(50):
        words = base[i][1].split()
        words[rng.randrange(40)] = "changed"
        copies.append((f"c{i}", " ".join(words)))
    res = Deduplicator(threshold=0.7).run(base + copies)
    assert set(res.removed_ids) == {f"c{i}" for i in range(50)}
    assert len(res.kept) == 500


def _perturb(text: str, rng: random.Random) -> str:
    """A near-copy: every number changed, a few words swapped, a sentence of framing added."""
    t = re.sub(r"\d+", lambda m: str(int(m.group()) + rng.randint(1, 9)), text)
    words = t.split(" ")
    if len(words) < 25:  # a one-line problem: new numbers and framing only
        return "Consider the following. " + t
    for _ in range(max(1, len(words) // 25)):
        words[rng.randrange(len(words))] = rng.choice(["certain", "given", "some"])
    return "Consider the following. " + " ".join(words)


@pytest.fixture(scope="module")
def bench():
    try:
        return load_benchmarks()
    except FileNotFoundError as err:
        pytest.skip(f"benchmark data not available: {err}")


def test_decontam_finds_planted_aime_and_math500_copies(bench):
    from promptcot_mamba.synth.decontam import default_benchmark_dir

    names = {b.benchmark for b in bench}
    assert {"aime24/test", "aime25/test", "math500/test"} <= names
    assert not any(n.startswith("seeds") for n in names)
    dc = Decontaminator(bench)
    rng = random.Random(0)
    root = default_benchmark_dir()
    aime = [r["problem"] for r in read_jsonl(root / "aime24" / "test.jsonl")][:10] + \
           [r["problem"] for r in read_jsonl(root / "aime25" / "test.jsonl")][:10]
    math500 = [r["problem"] for r in read_jsonl(root / "math500" / "test.jsonl")]
    math500 = [p for p in math500 if len(p.split()) >= 25][:20]
    planted = [_perturb(p, rng) for p in aime + math500]
    hits = [dc.check(p) for p in planted]
    assert all(h is not None for h in hits), [p[:80] for p, h in zip(planted, hits) if h is None]
    assert {h["benchmark"].split("/")[0] for h in hits[:20]} <= {"aime24", "aime25"}
    assert all(h["benchmark"] == "math500/test" for h in hits[20:])
    # clean training problems (the MATH train seeds share no problem with MATH-500) are not flagged
    # Same-template siblings of MATH-500 problems inside MATH train are flagged on purpose (numbers are
    # placeholders); generic one-liners must not be: stay under 5% of 400 train problems.
    seeds = [r["problem"] for r in read_jsonl(root / "seeds" / "math_train_rllm.jsonl")][:400]
    flagged = [s for s in seeds if dc.check(s)]
    assert len(flagged) <= 20, flagged[:5]
    # short procedural problems never match
    assert dc.check("What is 3 + 5?") is None
