"""The demo's per-seed results pooled into Table 1's cells, the significance lines and the error analysis.

Everything here is a pure function of the rows the evaluation jobs return (demo/pipeline.py), so it
is tested on hand-made rows and a report can be rebuilt from results.json.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from promptcot_mamba.demo.errors import CLASSES
from promptcot_mamba.demo.stats import paired_difference, seed_problem_interval

PHASE1, PHASE2 = "phase 1 only", "phase 1 + phase 2"


def pool_rows(seed_rows: list[tuple[str, int, dict[str, Any]]], sets: list[str], *,
              order: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One Table 1 row per (training, architecture), in `order`, from (arch, seed, row) triples: each
    set's mean over seeds with its interval, the per-seed means, the seeds × problems matrix behind
    them, and the wrong samples' classes summed over seeds."""
    by: dict[tuple[str, str], list[tuple[int, dict]]] = defaultdict(list)
    for arch, seed, row in seed_rows:
        by[(row["training"], arch)].append((seed, row))
    pooled = []
    for key in [k for k in order if k in by] + [k for k in by if k not in order]:
        items = sorted(by[key], key=lambda t: t[0])
        first = items[0][1]
        row = {"model": first["model"], "arch": first["arch"], "type": first.get("type", ""),
               "training": first["training"], "params": first.get("params"), "seeds": [s for s, _ in items]}
        for name in sets:
            details = [r[f"{name}_detail"] for _, r in items]
            matrix = [d["per_problem"] for d in details]
            iv = seed_problem_interval(matrix)
            verdicts: dict[str, int] = defaultdict(int)
            for d in details:
                for v, n in d.get("verdicts", {}).items():
                    verdicts[v] += n
            row[name] = iv.mean
            row[f"{name}_interval"] = iv.to_dict()
            row[f"{name}_per_problem"] = matrix
            row[f"{name}_detail"] = {
                "n_problems": details[0]["n_problems"], "n_samples": sum(d["n_samples"] for d in details),
                "verdicts": dict(verdicts), "seeds": len(items),
                "truncation_rate": sum(d.get("truncation_rate") or 0 for d in details) / len(details),
                "mean_tokens": _mean_or_none([d.get("mean_tokens") for d in details])}
            counts = {c: sum(d["errors"]["counts"].get(c, 0) for d in details) for c in CLASSES}
            examples: dict[str, dict] = {}
            for d in details:
                for c, ex in d["errors"]["examples"].items():
                    examples.setdefault(c, ex)
            row[f"{name}_errors"] = {"wrong": sum(d["errors"]["wrong"] for d in details), "counts": counts,
                                     "examples": examples}
        pooled.append(row)
    return pooled


def comparisons(rows: list[dict[str, Any]], sets: list[str], *, archs: tuple[str, str]) -> list[dict[str, Any]]:
    """The differences the report calls significant or not: phase 2 against phase 1 for each
    architecture, and archs[0] against archs[1] after each phase, on every set (paired by seed
    index and problem, demo/stats.py)."""
    by = {(r["arch"], r["training"]): r for r in rows}
    pairs = [((a, PHASE2), (a, PHASE1), f"{a}: phase 1 + 2 − phase 1") for a in archs]
    pairs += [((archs[0], t), (archs[1], t), f"{t}: {archs[0]} − {archs[1]}") for t in (PHASE1, PHASE2)]
    out = []
    for ka, kb, label in pairs:
        if ka not in by or kb not in by:
            continue
        for name in sets:
            a, b = by[ka][f"{name}_per_problem"], by[kb][f"{name}_per_problem"]
            if len(a) != len(b):
                continue  # seeds differ in number: no pairing (never in one run)
            d = paired_difference(a, b)
            out.append({"comparison": label, "set": name, **d.to_dict(), "significant": d.excludes_zero()})
    return out


def error_analysis(rows: list[dict[str, Any]], sets: list[str]) -> list[dict[str, Any]]:
    """Per trained row and set: how many samples were wrong and what share of them fell in each class
    (the untrained reference never reaches an answer: nothing to learn from its errors)."""
    out = []
    for r in (r for r in rows if r["training"] != "untrained"):
        for name in sets:
            e = r[f"{name}_errors"]
            wrong = e["wrong"]
            out.append({"arch": r["arch"], "training": r["training"], "set": name, "wrong": wrong,
                        "samples": r[f"{name}_detail"]["n_samples"],
                        "shares": {c: (e["counts"][c] / wrong if wrong else 0.0) for c in CLASSES},
                        "counts": e["counts"], "examples": e["examples"]})
    return out


def _mean_or_none(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None
