"""`pcm demo [--quick] [--out DIR] [--seed N] [--seeds N] [--preset NAME|FILE]`: the laptop-scale paper run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the whole paper at laptop scale: synthesize, train Mamba-2 and a Transformer, evaluate, report",
        description="Synthesize a PromptCoT curriculum for a built-in arithmetic domain, train an attention-free "
                    "Mamba-2 model through both phases and a same-size Llama on the same data, evaluate both on "
                    "held-out sets (avg@k), measure decode throughput and memory against length, and write "
                    "DIR/report.md with the tables and plots. CPU only, no network.")
    p.add_argument("--quick", action="store_true", help="smoke-sized run (about a minute): every stage, tiny models")
    p.add_argument("--preset", default=None,
                   help="a shipped preset (default, quick) or a YAML file; overrides --quick")
    p.add_argument("--out", default=None, help="run folder (default: runs/demo or runs/demo-quick)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the run: its data, and the first training seed (default: the preset's)")
    p.add_argument("--seeds", type=int, default=None,
                   help="training seeds per architecture, seed, seed+1, ... (default: the preset's run.seeds)")
    p.add_argument("--sweep", default=None, metavar="FILE",
                   help="instead of the run: train the variants of a sweep file and score them on a validation "
                        "split carved from the training data (demo/sweep.py); writes DIR/sweep.md")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from promptcot_mamba.demo.pipeline import DemoError, run_demo
    from promptcot_mamba.demo.report import (
        ablation_table,
        accuracy_table,
        comparison_lines,
        efficiency_table,
        error_table,
    )
    from promptcot_mamba.demo.settings import SettingsError

    preset = args.preset or ("quick" if args.quick else "default")
    out = Path(args.out) if args.out else Path("runs") / ("demo-quick" if preset == "quick" else "demo")
    if args.seed is not None and args.seed < 0:
        print("pcm demo: --seed must be >= 0", file=sys.stderr)
        return 2
    if args.sweep:
        from promptcot_mamba.demo.sweep import run_sweep, sweep_table

        try:
            res = run_sweep(args.sweep, Path(args.out) if args.out else Path("runs") / "demo-sweep",
                            progress=not args.no_progress)
        except (SettingsError, DemoError) as err:
            print(f"pcm demo: {err}", file=sys.stderr)
            return 2
        print(sweep_table(res))
        return 0
    try:
        results = run_demo(preset, out, seed=args.seed, seeds=args.seeds, progress=not args.no_progress)
    except (SettingsError, DemoError) as err:
        print(f"pcm demo: {err}", file=sys.stderr)
        return 2
    print()
    print("Table 1 — held-out accuracy")
    print(accuracy_table(results))
    print()
    print("Table 2 — ablation (phase 2 removed)")
    print(ablation_table(results))
    print()
    print("Which differences are significant (95% interval of the paired difference excludes 0)")
    for line in comparison_lines(results):
        print(f"  - {line}")
    print()
    print("Error analysis — share of the wrong samples in each class")
    print(error_table(results))
    print()
    print("Figure 2 — decode throughput and context memory against generated length")
    print(efficiency_table(results))
    for line in results["efficiency"].get("findings", []):
        print(f"  - {line}")
    print()
    print(f"report: {results['report']}  (plots in {Path(results['report']).parent / 'plots'}; "
          f"total {results['timing']['total']:.0f} s)")
    return 0
