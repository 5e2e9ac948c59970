"""The demo's report: tables in the paper's layout and the plots, from one `results.json`.

Everything here is a pure function of the results dict the pipeline writes, so a report can be
rebuilt from a finished run folder (`write_report(results, out_dir)`) and the tables of two runs can
be compared line by line (the determinism test does that).

- Table 1 (paper: pass@1 / avg@k on seven benchmarks, Transformers beside Mamba models): here one
  row per model and columns for the held-out foundational and composed sets.
- Table 2 (paper: the ablation that removes the PromptCoT curriculum data): here the model trained
  with phase 2 against the same model stopped after phase 1, for both architectures.
- Figure 2 (paper: tokens/s against generation length): here tokens/s and context memory
  (Mamba state vs Transformer KV cache) against generated length, measured in the same run.

Plots are PNG through matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptcot_mamba.common.files import atomic_write_text

# -------------------------------------------------------------------------------------- tables


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _params(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.0f}K"


def accuracy_table(results: dict[str, Any]) -> str:
    """Table 1 layout: model, architecture, parameters, training, then one column per held-out set."""
    rows = results.get("accuracy", [])
    k = results.get("protocol", {}).get("samples_per_problem", "k")
    sets = results.get("protocol", {}).get("sets", {})
    nf = sets.get("foundational", "?")
    nc = sets.get("composed", "?")
    head = (f"| Model | Type | Params | Training | Foundational (n={nf}, avg@{k}) | "
            f"Composed (n={nc}, avg@{k}) |\n|---|---|---|---|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['model']} | {r.get('type', '')} | {_params(r.get('params'))} | {r['training']} | "
                     f"{_pct(r.get('foundational'))} | {_pct(r.get('composed'))} |")
    return "\n".join(lines)


def ablation_table(results: dict[str, Any]) -> str:
    """Table 2 layout: the full curriculum against "− phase 2" (the composed PromptCoT-style data removed)."""
    by = {(r["arch"], r["training"]): r for r in results.get("accuracy", [])}
    k = results.get("protocol", {}).get("samples_per_problem", "k")
    lines = [f"| Model | Foundational (avg@{k}) | Composed (avg@{k}) |", "|---|---:|---:|"]
    for arch in dict.fromkeys(r["arch"] for r in results.get("accuracy", [])):
        full, abl = by.get((arch, "phase 1 + phase 2")), by.get((arch, "phase 1 only"))
        if full is None or abl is None:
            continue
        lines.append(f"| {full['model']} | {_pct(full.get('foundational'))} | {_pct(full.get('composed'))} |")
        lines.append(f"| − phase 2 (composed data) | {_pct(abl.get('foundational'))} | {_pct(abl.get('composed'))} |")
    return "\n".join(lines)


def efficiency_table(results: dict[str, Any]) -> str:
    """Figure 2 as numbers: one row per generated length, tokens/s and context bytes of each model."""
    pts = results.get("efficiency", {}).get("points", [])
    models = list(dict.fromkeys(p["model"] for p in pts))
    lengths = sorted({p["generated"] for p in pts})
    by = {(p["model"], p["generated"]): p for p in pts}
    head = "| Generated tokens | " + " | ".join(f"{m} tokens/s | {m} context KiB" for m in models) + " |"
    sep = "|---:|" + "---:|---:|" * len(models)
    lines = [head, sep]
    for n in lengths:
        cells = []
        for m in models:
            p = by.get((m, n))
            cells += ([f"{p['tokens_per_s']:.0f}", f"{p['context_bytes'] / 1024:.1f}"] if p else ["—", "—"])
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def synthesis_table(results: dict[str, Any]) -> str:
    rows = results.get("synthesis_stages", [])
    lines = ["| stage | in | done | failed | filtered |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['in']} | {r['done']} | {r['failed']} | {r['filtered']} |")
    return "\n".join(lines)


def accuracy_findings(results: dict[str, Any]) -> list[str]:
    """Plain comparisons of the measured accuracies (stated whatever they show)."""
    by = {(r["arch"], r["training"]): r for r in results.get("accuracy", [])}
    archs = list(dict.fromkeys(r["arch"] for r in results.get("accuracy", [])))
    out = []
    for arch in archs:
        full, p1, init = by.get((arch, "phase 1 + phase 2")), by.get((arch, "phase 1 only")), by.get((arch, "untrained"))
        if full and init:
            out.append(f"{arch} after both phases scores {_pct(full.get('foundational'))}% on held-out foundational "
                       f"problems against {_pct(init.get('foundational'))}% untrained.")
        if full and p1:
            d = (full.get("composed") or 0) - (p1.get("composed") or 0)
            out.append(f"{arch}: phase 2 changes composed accuracy from {_pct(p1.get('composed'))}% to "
                       f"{_pct(full.get('composed'))}% ({'+' if d >= 0 else '−'}{abs(100 * d):.1f} points) and "
                       f"foundational from {_pct(p1.get('foundational'))}% to {_pct(full.get('foundational'))}%.")
    if len(archs) >= 2:
        a, b = (by.get((x, "phase 1 + phase 2")) for x in archs[:2])
        if a and b:
            out.append(f"Same data, same steps, about the same size: {archs[0]} {_pct(a.get('foundational'))}% / "
                       f"{_pct(a.get('composed'))}% vs {archs[1]} {_pct(b.get('foundational'))}% / "
                       f"{_pct(b.get('composed'))}% (foundational / composed).")
    return out


def tables_text(results: dict[str, Any]) -> str:
    """The tables that must be identical across two runs with the same seed (no timings)."""
    return "\n\n".join([accuracy_table(results), ablation_table(results)])


# --------------------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(losses: dict[str, list[dict]], path: Path) -> Path:
    """Training loss per step, one line per model, phase boundaries marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    marked: set[int] = set()
    for label, rows in losses.items():
        rows = [r for r in rows if r.get("loss") is not None]
        if not rows:
            continue
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=label, lw=1.2)
        top = max(r["loss"] for r in rows)
        for prev, r in zip(rows, rows[1:]):
            if r["phase"] != prev["phase"] and prev["step"] not in marked:  # one marker per boundary
                marked.add(prev["step"])
                ax.axvline(prev["step"], color="gray", ls=":", lw=1)
                ax.text(prev["step"], top * 0.8, f" phase 2: {r['phase']} →", color="gray", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats / response token)")
    ax.set_title("Loss per phase (phase 1: foundational, phase 2: composed)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy(results: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    rows = results.get("accuracy", [])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.38
    xs = range(len(rows))
    f = [100 * (r.get("foundational") or 0) for r in rows]
    c = [100 * (r.get("composed") or 0) for r in rows]
    ax.bar([x - width / 2 for x in xs], f, width, label="held-out foundational")
    ax.bar([x + width / 2 for x in xs], c, width, label="held-out composed")
    for x, v in zip(xs, f):
        ax.text(x - width / 2, v + 1, f"{v:.0f}", ha="center", fontsize=8)
    for x, v in zip(xs, c):
        ax.text(x + width / 2, v + 1, f"{v:.0f}", ha="center", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{r['arch']}\n{r['training']}" for r in rows], fontsize=8)
    k = results.get("protocol", {}).get("samples_per_problem", "k")
    ax.set_ylabel(f"accuracy, avg@{k} (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Held-out accuracy (Table 1 / Table 2 at toy scale)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_efficiency(points: Sequence[dict], path: Path, *, metric: str) -> Path:
    """metric: "tokens_per_s" (Figure 2) or "context_bytes" (why Figure 2 looks the way it does)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in dict.fromkeys(p["model"] for p in points):
        ps = sorted((p for p in points if p["model"] == m), key=lambda p: p["generated"])
        ys = [p[metric] / (1024 if metric == "context_bytes" else 1) for p in ps]
        ax.plot([p["generated"] for p in ps], ys, marker="o", label=m)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generated tokens per sequence")
    if metric == "tokens_per_s":
        ax.set_ylabel("decode throughput (tokens/s, whole batch)")
        ax.set_title("Throughput against generated length (cf. Figure 2)")
    else:
        ax.set_ylabel("context memory (KiB, whole batch)")
        ax.set_title("Mamba state vs Transformer KV cache")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -------------------------------------------------------------------------------------- report


def write_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write out_dir/report.md and out_dir/plots/*.png from `results`; returns the report path."""
    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    made = {}
    if results.get("losses"):
        made["loss"] = plot_losses(results["losses"], plots / "loss.png")
    if results.get("accuracy"):
        made["accuracy"] = plot_accuracy(results, plots / "accuracy.png")
    pts = results.get("efficiency", {}).get("points", [])
    if pts:
        made["throughput"] = plot_efficiency(pts, plots / "throughput.png", metric="tokens_per_s")
        made["memory"] = plot_efficiency(pts, plots / "memory.png", metric="context_bytes")
    text = render_markdown(results, {k: str(v.relative_to(out)) for k, v in made.items()})
    path = out / "report.md"
    atomic_write_text(path, text)
    return path


def render_markdown(results: dict[str, Any], plots: dict[str, str]) -> str:
    cfg = results.get("config", {})
    proto = results.get("protocol", {})
    data = results.get("data", {})
    eff = results.get("efficiency", {})
    timing = results.get("timing", {})
    L: list[str] = []
    L.append(f"# promptcot-mamba demo — {cfg.get('name', 'default')} run, seed {cfg.get('seed')}")
    L.append("")
    L.append("A laptop-scale reproduction of *Scaling Reasoning without Attention*: a PromptCoT-style "
             "curriculum is synthesized for a built-in arithmetic domain, an attention-free Mamba-2 model "
             "is trained through both phases, evaluated on held-out sets, and compared with a Transformer "
             "of about the same parameter count trained on the same data. Every number below was measured "
             "in this run.")
    L.append("")
    L.append("## Data (PromptCoT at toy scale)")
    L.append("")
    for key, val in data.items():
        L.append(f"- **{key}**: {val}")
    L.append("")
    if results.get("synthesis_stages"):
        L.append("Records through the PromptCoT stages (synth/stages.py; the procedural client plays the LLM):")
        L.append("")
        L.append(synthesis_table(results))
        L.append("")
    L.append("## Table 1 — held-out accuracy")
    L.append("")
    L.append(accuracy_table(results))
    L.append("")
    L.append(f"Protocol: {proto.get('description', '')}")
    L.append("")
    for line in accuracy_findings(results):
        L.append(f"- {line}")
    L.append("")
    L.append("## Table 2 — ablation: phase 2 removed")
    L.append("")
    L.append(ablation_table(results))
    L.append("")
    L.append("“− phase 2” is the phase-1 checkpoint of the same run: trained on foundational "
             "single-concept problems only, without the composed (PromptCoT-synthesized) problems.")
    L.append("")
    if plots.get("accuracy"):
        L.append(f"![accuracy]({plots['accuracy']})")
        L.append("")
    L.append("## Figure 2 — inference efficiency against generated length")
    L.append("")
    if eff:
        L.append(eff.get("description", ""))
        L.append("")
        L.append(efficiency_table(results))
        L.append("")
        for line in eff.get("findings", []):
            L.append(f"- {line}")
        L.append("")
    for key in ("throughput", "memory"):
        if plots.get(key):
            L.append(f"![{key}]({plots[key]})")
    L.append("")
    L.append("## Training")
    L.append("")
    for line in results.get("training", []):
        L.append(f"- {line}")
    L.append("")
    if plots.get("loss"):
        L.append(f"![loss]({plots['loss']})")
        L.append("")
    if timing:
        cpu = results.get("cpu", {})
        L.append("## Wall time")
        L.append("")
        L.append("| stage | wall seconds |\n|---|---:|")
        for k, v in timing.items():
            L.append(f"| {k} | {v:.1f} |")
        L.append("")
        if cpu:
            L.append("CPU seconds per process (on an idle machine with a core per process, a stage's wall time "
                     "is about the larger of the two):")
            L.append("")
            L.append("| part | Mamba-2 process | Transformer process |\n|---|---:|---:|")
            for k, v in cpu.items():
                L.append(f"| {k} | " + " | ".join(f"{x:.0f}" for x in v) + " |")
            L.append("")
        L.append(f"Machine: {cfg.get('cpu_count')} CPUs visible, {cfg.get('workers')} processes × "
                 f"{cfg.get('threads')} torch thread(s). On a shared machine wall time exceeds CPU time.")
        L.append("")
    L.append("## Files")
    L.append("")
    for line in results.get("files", []):
        L.append(f"- {line}")
    L.append("")
    return "\n".join(L)

