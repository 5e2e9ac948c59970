"""Synthesis stages over real HTTP against our own OpenAI-compatible server (`pcm serve`'s app over
the in-process Mamba engine, tiny random model). The random model writes gibberish, so the point is
the contract: every record comes back done or failed with a parse reason, none lost or duplicated,
and no transport errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

sys.path.insert(0, str(Path(__file__).parent))
from test_synth_pipeline import check_accounting, make_seeds, with_small_model_knobs  # noqa: E402

from promptcot_mamba.generate.client import EngineClient  # noqa: E402
from promptcot_mamba.generate.engine import Engine, EngineConfig  # noqa: E402
from promptcot_mamba.generate.tiny import build_tiny_model  # noqa: E402
from promptcot_mamba.llm.openai_client import OpenAIClient  # noqa: E402
from promptcot_mamba.llm.scripted_server import serve_in_thread  # noqa: E402
from promptcot_mamba.serve.app import create_app  # noqa: E402
from promptcot_mamba.synth.pipeline import STAGE_FILES, run_pipeline  # noqa: E402
from promptcot_mamba.synth.records import make_record, read_jsonl  # noqa: E402
from promptcot_mamba.synth.stages import run_stage  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_concepts_and_teacher_stages_against_pcm_serve(tmp_path):
    model = build_tiny_model()
    engine = Engine(model, model.tokenizer, EngineConfig(max_slots=4, max_prompt_tokens=1024, max_new_tokens=64))
    app = create_app(engine, model_name="tiny")
    seeds = make_seeds(tmp_path / "seeds.jsonl", 6)
    cfg = {"seed": 0, "chunk_size": 4, "concepts": {"max_tokens": 24, "parse_retries": 0},
           "teacher": {"k": 2, "mode": "completion", "max_tokens": 24, "format_retries": 0}}
    with serve_in_thread(app, lifespan="on") as url:
        client = OpenAIClient(url, max_concurrency=4, timeout_s=60, max_retries=1)  # model from /v1/models
        man = run_stage("concepts", seeds, tmp_path / "c.jsonl", client, cfg, progress=False)
        man2 = run_stage("solutions", seeds, tmp_path / "s.jsonl", client, cfg, progress=False)
    assert client.model == "tiny"
    for m, path in ((man, tmp_path / "c.jsonl"), (man2, tmp_path / "s.jsonl")):
        recs = list(read_jsonl(path))
        assert len(recs) == 6 and len({r["id"] for r in recs}) == 6
        assert sum(m["counts"].values()) == 6
        for r in recs:
            assert r["status"] == "done" or r["reason"]
            assert "llm:" not in (r["reason"] or ""), r["reason"]  # the server answered every call


def test_whole_chain_against_pcm_serve(tmp_path):
    """`run_pipeline` with every role served by `pcm serve`'s app on 127.0.0.1, the small-model knobs on
    (few-shot turns, and prefills sent as `continue_final_message`, which the server must honour). The
    seeds list their concepts so the chain reaches the LLM stages after extraction; the random model's
    answers then fail to parse, and each such record says so. The judge and teacher stages are also run
    alone on hand-written problems, so every LLM stage goes over HTTP to our server."""
    seeds = tmp_path / "seeds.jsonl"
    topics = ["primes", "parity", "triangles", "circles", "sums", "digits"]
    with open(seeds, "w") as f:
        for i in range(6):
            f.write(json.dumps({"id": f"s{i}", "problem": f"Problem {i} about {topics[i]}.",
                                "concepts": [topics[i], topics[(i + 1) % 6], topics[(i + 3) % 6]]}) + "\n")
    problems = tmp_path / "problems.jsonl"
    with open(problems, "w") as f:
        for i in range(3):
            f.write(json.dumps(make_record(f"p{i}", "problems", concepts=["primes", "parity"], level="AMC12",
                                           rationale="Combine parity with primes.",
                                           problem=f"How many primes below {10 + i} are odd?")) + "\n")
    cfg = with_small_model_knobs({
        "seed": 0, "chunk_size": 4, "embeddings": {"backend": "hashing"},
        "sampling": {"num_problems": 4, "size": 2},
        "problems": {"max_tokens": 24, "parse_retries": 0}, "judge": {"max_tokens": 24, "parse_retries": 0},
        "teacher": {"k": 2, "max_tokens": 24, "format_retries": 0}})
    model = build_tiny_model()
    engine = Engine(model, model.tokenizer, EngineConfig(max_slots=4, max_prompt_tokens=4096, max_new_tokens=64))
    with serve_in_thread(create_app(engine, model_name="tiny"), lifespan="on") as url:
        client = OpenAIClient(url, max_concurrency=4, timeout_s=60, max_retries=1)
        res = run_pipeline(cfg, client, tmp_path / "out", seeds_path=seeds, progress=False)
        judged = run_stage("judge", problems, tmp_path / "j.jsonl", client, cfg, progress=False)
        solved = run_stage("solutions", problems, tmp_path / "s.jsonl", client, cfg, progress=False)
    out = tmp_path / "out"
    check_accounting(out)
    table = {row["stage"]: row for row in res.table()}
    assert table["concepts"]["done"] == 6 and table["combos"]["done"] == 4 and table["problems"]["in"] == 4
    recs = list(read_jsonl(out / STAGE_FILES["problems"]))
    assert len(recs) == 4
    for r in recs:  # the server answered; the random text is what failed, and the record says how
        assert r["status"] == "done" or r["reason"].startswith("parse:"), r["reason"]
    assert res.sft_path.exists()
    for man, path in ((judged, tmp_path / "j.jsonl"), (solved, tmp_path / "s.jsonl")):
        assert sum(man["counts"].values()) == 3
        for r in read_jsonl(path):
            assert r["status"] == "done" or (r["reason"] and "llm:" not in r["reason"]), r["reason"]


def test_stages_with_the_in_process_engine_client(tmp_path):
    model = build_tiny_model()
    client = EngineClient(model, config=EngineConfig(max_slots=4, max_prompt_tokens=1024, max_new_tokens=64))
    seeds = make_seeds(tmp_path / "seeds.jsonl", 4)
    cfg = {"seed": 0, "chunk_size": 4, "concepts": {"max_tokens": 16, "parse_retries": 1},
           "teacher": {"k": 2, "max_tokens": 16, "format_retries": 1}}
    a = run_stage("concepts", seeds, tmp_path / "c.jsonl", client, cfg, progress=False)
    b = run_stage("solutions", seeds, tmp_path / "s.jsonl", client, cfg, progress=False)
    for m, path in ((a, tmp_path / "c.jsonl"), (b, tmp_path / "s.jsonl")):
        recs = list(read_jsonl(path))
        assert len(recs) == 4 == sum(m["counts"].values())
        assert all(r["status"] == "done" or r["reason"] for r in recs)
    # seeded: a rerun into a new file writes the same lines
    run_stage("concepts", seeds, tmp_path / "c2.jsonl", EngineClient(model, config=EngineConfig(
        max_slots=4, max_prompt_tokens=1024, max_new_tokens=64)), cfg, progress=False)
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "c2.jsonl").read_bytes()
