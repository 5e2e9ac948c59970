"""The engine: continuous batching equals running alone, seeds, stops, limits, prefix cache, memory."""

from __future__ import annotations

import random

import pytest
import torch

from promptcot_mamba.common.tolerances import SSD_TERMS, rtol
from promptcot_mamba.generate import Engine, EngineConfig, EngineError, QueueFull, SamplingParams
from promptcot_mamba.generate.tiny import build_tiny_model, build_tiny_tokenizer
from promptcot_mamba.model.kernels import Kernels

pytestmark = pytest.mark.usefixtures("one_thread")

GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return build_tiny_model(tok)


def engine(model, tok, **kw):
    kw.setdefault("prefix_cache_gb", 0.0)
    return Engine(model, tok, EngineConfig(**kw))


def prompts(tok, k, seed=0):
    rng = random.Random(seed)
    words = "the quick brown fox jumps over lazy dog answer boxed reason step number real".split()
    return [tok.encode(" ".join(rng.choice(words) for _ in range(rng.randint(1, 40)))) for _ in range(k)]


def test_batched_greedy_equals_alone_with_joins_and_leaves(model, tok, assert_greedy_equivalent,
                                                           next_token_logits):
    ps = prompts(tok, 32)
    params = [SamplingParams(max_tokens=5 + 3 * (i % 7), temperature=0.0, ignore_eos=True) for i in range(32)]
    solo = engine(model, tok, max_slots=1)  # one request at a time: each runs alone
    alone = [solo.generate([p], q)[0].samples[0].token_ids for p, q in zip(ps, params)]
    # 8 slots for 32 requests: requests queue, join as others finish; small prefill chunks interleave
    e = engine(model, tok, max_slots=8, prefill_chunk=16)
    batched = [r.samples[0].token_ids for r in e.generate(ps, params)]
    # a decode step of 8 rows rounds differently from one of 1 row (another GEMM shape), so the tokens
    # may part at a near-tie of the logits, which steps those are depending on the CPU
    for i, (p, a, b) in enumerate(zip(ps, batched, alone)):
        assert_greedy_equivalent(next_token_logits(model), p, a, b, what=f"request {i} batched vs alone")
    assert [len(t) for t in batched] == [q.max_tokens for q in params]
    assert e.num_running == 0 and not e.has_work()


def test_decode_on_pool_matches_packed(model, tok, assert_greedy_equivalent, next_token_logits):
    ps = prompts(tok, 6, seed=3)
    a = engine(model, tok, max_slots=4).generate(ps, GREEDY)
    b = engine(model, tok, max_slots=4, decode_on_pool=True).generate(ps, GREEDY)
    # the bucketed decoder of generate/decode_graphs (CUDA graphs on a GPU, eager here) over the same pool
    model.kernels = Kernels(decode="bucketed")
    try:
        c = engine(model, tok, max_slots=4).generate(ps, GREEDY)
    finally:
        model.kernels = Kernels()
    # the three step other numbers of rows (the active ones, the pool, a bucket): equal up to near-ties
    logits_fn = next_token_logits(model)
    for i, p in enumerate(ps):
        ref = a[i].samples[0].token_ids
        assert_greedy_equivalent(logits_fn, p, b[i].samples[0].token_ids, ref, what=f"pool {i}")
        assert_greedy_equivalent(logits_fn, p, c[i].samples[0].token_ids, ref, what=f"bucketed {i}")


def test_seed_reproducible_alone_and_batched(model, tok):
    p = tok.encode("Let x be a real number")
    sp = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=1234, ignore_eos=True)
    alone = engine(model, tok).generate([p], sp)[0].samples[0].token_ids
    others = prompts(tok, 7, seed=5)
    mixed = [SamplingParams(max_tokens=20, temperature=0.7, seed=i) for i in range(7)]
    res = engine(model, tok).generate(others[:3] + [p] + others[3:], mixed[:3] + [sp] + mixed[3:])
    # Batched, the row's logits round differently (by up to 3.3e-6 at max|logits| 9.2, measured here); a
    # draw moves only if its uniform lies that close to a CDF or top_p boundary. Measured with the
    # reference model, the nearest of these 19 decode-step draws needs a change of 1.1e-5·max|logits|,
    # 30x that rounding, so this holds on any CPU without a tie check.
    assert res[3].samples[0].token_ids == alone
    other_seed = engine(model, tok).generate([p], SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9,
                                                                  seed=99, ignore_eos=True))
    assert other_seed[0].samples[0].token_ids != alone


def test_n_samples_use_seed_plus_index(model, tok):
    p = tok.encode("hello world")
    res = engine(model, tok).generate([p], SamplingParams(max_tokens=12, temperature=1.0, n=3, seed=7,
                                                           ignore_eos=True))[0]
    assert [s.seed for s in res.samples] == [7, 8, 9]
    # three requests with seeds 7, 8, 9 decode as the same three rows as the n = 3 request, so the
    # logits are bit for bit the same and so are the draws (run alone, a row rounds differently, and
    # sample 8 draws a uniform 1.2e-6 from a CDF boundary at step 6: it could move on another CPU)
    ones = engine(model, tok).generate([p] * 3, [SamplingParams(max_tokens=12, temperature=1.0, seed=s.seed,
                                                                ignore_eos=True) for s in res.samples])
    assert [r.samples[0].token_ids for r in ones] == [s.token_ids for s in res.samples]
    assert len({tuple(s.token_ids) for s in res.samples}) > 1


def test_top_k_1_top_p_tiny_and_min_p_1_are_greedy(model, tok):
    p = tok.encode("The quick brown")
    greedy = engine(model, tok).generate([p], GREEDY)[0].samples[0].token_ids
    for kw in ({"top_k": 1}, {"top_p": 1e-6}, {"min_p": 1.0}):
        sp = SamplingParams(max_tokens=24, temperature=1.3, seed=3, **kw)
        assert engine(model, tok).generate([p], sp)[0].samples[0].token_ids == greedy, kw


def test_stop_string_token_and_lengths(model, tok):
    p = tok.encode("The quick brown")
    e = engine(model, tok)
    full = e.generate([p], SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True))[0].samples[0]
    assert full.finish_reason == "length" and len(full.token_ids) == 30
    text = full.text
    stop = text[7:10]
    cut = text.find(stop)
    r = e.generate([p], SamplingParams(max_tokens=30, temperature=0.0, stop=(stop,), ignore_eos=True))[0].samples[0]
    assert r.finish_reason == "stop" and r.stop_reason == stop and r.text == text[:cut]
    r = e.generate([p], SamplingParams(max_tokens=30, temperature=0.0, stop=(stop,), ignore_eos=True,
                                       include_stop_str_in_output=True))[0].samples[0]
    assert r.text == text[:cut + len(stop)]
    t5 = full.token_ids[5]
    first = full.token_ids.index(t5)
    r = e.generate([p], SamplingParams(max_tokens=30, temperature=0.0, stop_token_ids=(t5,),
                                       ignore_eos=True))[0].samples[0]
    assert r.finish_reason == "stop" and r.stop_reason == t5 and r.token_ids == full.token_ids[:first + 1]
    # min_tokens masks the stop token until 8 tokens exist
    r = e.generate([p], SamplingParams(max_tokens=30, temperature=0.0, stop_token_ids=(t5,), min_tokens=8,
                                       ignore_eos=True))[0].samples[0]
    assert len(r.token_ids) > 8 and t5 not in r.token_ids[:8]


def test_eos_stops_unless_ignored(model, tok):
    e = Engine(model, tok, EngineConfig(prefix_cache_gb=0), eos_token_id=None)
    full = e.generate([tok.encode("hello")], SamplingParams(max_tokens=20, temperature=0.0))[0].samples[0]
    eos = full.token_ids[3]
    e2 = Engine(model, tok, EngineConfig(prefix_cache_gb=0), eos_token_id=eos)
    r = e2.generate([tok.encode("hello")], SamplingParams(max_tokens=20, temperature=0.0))[0].samples[0]
    assert r.finish_reason == "stop" and r.token_ids[-1] == eos and len(r.token_ids) == full.token_ids.index(eos) + 1
    r = e2.generate([tok.encode("hello")], SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True))[0]
    assert r.samples[0].token_ids == full.token_ids


def test_logprobs_match_model(model, tok):
    p = tok.encode("hello world")
    r = engine(model, tok).generate([p], SamplingParams(max_tokens=3, temperature=0.0, logprobs=3))[0].samples[0]
    logits, _ = model.prefill(torch.tensor([p]))
    lp = torch.log_softmax(logits[0], -1)
    first = r.logprobs[0]
    # the engine's first token comes from this same prefill call on the same ids: equal but for the
    # engine's denormal flushing, so no cross-implementation tolerance is needed
    assert first.token_id == r.token_ids[0] == int(lp.argmax())
    assert first.logprob == pytest.approx(float(lp.max()), abs=1e-5)
    assert [t for t, _ in first.top] == lp.topk(3).indices.tolist()


def test_prefix_cache_hit_equals_recomputation(model, tok):
    header = prompts(tok, 1, seed=11)[0] * 4  # a shared few-shot header of > 64 tokens
    assert len(header) > 70
    a = header + tok.encode(" first question")
    b = header + tok.encode(" second question is longer")
    sp = SamplingParams(max_tokens=16, temperature=0.0, logprobs=5)
    cached = engine(model, tok, prefix_cache_gb=0.01, prefix_block=16, prefill_chunk=32)
    cached.generate([a], sp)
    hit = cached.generate([b], sp)[0]
    assert cached.prefix_cache.hits >= 1 and hit.cached_prompt_tokens >= 64
    fresh = engine(model, tok, prefix_cache_gb=0.0, prefix_block=16, prefill_chunk=32).generate([b], sp)[0]
    assert hit.samples[0].token_ids == fresh.samples[0].token_ids
    # bit for bit: the same logprobs, not merely the same argmax
    assert [x.logprob for x in hit.samples[0].logprobs] == [x.logprob for x in fresh.samples[0].logprobs]
    # and the segmented prefill agrees with one whole-prompt prefill (other segment ends: the scan sums in
    # another order) up to the rounding of a whole-model value, relative to the logits' scale
    whole, _ = model.prefill(torch.tensor([b]))
    top = hit.samples[0].logprobs[0].top
    got = torch.tensor([v for _, v in top])
    want = torch.log_softmax(whole[0], -1)[[t for t, _ in top]]
    err = float((got - want).abs().max())
    assert err <= rtol(torch.float32, SSD_TERMS) * float(whole.abs().max()), err


def test_prefix_cache_is_bounded_lru(model, tok):
    from promptcot_mamba.generate.prefix_cache import PrefixCache

    st = model.allocate_state(1)
    cache = PrefixCache(max_bytes=2 * st.nbytes, block=4)
    for k in range(3):
        cache.insert([k] * 4, st)
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes and cache.evictions == 1
    assert cache.lookup([0] * 4 + [9]) is None  # the oldest went first
    assert cache.lookup([2] * 4 + [9]).length == 4


def test_memory_budget_sets_slots_and_queues(model, tok):
    probe = engine(model, tok)
    cap = probe.capacity
    budget = (cap["weight_bytes"] + 3.5 * cap["bytes_per_sequence"]) / 1e9
    e = engine(model, tok, memory_budget_gb=budget)
    assert e.max_slots == 3
    ps = prompts(tok, 5, seed=2)
    res = e.generate(ps, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    assert all(len(r.samples[0].token_ids) == 6 for r in res)
    with pytest.raises(ValueError, match="does not fit one sequence"):
        engine(model, tok, memory_budget_gb=cap["weight_bytes"] / 1e9)


def test_abort_frees_slot_and_queue_limit(model, tok):
    e = engine(model, tok, max_slots=2, max_queue=2)
    rid = e.add_request(tok.encode("hello"), SamplingParams(max_tokens=1000, temperature=0.0, ignore_eos=True))
    for _ in range(3):
        e.step()
    assert e.num_running == 1
    e.abort(rid)
    outs = e.step()
    assert any(o.request_id == rid and o.finish_reason == "abort" for o in outs)
    assert e.num_running == 0 and not e.has_work()
    e.add_request([5], GREEDY)
    e.add_request([6], GREEDY)
    with pytest.raises(QueueFull):
        e.add_request([7], GREEDY)


def test_invalid_requests_are_refused(model, tok):
    e = engine(model, tok, max_prompt_tokens=50, max_new_tokens=100)
    with pytest.raises(EngineError, match="empty"):
        e.add_request([], GREEDY)
    with pytest.raises(EngineError, match="outside the vocabulary"):
        e.add_request([10**6], GREEDY)
    with pytest.raises(EngineError, match="over the limit"):
        e.add_request([1] * 51, GREEDY)
    with pytest.raises(EngineError, match="max_tokens"):
        e.add_request([1], SamplingParams(max_tokens=101))
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(max_tokens=2, min_tokens=3)


@torch.no_grad()
def _forward(model, ids):
    return model(torch.tensor([ids])).logits[0]


def _close(got, want, scale, what):
    """Equal up to the rounding of a whole-model value relative to the logits' scale: the engine runs
    segmented prefills and one-token decode steps, the reference one whole-sequence forward."""
    err = float((torch.as_tensor(got) - torch.as_tensor(want)).abs().max())
    assert err <= rtol(torch.float32, SSD_TERMS) * scale, (what, err)


def test_prompt_logprobs_equal_the_forward_pass_and_bypass_the_prefix_cache(model, tok):
    p = prompts(tok, 1, seed=21)[0] * 3  # about 60 tokens: 5 segments of 16 or fewer (cache points 8, 16, 32)
    assert len(p) > 40
    e = engine(model, tok, prefix_cache_gb=0.01, prefix_block=8, prefill_chunk=16)
    e.generate([p], SamplingParams(max_tokens=2, temperature=0.0))  # this prompt's prefixes are now cached
    r = e.generate([p], SamplingParams(max_tokens=0, prompt_logprobs=5, n=2))[0]
    # nothing generated, no slot held, and every position scored (the cached prefix has no logits)
    assert r.cached_prompt_tokens == 0 and [s.token_ids for s in r.samples] == [[], []]
    assert [s.finish_reason for s in r.samples] == ["length", "length"] and not e.has_work()
    lps = r.prompt_logprobs
    assert len(lps) == len(p) and lps[0] is None and [lp.token_id for lp in lps[1:]] == p[1:]
    logits = _forward(model, p)[:-1]
    ref = torch.log_softmax(logits, -1)
    scale = float(logits.abs().max())
    _close([lp.logprob for lp in lps[1:]], ref[torch.arange(len(p) - 1), p[1:]], scale, "prompt logprobs")
    _close([[v for _, v in lp.top] for lp in lps[1:]], ref.topk(5).values, scale, "top-5 values")
    for j, lp in enumerate(lps[1:]):
        # the listed ids hold those values in the reference too (ids may swap only at a near-tie)
        _close(ref[j, [t for t, _ in lp.top]], [v for _, v in lp.top], scale, f"top-5 ids at {j}")
        assert lp.logprob == dict(lp.top).get(lp.token_id, lp.logprob)  # one value per token, its own
        bound = rtol(torch.float32, SSD_TERMS) * scale
        above = ref[j] - ref[j, p[j + 1]]
        assert int((above > bound).sum()) + 1 <= lp.rank <= int((above > -bound).sum()), (j, lp.rank)
    # a request without prompt logprobs still reads the cache
    again = e.generate([p], SamplingParams(max_tokens=1, temperature=0.0))[0]
    assert again.cached_prompt_tokens >= 32 and again.prompt_logprobs is None


def test_prompt_logprobs_with_generation(model, tok):
    p = tok.encode("The quick brown fox")
    sp = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    plain = engine(model, tok).generate([p], sp)[0].samples[0]
    r = engine(model, tok).generate([p], SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True,
                                                        prompt_logprobs=0))[0]
    assert len(r.prompt_logprobs) == len(p) and all(lp.top == [] for lp in r.prompt_logprobs[1:])
    assert len(r.samples[0].token_ids) == 5
    # the first token comes from the last row of all-position logits instead of a last-row-only
    # projection: the same up to rounding, so greedy agrees unless the first step is a near-tie
    logits = _forward(model, p)[-1]
    top2 = logits.topk(2).values
    if float(top2[0] - top2[1]) > rtol(torch.float32, SSD_TERMS) * float(logits.abs().max()):
        assert r.samples[0].token_ids[0] == plain.token_ids[0]


@pytest.mark.parametrize("penalty", [1.0, 1.5])
def test_greedy_logprobs_are_the_raw_model_distribution(model, tok, penalty):
    """Under greedy decoding the chosen token's logprob and the top k are the log-softmax of the model's
    logits at that step, whatever the penalties did to the choice (the raw distribution, vLLM's default)."""
    p = tok.encode("Let x be a real number")
    s = engine(model, tok).generate([p], SamplingParams(max_tokens=10, temperature=0.0, logprobs=5, ignore_eos=True,
                                                        repetition_penalty=penalty))[0].samples[0]
    ids = p + s.token_ids
    logits = _forward(model, ids)[len(p) - 1:-1]
    ref = torch.log_softmax(logits, -1)
    scale = float(logits.abs().max())
    assert [lp.token_id for lp in s.logprobs] == s.token_ids
    _close([lp.logprob for lp in s.logprobs], ref[torch.arange(len(s.token_ids)), s.token_ids], scale, "chosen")
    _close([[v for _, v in lp.top] for lp in s.logprobs], ref.topk(5).values, scale, "top-5")
    for lp in s.logprobs:
        assert len(lp.top) == 5 and lp.logprob == dict(lp.top).get(lp.token_id, lp.logprob)
    if penalty == 1.0:
        assert all(lp.rank == 1 for lp in s.logprobs)  # greedy on the raw logits: the most likely token
