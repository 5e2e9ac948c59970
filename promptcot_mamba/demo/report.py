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


def _cell(r: dict[str, Any] | None, name: str) -> str:
    """A pooled cell: the mean over seeds and its 95% interval (clamped to 0–100), in percent."""
    if r is None or r.get(name) is None:
        return "—"
    iv = r.get(f"{name}_interval")
    if not iv or not iv.get("seeds"):
        return _pct(r[name])
    lo, hi = max(0.0, iv["lo"]), min(1.0, iv["hi"])
    return f"{100 * r[name]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _seeds_note(results: dict[str, Any]) -> str:
    n = results.get("protocol", {}).get("seeds", 1)
    return f"mean of {n} training seed{'s' if n != 1 else ''} [95% interval]"


def accuracy_table(results: dict[str, Any]) -> str:
    """Table 1 layout: model, architecture, parameters, training, then one column per held-out set;
    each cell the mean over training seeds with its 95% interval (demo/stats.py)."""
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
                     f"{_cell(r, 'foundational')} | {_cell(r, 'composed')} |")
    return "\n".join(lines)


def seeds_table(results: dict[str, Any]) -> str:
    """Each row's per-seed means: how far apart the training seeds landed."""
    rows = results.get("accuracy", [])
    lines = ["| Model | Training | seeds | Foundational per seed | Composed per seed |", "|---|---|---|---|---|"]
    for r in rows:
        per = {name: ", ".join(f"{100 * x:.1f}" for x in r.get(f"{name}_interval", {}).get("seeds", []))
               for name in ("foundational", "composed")}
        lines.append(f"| {r['model']} | {r['training']} | {', '.join(map(str, r.get('seeds', [])))} | "
                     f"{per['foundational']} | {per['composed']} |")
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
        lines.append(f"| {full['model']} | {_cell(full, 'foundational')} | {_cell(full, 'composed')} |")
        lines.append(f"| − phase 2 (composed data) | {_cell(abl, 'foundational')} | {_cell(abl, 'composed')} |")
    return "\n".join(lines)


def comparison_lines(results: dict[str, Any]) -> list[str]:
    """One line per difference the run tests (demo/aggregate.py `comparisons`)."""
    out = []
    for c in results.get("comparisons", []):
        d, lo, hi = (100 * c[k] for k in ("mean", "lo", "hi"))
        lo, hi = max(lo, -100.0), min(hi, 100.0)  # a difference of two accuracies lies in [-100, 100]
        verdict = "significant" if c["significant"] else "not significant"
        out.append(f"{c['comparison']}, {c['set']}: {d:+.1f} points [95%: {lo:+.1f}, {hi:+.1f}] — {verdict}")
    return out


def error_table(results: dict[str, Any]) -> str:
    """Per model, phase and set: wrong samples and the share of them in each class of demo/errors.py."""
    from promptcot_mamba.demo.errors import CLASSES

    head = ("| Model | Training | Set | wrong / samples | " + " | ".join(CLASSES) + " |\n"
            "|---|---|---|---:|" + "---:|" * len(CLASSES))
    lines = [head]
    for e in results.get("errors", []):
        shares = " | ".join(f"{100 * e['shares'][c]:.0f}%" if e["wrong"] else "—" for c in CLASSES)
        lines.append(f"| {e['arch']} | {e['training']} | {e['set']} | {e['wrong']} / {e['samples']} | {shares} |")
    return "\n".join(lines)


def error_examples(results: dict[str, Any]) -> list[str]:
    """One example per class and model (the first found), as report lines."""
    from promptcot_mamba.demo.errors import CLASSES, DESCRIPTIONS

    seen: set[tuple[str, str]] = set()
    out = []
    for e in results.get("errors", []):
        for c in CLASSES:
            ex = e["examples"].get(c)
            if ex and (e["arch"], c) not in seen:
                seen.add((e["arch"], c))
                out.append(f"{e['arch']}, {DESCRIPTIONS[c]}: `{ex['problem']}` — {ex['detail']} "
                           f"({e['training']}, {e['set']})")
    return out


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
    """The tables that must be identical across two runs with the same seeds (no timings)."""
    return "\n\n".join([accuracy_table(results), ablation_table(results), "\n".join(comparison_lines(results)),
                        error_table(results)])


# --------------------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(losses: dict[str, list[dict]], path: Path) -> Path:
    """Training loss per step, one line per model and seed (a model's seeds share a colour), phase
    boundaries marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    marked: set[int] = set()
    colours: dict[str, str] = {}
    for label, rows in losses.items():
        rows = [r for r in rows if r.get("loss") is not None]
        if not rows:
            continue
        model = label.split(" (seed")[0]
        first = model not in colours
        colours.setdefault(model, f"C{len(colours)}")
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=model if first else None,
                lw=1.0, alpha=0.8, color=colours[model])
        top = max(r["loss"] for r in rows)
        for prev, r in zip(rows, rows[1:]):
            if r["phase"] != prev["phase"] and prev["step"] not in marked:  # one marker per boundary
                marked.add(prev["step"])
                ax.axvline(prev["step"], color="gray", ls=":", lw=1)
                ax.text(prev["step"], top * 0.8, f" phase 2: {r['phase']} →", color="gray", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats / response token)")
    ax.set_title("Loss per phase, every training seed (phase 1: foundational, phase 2: composed)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy(results: dict[str, Any], path: Path) -> Path:
    """Bars: the mean over seeds; whiskers: the 95% interval; dots: the seeds."""
    plt = _plt()
    rows = results.get("accuracy", [])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.38
    xs = list(range(len(rows)))
    for off, name, label in ((-width / 2, "foundational", "held-out foundational"),
                             (width / 2, "composed", "held-out composed")):
        means = [100 * (r.get(name) or 0) for r in rows]
        ivs = [r.get(f"{name}_interval") or {} for r in rows]
        err = [[max(0.0, m - 100 * max(0.0, iv.get("lo", m / 100))) for m, iv in zip(means, ivs)],
               [max(0.0, 100 * min(1.0, iv.get("hi", m / 100)) - m) for m, iv in zip(means, ivs)]]
        ax.bar([x + off for x in xs], means, width, label=label, yerr=err, capsize=3,
               error_kw={"lw": 1, "ecolor": "black"})
        for x, iv in zip(xs, ivs):
            seeds = [100 * v for v in iv.get("seeds", [])]
            ax.scatter([x + off] * len(seeds), seeds, s=9, color="black", zorder=3)
        for x, m, up in zip(xs, means, err[1]):
            ax.text(x + off, m + up + 1, f"{m:.0f}", ha="center", fontsize=7)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{r['arch']}\n{r['training']}" for r in rows], fontsize=8)
    k = results.get("protocol", {}).get("samples_per_problem", "k")
    ax.set_ylabel(f"accuracy, avg@{k} (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Held-out accuracy: {_seeds_note(results)}, dots = seeds")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_errors(errors: Sequence[dict], path: Path) -> Path:
    """Stacked bars: per model, phase and set, the share of the wrong samples in each error class."""
    from promptcot_mamba.demo.errors import CLASSES

    plt = _plt()
    rows = [e for e in errors if e["wrong"]]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(4, len(rows)) + 1.2))
    labels = [f"{e['arch']}, {e['training']}, {e['set']} ({e['wrong']} wrong)" for e in rows]
    left = [0.0] * len(rows)
    for i, c in enumerate(CLASSES):
        widths = [100 * e["shares"][c] for e in rows]
        ax.barh(range(len(rows)), widths, left=left, label=c, color=f"C{i}")
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the wrong samples (%)")
    ax.set_title("Why the wrong samples are wrong (every seed)")
    ax.legend(fontsize=7, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.06))
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
    if any(e["wrong"] for e in results.get("errors", [])):
        made["errors"] = plot_errors(results["errors"], plots / "errors.png")
    pts = results.get("efficiency", {}).get("points", [])
    if pts:
        made["throughput"] = plot_efficiency(pts, plots / "throughput.png", metric="tokens_per_s")
        made["memory"] = plot_efficiency(pts, plots / "memory.png", metric="context_bytes")
    text = render_markdown(results, {k: str(v.relative_to(out)) for k, v in made.items()})
    path = out / "report.md"
    atomic_write_text(path, text)
    return path


def render_markdown(results: dict[str, Any], plots: dict[str, str]) -> str:
    from promptcot_mamba.demo.errors import CLASSES, DESCRIPTIONS

    cfg = results.get("config", {})
    proto = results.get("protocol", {})
    data = results.get("data", {})
    eff = results.get("efficiency", {})
    timing = results.get("timing", {})
    L: list[str] = []
    seeds = cfg.get("training_seeds", [cfg.get("seed")])
    L.append(f"# promptcot-mamba demo — {cfg.get('name', 'default')} run, seed {cfg.get('seed')}, "
             f"training seeds {', '.join(map(str, seeds))}")
    L.append("")
    L.append("A laptop-scale reproduction of *Scaling Reasoning without Attention*: a PromptCoT-style "
             "curriculum is synthesized for a built-in arithmetic domain, an attention-free Mamba-2 model "
             "is trained through both phases, evaluated on held-out sets, and compared with a Transformer "
             "of about the same parameter count trained on the same data. Every number below was measured "
             "in this run.")
    L.append("")
    if cfg.get("chosen_by"):
        L.append(f"How this preset's sizes were chosen: {cfg['chosen_by']}")
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
    L.append("The interval is mean ± √(h_seed² + h_prob²): a Student-t half-width over the per-seed means "
             "(df = seeds − 1) and a normal half-width over the per-problem means; it says where a rerun with "
             "other seeds, on another machine, or on another draw of the held-out problems should land. "
             "With one seed it covers the problems only. Per seed:")
    L.append("")
    L.append(seeds_table(results))
    L.append("")
    for line in accuracy_findings(results):
        L.append(f"- {line}")
    L.append("")
    if results.get("comparisons"):
        L.append("### Which differences are significant")
        L.append("")
        L.append("The difference of two cells, paired by problem and by seed index, with the same 95% interval; "
                 "significant when the interval excludes zero.")
        L.append("")
        for line in comparison_lines(results):
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
    if results.get("errors"):
        L.append("## Error analysis — why the wrong samples are wrong")
        L.append("")
        L.append("Every wrong sample of every seed is read step by step against the true worked solution "
                 "(demo/errors.py) and put in the first class that fits. The operand class is the one this "
                 "size can teach: recall of a number across the model's own reasoning trace.")
        L.append("")
        L.append(error_table(results))
        L.append("")
        L.append("Classes: " + "; ".join(f"**{c}**: {DESCRIPTIONS[c]}" for c in CLASSES) + ".")
        L.append("")
        if plots.get("errors"):
            L.append(f"![errors]({plots['errors']})")
            L.append("")
        L.append("One example per class and model:")
        L.append("")
        for line in error_examples(results):
            L.append(f"- {line}")
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
            L.append("CPU seconds of each (architecture, seed) process, one per seed:")
            L.append("")
            L.append("| model | training | evaluation | training per optimizer step |\n|---|---|---|---|")
            for arch, parts in cpu.items():
                L.append(f"| {arch} | " + " | ".join(", ".join(f"{x:.3g}" for x in parts.get(k, []))
                                                     for k in ("training", "evaluation", "training per step")) + " |")
            L.append("")
        L.append(f"Machine: {cfg.get('cpu_count')} CPUs visible, {cfg.get('workers')} processes × "
                 f"{cfg.get('threads')} torch thread(s) at a time. On a shared machine wall time exceeds CPU time.")
        L.append("")
    L.append("## Files")
    L.append("")
    for line in results.get("files", []):
        L.append(f"- {line}")
    L.append("")
    return "\n".join(L)

