"""`pcm synth …`: thin commands over synth.stages / synth.pipeline.

  pcm synth run CONFIG [--out DIR] [--set K=V]  the whole chain; SFT pairs in DIR/sft.jsonl
  pcm synth STAGE IN OUT [--config CONFIG]      one stage (concepts, concept_stats, combos, problems,
                                                judge, dedup, decontam, solutions, export)
  pcm synth configs                             list the shipped configs

The LLM comes from `--client`: `openai` (default; the config's endpoint or OPENAI_BASE_URL /
OPENAI_API_KEY, `--base-url`/`--model` override), `smollm2` (SmolLM2-135M-Instruct in process),
`hf:PATH` (a transformers model folder in process) or `scripted` (a procedural stand-in, no model).
"""

from __future__ import annotations

import argparse
import json
import sys

from promptcot_mamba.common.config import parse_override
from promptcot_mamba.synth.stages import STAGES


def _config(args):
    """The config named on the command line with its `--set` overrides, then the shortcut flags."""
    from promptcot_mamba.synth.config import SynthConfig

    sets: dict = dict(parse_override(o) for o in args.set)
    if getattr(args, "base_url", None):
        sets["endpoint.base_url"] = args.base_url
    if getattr(args, "model", None):
        sets.update({f"models.{role}": args.model for role in ("extractor", "generator", "teacher")})
        sets["models.judges"] = [args.model]
    if getattr(args, "limit", None):
        sets["seeds.limit"] = args.limit
    if getattr(args, "num_problems", None):
        sets["sampling.num_problems"] = args.num_problems
    if getattr(args, "seed", None) is not None:
        sets["seed"] = args.seed
    if args.config:
        return SynthConfig.from_yaml(args.config, overrides=sets)
    return SynthConfig.from_dict({}, where="defaults", overrides=sets)


def _clients(args, cfg):
    kind = args.client
    if kind == "openai":
        from promptcot_mamba.synth.stages import Clients

        return Clients.from_config(cfg)
    if kind == "scripted":
        from promptcot_mamba.synth.scripted import ScriptedSynthClient

        return ScriptedSynthClient()
    from promptcot_mamba.llm.hf_client import TransformersClient, load_smollm2

    if kind == "smollm2":
        model, tok = load_smollm2()
        return TransformersClient(model, tok, name="SmolLM2-135M-Instruct")
    if kind.startswith("hf:"):
        return TransformersClient(kind[3:])
    raise SystemExit(f"pcm synth: unknown --client {kind!r} (openai | smollm2 | hf:PATH | scripted)")


def _common(p: argparse.ArgumentParser, config_required: bool) -> None:
    if not config_required:
        p.add_argument("--config", help="YAML config (a path or a shipped name: see `pcm synth configs`)")
    p.add_argument("--client", default="openai", help="openai (default) | smollm2 | hf:PATH | scripted")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (default: config, then OPENAI_BASE_URL)")
    p.add_argument("--model", help="model name for every role")
    p.add_argument("--seed", type=int, help="run seed (default: config)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config setting by its dotted path, the value read as YAML; repeatable "
                        "(e.g. --set teacher.k=2 --set models.judges='[a, b]'); the named flags (--seed, "
                        "--model, ...) win over a --set of the same setting")
    p.add_argument("--force", action="store_true", help="redo finished stages made with other settings")
    p.add_argument("--retry-failed", action="store_true", help="re-run records that failed last time")
    p.add_argument("--no-progress", action="store_true")


def register(subparsers) -> None:
    p = subparsers.add_parser("synth", help="PromptCoT data synthesis (concepts → problems → judged → SFT pairs)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="synth_command", metavar="STAGE|run|configs")

    r = sub.add_parser("run", help="run the whole chain")
    r.add_argument("config", help="YAML config (path or shipped name)")
    r.add_argument("--out", default="synth_out", help="output folder (default synth_out)")
    r.add_argument("--seeds", help="seed-problem JSONL (default: the config's)")
    r.add_argument("--limit", type=int, help="use only the first N seed problems")
    r.add_argument("--num-problems", type=int, help="number of concept combinations to sample")
    r.add_argument("--stages", help="comma-separated subset of stages")
    _common(r, config_required=True)
    r.set_defaults(func=_run)

    c = sub.add_parser("configs", help="list the shipped configs")
    c.set_defaults(func=_configs)

    for name in STAGES:
        s = sub.add_parser(name, help=f"run the {name} stage alone")
        s.add_argument("input", help="input JSONL")
        s.add_argument("output", help="output JSONL (its manifest is written beside it)")
        _common(s, config_required=False)
        s.set_defaults(func=_stage, stage=name)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _configs(args) -> int:
    from promptcot_mamba.synth.config import SHIPPED

    for name in SHIPPED.names():
        print(f"{name:<12} {SHIPPED.find(name)}")
    return 0


def _stage(args) -> int:
    from promptcot_mamba.synth.stages import StaleOutputError, run_stage, spec

    try:
        cfg = _config(args)
        clients = _clients(args, cfg) if spec(args.stage).llm else None
        man = run_stage(args.stage, args.input, args.output, clients, cfg, progress=not args.no_progress,
                        force=args.force, retry_failed=args.retry_failed)
    except (StaleOutputError, FileNotFoundError, ValueError) as err:
        print(f"pcm synth {args.stage}: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: man.get(k) for k in ("stage", "records_in", "counts", "seconds")}))
    return 0


def _run(args) -> int:
    from promptcot_mamba.synth.pipeline import run_pipeline
    from promptcot_mamba.synth.stages import StaleOutputError

    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    try:
        cfg = _config(args)
        clients = _clients(args, cfg)
        res = run_pipeline(cfg, clients, args.out, seeds_path=args.seeds, stages=stages,
                           progress=not args.no_progress, force=args.force, retry_failed=args.retry_failed)
    except (StaleOutputError, FileNotFoundError, ValueError) as err:
        print(f"pcm synth run: {err}", file=sys.stderr)
        return 1
    print(res.format_table())
    n = sum(1 for _ in open(res.sft_path)) if res.sft_path.exists() else 0
    print(f"\n{n} SFT pairs → {res.sft_path}")
    return 0
