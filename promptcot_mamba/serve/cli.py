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
    p.add_argument("--shutdown-grace", type=float, default=10.0,
                   help="seconds in-flight requests get at shutdown (SIGTERM/SIGINT; a second one exits at once)")
    p.set_defaults(func=_serve)


def kernels_line(engine) -> str:
    """Where the model runs and which implementation each hot path takes ("auto" resolved)."""
    import torch

    from promptcot_mamba.model.matvec import onednn_available
    from promptcot_mamba.ssd.dispatch import select_backend

    model = engine.model
    k = model.kernels
    ssd = k.ssd if k.ssd != "auto" else "auto→" + select_backend("auto", torch.empty(0, device=model.device)).name
    matvec = k.matvec
    quantized = getattr(model, "quantization", None)
    if quantized:  # every projection of the step is an Int8Linear: the matvec choice applies to none
        matvec = f"{quantized} (aten._weight_int8pack_mm)"
    elif matvec == "auto":
        cpu_fp32 = model.device.type == "cpu" and model.dtype == torch.float32
        matvec = "auto→" + ("onednn" if cpu_fp32 and onednn_available() else "aten")
    threads = f", torch threads {torch.get_num_threads()}" if model.device.type == "cpu" else ""
    weights = f", weights {quantized} (in_proj, out_proj, lm_head)" if quantized else ""
    return (f"device {model.device} {str(model.dtype).removeprefix('torch.')}{weights}{threads}; kernels ssd={ssd} "
            f"matvec={matvec} step={k.step} decode={k.decode}")


def _serve(args) -> int:
    from pathlib import Path

    try:
        import uvicorn

        from promptcot_mamba.serve.app import Server, create_app
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
    print(f"pcm serve: {kernels_line(engine)}", file=sys.stderr)
    app = create_app(engine, model_name=name, reasoning=args.reasoning, default_max_tokens=args.default_max_tokens,
                     shutdown_grace_s=args.shutdown_grace)
    # uvicorn's logging, and the server's own lines (drain, aborted uploads) through the same handler
    log_config = {**uvicorn.config.LOGGING_CONFIG}
    log_config["loggers"] = {**log_config["loggers"],
                             "promptcot_mamba": {"handlers": ["default"], "level": "INFO", "propagate": False}}
    # the drain (Server.shutdown) answers every request before uvicorn closes: its own wait is a short tail
    server = Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info", log_config=log_config,
                                   timeout_graceful_shutdown=2))
    server.run()
    forced = app.state.server.forced
    print("pcm serve: stopped" + (" (forced by a second signal)" if forced else ""), file=sys.stderr)
    return 1 if forced else 0
