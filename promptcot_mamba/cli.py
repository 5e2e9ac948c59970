"""`pcm`: thin commands over the library.

Each package that offers commands has a `cli.py` with `register(subparsers)`; this file only
collects them, so a missing optional extra breaks its own command with a clear message, not `pcm`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, what it provides). A module that is not there yet is skipped silently; one that fails
# to import because an optional dependency is missing registers nothing and says which extra to add.
_COMMAND_MODULES = [
    "promptcot_mamba.model.cli",  # pcm smoke, pcm info
    "promptcot_mamba.generate.cli",  # pcm generate, pcm chat
    "promptcot_mamba.serve.cli",  # pcm serve
    "promptcot_mamba.eval.cli",  # pcm eval ...
    "promptcot_mamba.train.cli",  # pcm train
    "promptcot_mamba.synth.cli",  # pcm synth ...
    "promptcot_mamba.bench.cli",  # pcm bench ...
    "promptcot_mamba.demo.cli",  # pcm demo
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcm", description="promptcot-mamba: attention-free reasoning models (PromptCoT-Mamba)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and (name == err.name or name.startswith(err.name + ".")):
                continue  # that part of the toolkit is not built yet
            missing = err.name
            print(f"pcm: commands of {name} unavailable: missing '{missing}' "
                  f"(pip install 'promptcot-mamba[all]')", file=sys.stderr)
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
