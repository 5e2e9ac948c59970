"""`pcm train RECIPE [--out DIR] [--max-steps N] [--seed S] [--set key=value ...]`.

Running the same command on the same DIR resumes from the last good checkpoint. Under torchrun
(`torchrun --nproc_per_node 8 -m promptcot_mamba train RECIPE --out DIR`) every process runs it.
"""

from __future__ import annotations

import argparse
import logging
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="run a curriculum recipe (phases of SFT); resumes in --out",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?", help="recipe YAML file, or the name of a shipped recipe (e.g. tiny-cpu)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<recipe name>)")
    p.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps of each phase")
    p.add_argument("--seed", type=int, default=None, help="replace the recipe's seed")
    p.add_argument("--device", default=None, help="override run.device (cpu, cuda, cuda:N)")
    p.add_argument("--micro-batch", type=int, default=None, help="override run.micro_batch")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None, help="override run.precision")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted recipe override, value in YAML (e.g. run.checkpoint_every=100, phases.0.steps=10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    p.set_defaults(func=_handler)


def _handler(args) -> int:
    from promptcot_mamba.common.config import ConfigError, parse_override
    from promptcot_mamba.train.recipe import Recipe, list_recipes
    from promptcot_mamba.train.runner import run_recipe
    from promptcot_mamba.train.sources import DataError
    from promptcot_mamba.train.trainer import TrainingError

    if args.list:
        print("\n".join(list_recipes()))
        return 0
    if not args.recipe:
        print("pcm train: give a recipe file or a shipped recipe name (pcm train --list)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        recipe = Recipe.from_yaml(args.recipe)
        overrides = dict(parse_override(item) for item in args.set)
        for key, value in (("run.device", args.device), ("run.micro_batch", args.micro_batch),
                           ("run.precision", args.precision)):
            if value is not None:
                overrides[key] = value
        if args.no_progress:
            overrides["run.progress"] = False
        if overrides:
            recipe = recipe.with_overrides(overrides)
        out = args.out or f"runs/{recipe.name}"
        result = run_recipe(recipe, out, max_steps=args.max_steps, seed=args.seed,
                            progress=not args.no_progress)
    except (ConfigError, DataError, TrainingError) as err:  # ConfigError includes RecipeError
        print(f"pcm train: {err}", file=sys.stderr)
        return 2
    for p in result.phases:
        print(f"phase {p.name}: {p.steps} steps, final loss {p.final_loss}, export {p.export_dir}")
    print(f"metrics: {result.metrics_path}")
    return 0
