"""The batched sampler: distribution, truncation (top_k, top_p, min_p), penalties, per-row seeds."""

from __future__ import annotations

import math

import pytest
import torch

from promptcot_mamba.generate.detokenizer import IncrementalDetokenizer, token_bytes
from promptcot_mamba.generate.sampling import RowSampler, SamplingParams, apply_penalties, logprobs_of, sample
from promptcot_mamba.generate.tiny import build_tiny_tokenizer

LOGITS = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03]))


def draws(params: SamplingParams, k: int = 4000, seed: int = 0) -> torch.Tensor:
    """Frequencies of k seeded draws. The tests' atol is statistical (about 4 standard errors of a
    frequency at this k), not a rounding bound: float rounding on another CPU moves a draw only if its
    uniform sits on a CDF boundary, and each moved draw changes a frequency by 1/k."""
    row = RowSampler(params, seed)
    out = [sample(LOGITS[None].clone(), [row])[0] for _ in range(k)]
    return torch.bincount(torch.tensor(out), minlength=5).float() / k


def test_temperature_1_matches_softmax():
    freq = draws(SamplingParams(temperature=1.0))
    assert torch.allclose(freq, LOGITS.softmax(-1), atol=0.03)


def test_temperature_sharpens():
    freq = draws(SamplingParams(temperature=0.5))
    target = (LOGITS / 0.5).softmax(-1)
    assert torch.allclose(freq, target, atol=0.03)


@pytest.mark.parametrize("params,allowed", [
    (SamplingParams(top_k=2), {0, 1}),
    (SamplingParams(top_p=0.7), {0, 1}),  # 0.5 < 0.7, 0.75 >= 0.7: the first two
    (SamplingParams(top_p=0.5), {0}),
    (SamplingParams(min_p=0.2), {0, 1, 2}),  # >= 0.1 = 0.2 * 0.5
])
def test_truncation(params, allowed):
    freq = draws(params, k=1500)
    assert {i for i in range(5) if freq[i] > 0} == allowed
    kept = LOGITS.softmax(-1)[sorted(allowed)]
    assert torch.allclose(freq[sorted(allowed)], kept / kept.sum(), atol=0.05)


def test_penalties_follow_vllm():
    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0]])
    rows = [RowSampler(SamplingParams(repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25), 0)]
    prompt = torch.tensor([[True, True, False, False]])
    counts = torch.tensor([[0, 0, 3, 0]], dtype=torch.int32)
    out = apply_penalties(logits, rows, prompt, counts)
    # seen tokens: positive logits divided, negative multiplied; output tokens also lose 0.5 + 0.25·count
    assert out.tolist() == [[1.0, -2.0, 0.25 - 0.5 - 0.75, 1.0]]


def test_rows_are_independent_of_batch_composition():
    p = SamplingParams(temperature=1.0, seed=3)
    alone = [sample(LOGITS[None].clone(), [RowSampler(p, 3)])[0] for _ in range(1)]
    a, b = RowSampler(p, 3), RowSampler(SamplingParams(temperature=0.7), 9)
    batch = sample(torch.stack([LOGITS.flip(0), LOGITS]), [b, a])
    assert batch[1] == alone[0]


def test_detokenizer_deltas_concatenate_and_stop_across_tokens():
    tok = build_tiny_tokenizer()
    text = "The quick brown fox jumps over the lazy dog. x = 3 \u00e9\u00e8"
    ids = tok.encode(text)
    d = IncrementalDetokenizer(tok)
    assert "".join(d.add(i) for i in ids) + d.flush() == tok.decode(ids)
    d = IncrementalDetokenizer(tok, stop=("fox jumps",))
    out = ""
    for i in ids:
        out += d.add(i)
        if d.stopped_by:
            break
    assert out + d.flush() == "The quick brown " and d.stopped_by == "fox jumps"


def test_sampling_params_validation():
    for bad in ({"temperature": -0.1}, {"top_k": -2}, {"min_p": 1.5}, {"repetition_penalty": 0},
                {"presence_penalty": 2.5}, {"n": 0}, {"max_tokens": -1}, {"stop": ("",)}, {"logprobs": 21},
                {"prompt_logprobs": 21}, {"prompt_logprobs": -1},
                {"temperature": math.nan}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_logprobs_of_gives_each_token_its_own_value_rank_and_the_top_k():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5, 4.0]])
    ref = torch.log_softmax(logits[0], -1).tolist()
    [lp] = logprobs_of(logits, [3], [2])
    assert lp.token_id == 3 and lp.logprob == ref[3] and lp.rank == 5
    assert lp.top == [(4, ref[4]), (1, ref[1])]
    # id 4 pads the vocabulary (limit 4): still in the normalisation, never in the top k or the ranks
    [lp] = logprobs_of(logits, [1], [2], limit=4)
    assert lp.logprob == ref[1] and lp.rank == 1 and lp.top == [(1, ref[1]), (2, ref[2])]
    assert logprobs_of(logits, [1], [0])[0].top == []


def test_token_bytes_add_up_to_the_text():
    tok = build_tiny_tokenizer()
    for text in ("The quick \u00e9\u20ac fox \U0001f98a", "<|im_start|>user\nhi<|im_end|>"):
        ids = tok.encode(text)
        assert b"".join(token_bytes(tok, i) for i in ids) == text.encode()
    split = [i for i in tok.encode("\u00e9\u20ac") if tok.decode([i]) == "\ufffd"]
    assert split and all(token_bytes(tok, i) != "\ufffd".encode() for i in split)
