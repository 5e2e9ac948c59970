"""`pcm demo --sweep FILE`: choose the demo's sizes by training loss and a validation split only.

A sweep file names a base preset and variants of it (dotted overrides, as `pcm train --set`):

    preset: default
    seed: 0
    validation: {foundational: 100, composed: 100}   # carved from the synthesized training files
    archs: [Mamba-2]                                  # which models to train (Mamba-2, Llama)
    variants:
      - name: base
        archs: [Mamba-2, Llama]                       # a variant may list its own
      - name: state64
        set: {recipe.model.config.state_size: 64}

Each variant synthesizes its curriculum from the run's seed (shared between variants whose data
settings agree), moves the last `validation` records of each SFT file into a validation split (same
generator, same teacher, never trained on), trains every listed architecture with one training seed
and evaluates its phase checkpoints on that split with the preset's protocol. The held-out *test*
sets are drawn only so that training excludes them; the sweep never evaluates on them — the final
`pcm demo` run reads them once (issue 15). The table (final training loss per phase, validation
avg@k, CPU-seconds per step) goes to DIR/sweep.md and DIR/sweep.json; demo/recipes/sweeps/ keeps the
sweep that chose the shipped default.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from promptcot_mamba.common.config import ConfigError, apply_overrides, load_yaml
from promptcot_mamba.common.files import atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from promptcot_mamba.demo.domain import Problem, parse_problem
from promptcot_mamba.demo.settings import DemoSettings, SettingsError


def load_sweep(path: str | Path) -> dict[str, Any]:
    """The sweep file, checked: every variant's preset must validate (errors name the variant)."""
    raw = load_yaml(path)
    known = {"preset", "seed", "validation", "archs", "variants", "description"}
    if unknown := set(raw) - known:
        raise SettingsError(f"{path}: unknown field(s) {sorted(unknown)} (known: {sorted(known)})")
    variants = raw.get("variants")
    if not isinstance(variants, list) or not variants:
        raise SettingsError(f"{path}: `variants` must be a non-empty list")
    base = DemoSettings.load(raw.get("preset", "default")).model_dump(mode="json")
    names = set()
    for i, v in enumerate(variants):
        if not isinstance(v, dict) or not v.get("name"):
            raise SettingsError(f"{path}: variants[{i}] needs a `name`")
        if v["name"] in names:
            raise SettingsError(f"{path}: variants[{i}]: the name {v['name']!r} is used twice")
        names.add(v["name"])
        try:
            v["settings"] = DemoSettings.from_dict(apply_overrides(base, v.get("set") or {}, source=str(path)),
                                                   source=f"{path}: variant {v['name']}")
        except ConfigError as err:
            raise SettingsError(str(err)) from None
    archs = raw.get("archs") or ["Mamba-2"]
    if bad := set(archs) - {"Mamba-2", "Llama"}:
        raise SettingsError(f"{path}: archs {sorted(bad)} unknown (Mamba-2, Llama)")
    val = raw.get("validation") or {"foundational": 100, "composed": 100}
    return {**raw, "archs": archs, "validation": val, "seed": int(raw.get("seed", 0)), "source": str(path)}


def carve_validation(folder: Path, n: dict[str, int]) -> dict[str, tuple[Problem, ...]]:
    """Move the last n[set] records of sft_<set>.jsonl into val_<set>.jsonl and return the
    validation problems (the caller rebuilds the replay file from what stays)."""
    from promptcot_mamba.text.prompts import MATH_SUFFIX

    out = {}
    for name in ("foundational", "composed"):
        path = folder / f"sft_{name}.jsonl"
        rows = read_jsonl(path)
        k = int(n.get(name, 0))
        if k >= len(rows):
            raise SettingsError(f"validation: {k} {name} records asked for, the training file has {len(rows)}")
        keep, val = rows[: len(rows) - k], rows[len(rows) - k:]
        write_jsonl(path, keep)
        write_jsonl(folder / f"val_{name}.jsonl", val)
        out[name] = tuple(parse_problem(r["prompt"].removesuffix(MATH_SUFFIX)) for r in val)
    return out


_OWNED = ("data*", "variants", "sweep.json", "sweep.md")  # what a sweep writes in its folder


def run_sweep(path: str | Path, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    from promptcot_mamba.demo import pipeline as P

    sweep = load_sweep(path)
    out = P._fresh_run_folder(Path(out_dir).resolve(), owned=_OWNED)
    seed, t0 = sweep["seed"], time.perf_counter()
    data_for: dict[str, tuple[P.DemoData, dict, Path, int]] = {}
    jobs, variant_of = [], {}
    with P._process_settings(1):
        for v in sweep["variants"]:
            s: DemoSettings = v["settings"]
            key = json.dumps(s.data.model_dump(mode="json"), sort_keys=True)
            if key not in data_for:
                folder = out / f"data{len(data_for)}"
                P._say(f"synthesizing data set {len(data_for)} for variant {v['name']} …", progress)
                data = P.synthesize_data(s.data, folder / "data", seed=seed, progress=progress)
                val = carve_validation(data.folder, sweep["validation"])
                P.write_replay(data.folder, s.data.replay)  # from what stays for training
                vocab = P.build_tokenizer(data, folder / "tokenizer", s.data.tokenizer_vocab).vocab_size
                data_for[key] = (data, val, folder / "tokenizer", vocab)
            data, val, tok_dir, vocab = data_for[key]
            planned, _ = P.plan_jobs(s, data.folder, tok_dir, vocab, val, out / "variants" / v["name"], seeds=[seed],
                                     archs=tuple(v.get("archs") or sweep["archs"]), untrained=False)
            jobs += planned
            variant_of.update({j.train_dir: v["name"] for j in planned})
        P._say(f"training and validating {len(jobs)} job(s), {min(2, len(jobs))} at a time …", progress)
        results = P._run_jobs(jobs, workers=min(2, len(jobs)), progress=progress)
    by_job = {(variant_of[str(Path(r.run.metrics_path).parent)], r.arch): r for r in results}
    rows = []
    for v in sweep["variants"]:
        for arch in v.get("archs") or sweep["archs"]:
            r = by_job[(v["name"], arch)]
            row = {"variant": v["name"], "set": v.get("set") or {}, "arch": arch,
                   "params": r.rows[0]["params"] if r.rows else None,
                   "final_loss": {p.name: p.final_loss for p in r.run.phases},
                   "cpu_s_per_step": r.cpu_train / max(1, r.steps), "cpu_train": r.cpu_train,
                   "cpu_eval": r.cpu_eval}
            for ev in r.rows:
                for name in ("foundational", "composed"):
                    row[f"{ev['training']}: {name}"] = ev[name]
            rows.append(row)
    res = {"sweep": sweep["source"], "description": sweep.get("description", ""), "seed": seed,
           "validation": sweep["validation"], "rows": rows, "wall_s": time.perf_counter() - t0}
    atomic_write_json(out / "sweep.json", res, indent=1)
    atomic_write_text(out / "sweep.md", sweep_table(res) + "\n")
    return res


def sweep_table(res: dict[str, Any]) -> str:
    lines = ["| variant | overrides | model | final loss (phase 1 / 2) | validation, phase 1 only (found. / comp.) | "
             "validation, phase 1 + 2 (found. / comp.) | CPU-s / step |", "|---|---|---|---|---|---|---:|"]
    for r in res["rows"]:
        losses = " / ".join(f"{x:.3f}" if x is not None else "—" for x in r["final_loss"].values())
        cells = [" / ".join(f"{100 * r.get(f'{t}: {s}', float('nan')):.1f}" for s in ("foundational", "composed"))
                 for t in ("phase 1 only", "phase 1 + phase 2")]
        sets = ", ".join(f"{k}={v}" for k, v in r["set"].items()) or "(preset)"
        lines.append(f"| {r['variant']} | {sets} | {r['arch']} | {losses} | {cells[0]} | {cells[1]} | "
                     f"{r['cpu_s_per_step']:.3f} |")
    return "\n".join(lines)
