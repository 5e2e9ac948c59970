"""The whole chain in process with the scripted client: valid SFT output, complete accounting,
resume equality, stages alone, the CLI, and failures recorded per record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptcot_mamba.llm.base import Generation
from promptcot_mamba.synth.pipeline import STAGE_FILES, run_pipeline
from promptcot_mamba.synth.records import read_jsonl, read_manifest
from promptcot_mamba.synth.scripted import ScriptedSynthClient
from promptcot_mamba.synth.stages import STAGES, StaleOutputError, run_stage
from promptcot_mamba.text.prompts import MATH_SUFFIX
from promptcot_mamba.text.reasoning import split_reasoning


def make_seeds(path: Path, n: int = 40) -> Path:
    topics = ["primes", "triangles", "polynomials", "probability", "sequences", "circles", "digits", "functions"]
    with open(path, "w") as f:
        for i in range(n):
            t1, t2 = topics[i % 8], topics[(i * 3 + 1) % 8]
            f.write(json.dumps({"id": f"seed-{i}", "problem": f"Seed problem {i} about {t1} and {t2}: find x."}) + "\n")
    return path


CFG = {"seed": 3, "chunk_size": 8, "embeddings": {"backend": "hashing"}, "sampling": {"num_problems": 40, "size": 3},
       "teacher": {"k": 3, "min_agreement": 0.6}, "judge": {"keep_policy": "all_perfect"}}


def check_accounting(out: Path) -> None:
    """Every stage: records out == records in (done + failed + filtered), unique ids, reasons set."""
    for name in STAGES:
        path = out / STAGE_FILES[name]
        man = read_manifest(path)
        assert man is not None, f"{name}: no manifest"
        recs = list(read_jsonl(path))
        ids = [r["id"] for r in recs]
        assert len(ids) == len(set(ids)), f"{name}: duplicate ids"
        if name in ("concept_stats", "combos", "export"):
            continue  # fan-in / fan-out stages
        assert len(recs) == man["records_in"], (name, len(recs), man["records_in"])
        assert sum(man["counts"].values()) == len(recs)
        for r in recs:
            assert r["status"] in ("done", "failed", "filtered")
            assert (r["status"] == "done") == (r["reason"] is None), (name, r)


def check_sft(path: Path, stages_with_models=("problems", "judge", "solutions")) -> list[dict]:
    recs = list(read_jsonl(path))
    for r in recs:
        assert set(r) >= {"id", "prompt", "response", "source", "provenance"}
        assert r["prompt"].endswith(MATH_SUFFIX)
        assert r["response"].startswith("<think>\n")
        split = split_reasoning(r["response"])
        assert split.closed and split.reasoning and "\\boxed{" in split.answer
        for st in stages_with_models:
            assert st in r["provenance"], (st, r["provenance"].keys())
        assert r["provenance"]["problems"]["prompt_version"] and "seed" in r["provenance"]["problems"]
    assert len({r["id"] for r in recs}) == len(recs)
    return recs


def test_scripted_chain_end_to_end(tmp_path):
    seeds = make_seeds(tmp_path / "seeds.jsonl")
    client = ScriptedSynthClient()
    res = run_pipeline(CFG, client, tmp_path / "out", seeds_path=seeds, progress=False)
    check_accounting(tmp_path / "out")
    recs = check_sft(res.sft_path)
    assert len(recs) > 5
    table = {row["stage"]: row for row in res.table()}
    assert table["judge"]["filtered"] > 0  # the scripted judges reject ~10% per judge
    assert table["export"]["done"] == len(recs)
    assert "stage" in res.format_table()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == list(STAGES)
    # a finished run is a no-op the second time
    calls = client.calls
    run_pipeline(CFG, client, tmp_path / "out", seeds_path=seeds, progress=False)
    assert client.calls == calls


def test_resume_after_partial_output_equals_uninterrupted(tmp_path):
    seeds = make_seeds(tmp_path / "seeds.jsonl")
    ref = run_pipeline(CFG, ScriptedSynthClient(), tmp_path / "ref", seeds_path=seeds, progress=False)
    out = tmp_path / "cut"
    run_pipeline(CFG, ScriptedSynthClient(), out, seeds_path=seeds, progress=False)
    # simulate a crash in the middle of the problems stage: manifest gone, file cut mid-line,
    # and every later stage not yet run
    p = out / STAGE_FILES["problems"]
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    (out / (STAGE_FILES["problems"] + ".manifest.json")).unlink()
    (out / (STAGE_FILES["problems"] + ".pending.json")).write_text(
        json.dumps({"fingerprint": read_manifest(ref.out_dir / STAGE_FILES["problems"])["fingerprint"]}))
    for name in STAGES[STAGES.index("judge"):]:
        (out / STAGE_FILES[name]).unlink()
        (out / (STAGE_FILES[name] + ".manifest.json")).unlink()
    run_pipeline(CFG, ScriptedSynthClient(), out, seeds_path=seeds, progress=False)
    for name in STAGES:
        assert (out / STAGE_FILES[name]).read_bytes() == (ref.out_dir / STAGE_FILES[name]).read_bytes(), name


def test_stage_alone_and_stale_settings(tmp_path):
    seeds = make_seeds(tmp_path / "seeds.jsonl", 10)
    client = ScriptedSynthClient()
    man = run_stage("concepts", seeds, tmp_path / "c.jsonl", client, CFG, progress=False)
    assert man["counts"]["done"] == 10 and man["records_in"] == 10
    with pytest.raises(StaleOutputError):
        run_stage("concepts", seeds, tmp_path / "c.jsonl", client, {**CFG, "concepts": {"num_concepts": 4}},
                  progress=False)
    man = run_stage("concepts", seeds, tmp_path / "c.jsonl", client, {**CFG, "concepts": {"num_concepts": 4}},
                    progress=False, force=True)
    assert all(len(r["concepts"]) == 4 for r in read_jsonl(tmp_path / "c.jsonl"))
    with pytest.raises(ValueError, match="unknown stage"):
        run_stage("nope", seeds, tmp_path / "x.jsonl", client, CFG)
    with pytest.raises(FileNotFoundError):
        run_stage("concepts", tmp_path / "missing.jsonl", tmp_path / "x.jsonl", client, CFG)


class FlakyClient:
    """Fails every request whose seed is divisible by 4 (after its 'retries'), raises on one batch."""

    name = "flaky"

    def __init__(self):
        self.inner = ScriptedSynthClient()
        self.batches = 0
        self.requests = []

    def generate(self, requests):
        self.batches += 1
        self.requests.extend(requests)
        if self.batches == 3:
            raise RuntimeError("backend exploded")
        out = self.inner.generate(requests)
        return [[Generation(text="", error="HTTP 503 (after 5 attempts)") for _ in o] if (r.seed or 0) % 4 == 0 else o
                for r, o in zip(requests, out)]


def test_failures_are_recorded_per_record_and_metadata_is_set(tmp_path):
    seeds = make_seeds(tmp_path / "seeds.jsonl", 30)
    client = FlakyClient()
    run_pipeline(CFG, client, tmp_path / "out", seeds_path=seeds, progress=False)
    check_accounting(tmp_path / "out")
    failed = [r for name in ("concepts", "problems", "judge", "solutions")
              for r in read_jsonl(tmp_path / "out" / STAGE_FILES[name]) if r["status"] == "failed"]
    assert failed and all(r["reason"] for r in failed)
    assert any("HTTP 503" in r["reason"] for r in failed)
    assert any("backend exploded" in r["reason"] for r in failed)
    required = {"concepts": {"problem", "num_concepts"}, "problems": {"concepts", "level"},
                "judge": {"concepts", "level", "rationale", "problem", "judge_index"},
                "solutions": {"problem", "sample_index"}}
    for req in client.requests:
        st = req.metadata.get("stage")
        assert st in required and required[st] <= set(req.metadata), req.metadata


def test_cli_run_and_stage(tmp_path, capsys):
    from promptcot_mamba.cli import main

    seeds = make_seeds(tmp_path / "seeds.jsonl", 12)
    rc = main(["synth", "run", "tiny", "--client", "scripted", "--out", str(tmp_path / "o"), "--seeds", str(seeds),
               "--no-progress", "--num-problems", "6"])
    out = capsys.readouterr().out
    assert rc == 0 and "SFT pairs" in out and "solutions" in out
    assert (tmp_path / "o" / "sft.jsonl").exists()
    rc = main(["synth", "dedup", str(tmp_path / "o" / "05_judged.jsonl"), str(tmp_path / "d.jsonl"), "--no-progress"])
    assert rc == 0 and read_manifest(tmp_path / "d.jsonl")["stage"] == "dedup"
    rc = main(["synth", "concepts", str(tmp_path / "nope.jsonl"), str(tmp_path / "x.jsonl"), "--client", "scripted"])
    assert rc == 1


def test_parse_failures_keep_the_raw_answer(tmp_path):
    class Rambler:
        name = "rambler"

        def generate(self, requests):
            return [[Generation(text="I would rather talk about the weather.", finish_reason="stop")] * r.n
                    for r in requests]

    src = tmp_path / "combos.jsonl"
    src.write_text(json.dumps({"id": "p-1", "concepts": ["a", "b"], "level": "AIME"}) + "\n")
    man = run_stage("problems", src, tmp_path / "p.jsonl", Rambler(), {"problems": {"parse_retries": 2}},
                    progress=False)
    [rec] = read_jsonl(tmp_path / "p.jsonl")
    assert man["counts"]["failed"] == 1 and rec["reason"].startswith("parse: missing") and "attempt 3" in rec["reason"]
    assert rec["raw_excerpts"] == ["I would rather talk about the weather."]
    assert man["failures"][0]["id"] == "p-1"


def test_seed_records_with_concepts_skip_extraction(tmp_path):
    src = tmp_path / "seeds.jsonl"
    src.write_text(json.dumps({"id": "k1", "problem": "P one", "concepts": ["graphs", "parity"]}) + "\n"
                   + json.dumps({"id": "k2", "problem": "Seed problem about primes: find x."}) + "\n")
    client = ScriptedSynthClient()
    run_stage("concepts", src, tmp_path / "c.jsonl", client, CFG, progress=False)
    recs = {r["id"]: r for r in read_jsonl(tmp_path / "c.jsonl")}
    assert recs["k1"]["concepts"] == ["graphs", "parity"] and recs["k1"]["provenance"]["concepts"]["source"]
    assert recs["k2"]["status"] == "done" and len(recs["k2"]["concepts"]) == 5
    assert client.calls == 1


SMALL_MODEL_KNOBS = {"concepts": {"few_shot": True}, "problems": {"few_shot": True, "prefill": True},
                     "judge": {"few_shot": True, "prefill": True}, "teacher": {"mode": "chat", "few_shot": True, "prefill": True}}


def with_small_model_knobs(cfg: dict) -> dict:
    out = json.loads(json.dumps(cfg))
    for section, knobs in SMALL_MODEL_KNOBS.items():
        out.setdefault(section, {}).update(knobs)
    return out


def test_few_shot_and_prefill_reach_the_model_and_the_parsers(tmp_path):
    """With every small-model knob on, the requests carry one worked example and the prefilled openings,
    the parsers see opening + continuation (so the same SFT pairs come out as from a model that writes
    the whole reply), and the provenance names the prompt variant."""
    from promptcot_mamba.synth.config import SynthConfig
    from promptcot_mamba.synth.prompts import RATIONALE_BEGIN
    from promptcot_mamba.synth.stages import teacher_request

    seeds = make_seeds(tmp_path / "seeds.jsonl", 12)
    base = dict(CFG, teacher={**CFG["teacher"], "mode": "chat"})
    plain = run_pipeline(base, ScriptedSynthClient(), tmp_path / "plain", seeds_path=seeds, progress=False)
    knobs = run_pipeline(with_small_model_knobs(base), ScriptedSynthClient(), tmp_path / "knobs", seeds_path=seeds,
                         progress=False)
    a, b = check_sft(plain.sft_path), check_sft(knobs.sft_path)
    assert len(a) > 3 and [(r["prompt"], r["response"]) for r in a] == [(r["prompt"], r["response"]) for r in b]
    prov = b[0]["provenance"]
    concepts = read_jsonl(tmp_path / "knobs" / STAGE_FILES["concepts"])[0]
    assert concepts["provenance"]["concepts"]["prompt_version"].endswith("+1shot")
    assert prov["problems"]["prompt_version"].endswith("+1shot+prefill")
    assert prov["solutions"]["prompt_version"].endswith("+1shot+prefill")
    assert not a[0]["provenance"]["problems"]["prompt_version"].endswith("prefill")
    req = teacher_request("What is 1+1?", SynthConfig.from_dict(with_small_model_knobs(base)), 0, 0)
    assert [m["role"] for m in req.messages] == ["user", "assistant", "user"] and req.prefix == "<think>\n"
    assert "\\boxed{14}" in req.messages[1]["content"] and "What is 1+1?" in req.messages[2]["content"]
    recs = list(read_jsonl(tmp_path / "knobs" / STAGE_FILES["problems"]))
    assert recs and all(RATIONALE_BEGIN not in r.get("rationale", "") for r in recs)
