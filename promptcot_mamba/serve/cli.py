"""`pcm serve --model PATH [--host 127.0.0.1] [--port 8000] [--memory-budget GB]`."""

from __future__ import annotations

import argparse
import sys

from promptcot_mamba.generate.cli import add_engine_args, build_engine


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over the OpenAI API (completions, chat, streaming)")
    add_engine_args(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None, help="the model id clients send (default: folder name)")
    p.add_argument("--reasoning", action="store_true",
                   help="split <think>…</think> into reasoning_content in chat answers")
    p.add_argument("--default-max-tokens", type=int, default=4096, help="chat max_tokens when the client sends none")
    p.add_argument("--shutdown-grace", type=float, default=10.0, help="seconds in-flight requests get at shutdown")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from pathlib import Path

    try:
        import uvicorn

        from promptcot_mamba.serve.app import create_app
    except ModuleNotFoundError as err:
        print(f"pcm serve: missing '{err.name}'; install the extra: pip install 'promptcot-mamba[serve]'",
              file=sys.stderr)
        return 2
    try:
        engine = build_engine(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"pcm serve: {err}", file=sys.stderr)
        return 2
    name = args.served_model_name or Path(args.model).resolve().name
    cap = engine.capacity
    print(f"pcm serve: {name}: {engine.max_slots} concurrent sequences "
          f"({cap['state_bytes_per_sequence']:,} state bytes each, {cap['bytes_per_sequence']:,} with sampler "
          f"and activations; weights {cap['weight_bytes'] / 1e9:.3f} GB"
          + (f"; budget {args.memory_budget} GB" if args.memory_budget else "") + ")", file=sys.stderr)
    app = create_app(engine, model_name=name, reasoning=args.reasoning, default_max_tokens=args.default_max_tokens,
                     shutdown_grace_s=args.shutdown_grace)
    import signal

    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the handler that
    # was installed before it; a no-op handler there turns a clean shutdown into exit code 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info",
                timeout_graceful_shutdown=int(args.shutdown_grace) + 1)
    print("pcm serve: stopped", file=sys.stderr)
    return 0
