"""Memory per sequence is constant: state bytes and process memory do not grow with length."""

from __future__ import annotations

import gc
import os

import pytest

from promptcot_mamba.generate import Engine, EngineConfig, SamplingParams
from promptcot_mamba.generate.tiny import build_tiny_model, build_tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_state_and_process_memory_flat_from_100_to_10000_tokens():
    tok = build_tiny_tokenizer()
    e = Engine(build_tiny_model(tok), tok, EngineConfig(max_slots=2, prefix_cache_gb=0))
    rid = e.add_request(tok.encode("Let x be"), SamplingParams(max_tokens=10_000, temperature=1.0, seed=0,
                                                               ignore_eos=True))
    ptr = (e.pool.conv.data_ptr(), e.pool.ssm.data_ptr())
    n, at, finished = 0, {}, False
    while not finished:
        for o in e.step():
            assert o.request_id == rid
            n += len(o.token_ids)
            finished = o.finished
        if n in (100, 1000, 10_000) and n not in at:
            gc.collect()
            at[n] = (e.state_bytes, e.sequence_state_bytes(0), rss_bytes())
    assert n == 10_000
    assert at[100][0] == at[10_000][0] == e.pool.nbytes
    assert at[100][1] == at[10_000][1] == e.capacity["state_bytes_per_sequence"]
    assert (e.pool.conv.data_ptr(), e.pool.ssm.data_ptr()) == ptr  # never reallocated
    # process memory: flat after warm-up (the token list and text grow by a few hundred KB at most)
    growth = at[10_000][2] - at[1000][2]
    assert growth < 8 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB between 1,000 and 10,000 tokens"
