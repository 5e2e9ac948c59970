"""End-to-end: `pcm demo --quick` writes a well-formed report; the same seed gives the same tables."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("transformers")
pytest.importorskip("matplotlib")


@pytest.mark.slow
def test_pcm_demo_quick_writes_report_and_plots(tmp_path, capsys):
    from promptcot_mamba.cli import main

    out = tmp_path / "run"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "Table 2" in printed and "report:" in printed

    report = (out / "report.md").read_text()
    for name in ("loss", "accuracy", "throughput", "memory", "errors"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
        assert f"plots/{name}.png" in report
    res = json.loads((out / "results.json").read_text())

    # Table 1 rows: untrained Mamba-2, and both phases of both models, every accuracy a number in [0, 1]
    rows = {(r["arch"], r["training"]) for r in res["accuracy"]}
    assert rows == {("Mamba-2", "untrained"), ("Mamba-2", "phase 1 only"), ("Mamba-2", "phase 1 + phase 2"),
                    ("Llama", "phase 1 only"), ("Llama", "phase 1 + phase 2")}
    # the quick preset's seeds (fewer than the default's three, and the report says how many)
    seeds = res["config"]["training_seeds"]
    assert len(seeds) == res["protocol"]["seeds"] >= 2 and f"training seeds {', '.join(map(str, seeds))}" in report
    for r in res["accuracy"]:
        n = len(r["seeds"])
        assert r["seeds"] == (seeds[:1] if r["training"] == "untrained" else seeds)  # the reference: one seed
        for s in ("foundational", "composed"):
            assert isinstance(r[s], float) and 0.0 <= r[s] <= 1.0
            d, iv = r[f"{s}_detail"], r[f"{s}_interval"]
            assert d["n_samples"] == d["n_problems"] * res["protocol"]["samples_per_problem"] * n
            # the interval: around the mean of the per-seed means, one per seed
            assert len(iv["seeds"]) == n and iv["lo"] <= r[s] <= iv["hi"]
            assert r[s] == pytest.approx(sum(iv["seeds"]) / n)
            assert len(r[f"{s}_per_problem"]) == n
        assert r["params"] > 0
    # the significance lines: phase 2 vs phase 1 per architecture and Mamba-2 vs Llama, on both sets
    comps = {(c["comparison"], c["set"]) for c in res["comparisons"]}
    assert len(comps) == 8 and all(isinstance(c["significant"], bool) for c in res["comparisons"])
    assert "### Which differences are significant" in report and "significant" in printed
    # the error analysis: every wrong sample of every seed classified, shown per model, phase and set
    for e in res["errors"]:
        assert sum(e["counts"].values()) == e["wrong"] <= e["samples"]
    assert "## Error analysis" in report and "Error analysis" in printed
    mamba_p = next(r["params"] for r in res["accuracy"] if r["arch"] == "Mamba-2")
    llama_p = next(r["params"] for r in res["accuracy"] if r["arch"] == "Llama")
    assert abs(mamba_p - llama_p) / mamba_p < 0.1  # "a Transformer of the same parameter count"

    # per-sample rows were kept
    rows_file = out / "eval" / f"mamba2-seed{seeds[0]}-phase2-composed.jsonl"
    first = json.loads(rows_file.read_text().splitlines()[0])
    assert {"problem", "gold", "completion", "verdict"} <= set(first)

    # Figure 2: Mamba-2 memory flat, Transformer KV cache growing, measured in this run
    pts = res["efficiency"]["points"]
    m = sorted((p for p in pts if p["model"] == "Mamba-2"), key=lambda p: p["generated"])
    t = sorted((p for p in pts if p["model"] == "Llama"), key=lambda p: p["generated"])
    assert len(m) == len(t) >= 3
    assert len({p["context_bytes"] for p in m}) == 1
    assert all(b["context_bytes"] > a["context_bytes"] for a, b in zip(t, t[1:]))
    assert all(math.isfinite(p["tokens_per_s"]) and p["tokens_per_s"] > 0 for p in pts)

    # checkpoints in Hugging Face format, one per phase and model
    for model in ("mamba2", "transformer"):
        for phase in ("01-foundational", "02-composed"):
            hf = out / "train" / model / f"seed{seeds[0]}" / "phases" / phase / "hf"
            assert (hf / "config.json").exists() and (hf / "tokenizer.json").exists()
    # SFT records in the layout of docs/formats.md, "SFT records"
    rec = json.loads((out / "data" / "sft_composed.jsonl").read_text().splitlines()[0])
    assert rec["response"].startswith("<think>\n") and "\\boxed{" in rec["response"] and rec["id"]
    # decontamination against the paper's benchmarks ran (the suite sets PCM_BENCHMARK_DIR) and kept
    # the demo's short arithmetic statements
    from promptcot_mamba.eval.benchmarks import default_benchmark_dir

    bench_dir = default_benchmark_dir()
    if bench_dir is not None and bench_dir.is_dir():
        assert res["data"]["decontamination vs paper benchmarks"] == "ran"
        dec = next(out.rglob("p2_07_decontam.jsonl"))
        recs = [json.loads(line) for line in dec.read_text().splitlines()]
        assert recs and all(r["status"] == "done" for r in recs)


def _tiny_settings():
    from promptcot_mamba.demo.settings import DemoSettings

    raw = DemoSettings.load("quick").model_dump(mode="json")
    raw["name"] = "tiny"
    raw["data"].update(train_foundational=60, composed=60, seeds=12, combos=4, test_foundational=4,
                       test_composed=4)
    raw["eval"].update(samples=2, max_new_tokens=24)
    raw["efficiency"].update(lengths=[4, 8], batch=1)
    raw["run"] = {"threads": 1, "workers": 1}
    for ph in raw["recipe"]["phases"]:
        ph["steps"] = 4
        ph["global_batch"] = 8
    raw["recipe"]["run"]["micro_batch"] = 8
    return DemoSettings.from_dict(raw, source="tiny")


@pytest.mark.slow
def test_same_seeds_same_tables_and_seeds_differ(tmp_path):
    import torch
    from safetensors.torch import load_file

    from promptcot_mamba.demo.pipeline import run_demo
    from promptcot_mamba.demo.report import tables_text

    s = _tiny_settings()
    # two runs of the same code on the same machine, one thread each: bit equality is the point here
    # (another CPU may round differently and so gives its own, equally reproducible, tables)
    a = run_demo(s, tmp_path / "a", seed=3, seeds=2, progress=False)
    b = run_demo(s, tmp_path / "b", seed=3, seeds=2, progress=False)
    assert a["config"]["training_seeds"] == [3, 4]
    assert tables_text(a) == tables_text(b)
    # the per-sample completions and verdicts are identical too, not just the rounded accuracies
    def rows(run, f):
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("time_s")}
                for line in (tmp_path / run / "eval" / f).read_text().splitlines()]

    for f in ("mamba2-seed3-phase2-foundational.jsonl", "transformer-seed4-phase2-composed.jsonl"):
        ra = rows("a", f)
        assert ra == rows("b", f) and len(ra) == 4 * 2
        assert all("completion" in r and r["verdict"] for r in ra)
    for key in ("Mamba-2 (seed 3)", "Llama (seed 4)"):
        la = [r["loss"] for r in a["losses"][key]]
        assert la and la == [r["loss"] for r in b["losses"][key]]

    # the two training seeds really differ: another initialisation and another data order
    def untrained(seed):  # the untrained model's weights are the initialisation
        from promptcot_mamba.train.models import build_model, load_tokenizer
        from promptcot_mamba.train.recipe import ModelSpec

        torch.manual_seed(seed)
        tok = load_tokenizer(str(tmp_path / "a" / "tokenizer"))
        return build_model(ModelSpec.from_dict(s.recipe["model"], "init", tmp_path), tok).state_dict()

    w3, w4 = untrained(3), untrained(4)
    assert any(not torch.equal(w3[k], w4[k]) for k in w3)
    info = {seed: json.loads((tmp_path / "a" / "train" / "mamba2" / f"seed{seed}" / "run.json").read_text())
            for seed in (3, 4)}
    assert info[3]["recipe"]["seed"] == 3 and info[4]["recipe"]["seed"] == 4  # the trainer's data order seed
    from promptcot_mamba.train.batches import BatchStream

    examples = list(range(50))  # the stream only permutes indices: the order is a function of the seed
    first = [BatchStream(examples, max_length=8, global_batch=8, seed=seed).global_batch_rows(0)
             for seed in (3, 4)]
    assert first[0] != first[1]
    ph = "phases/01-foundational/hf/model.safetensors"
    t3 = load_file(tmp_path / "a" / "train" / "mamba2" / "seed3" / ph)
    t4 = load_file(tmp_path / "a" / "train" / "mamba2" / "seed4" / ph)
    assert any(not torch.equal(t3[k], t4[k]) for k in t3)
    assert a["losses"]["Mamba-2 (seed 3)"][0]["loss"] != a["losses"]["Mamba-2 (seed 4)"][0]["loss"]


@pytest.mark.slow
def test_sweep_scores_variants_on_a_validation_split_never_the_test_sets(tmp_path):
    import yaml

    from promptcot_mamba.demo.sweep import run_sweep

    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(_tiny_settings().model_dump(mode="json")))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "preset": str(preset), "seed": 1, "validation": {"foundational": 5, "composed": 5}, "archs": ["Mamba-2"],
        "variants": [{"name": "base"}, {"name": "state8", "set": {"recipe.model.config.state_size": 8}}]}))
    res = run_sweep(sweep, tmp_path / "out", progress=False)
    assert [r["variant"] for r in res["rows"]] == ["base", "state8"]
    for r in res["rows"]:
        assert set(r["final_loss"]) == {"foundational", "composed"} and r["cpu_s_per_step"] > 0
        assert 0 <= r["phase 1 + phase 2: composed"] <= 1
    data = tmp_path / "out" / "data0" / "data"
    assert not (tmp_path / "out" / "data1").exists()  # one data set: the variants share their data settings
    val = {json.loads(line)["prompt"] for f in ("val_foundational.jsonl", "val_composed.jsonl")
           for line in (data / f).read_text().splitlines()}
    train = {json.loads(line)["prompt"] for f in ("sft_foundational.jsonl", "sft_composed.jsonl", "sft_replay.jsonl")
             for line in (data / f).read_text().splitlines()}
    assert len(val) == 10 and not val & train
    tests = {json.loads(line)["problem"] for f in ("test_foundational.jsonl", "test_composed.jsonl")
             for line in (data / f).read_text().splitlines()}
    scored = {json.loads(line)["problem"] for f in (tmp_path / "out" / "variants").rglob("eval/*.jsonl")
              for line in f.read_text().splitlines()}
    assert scored and not scored & tests  # the held-out test sets are never evaluated by a sweep
    assert "| state8 |" in (tmp_path / "out" / "sweep.md").read_text()
