"""`pcm smoke` (a tiny model end to end: prefill, decode, tokens/s, state bytes) and `pcm info`."""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("smoke", help="build a random model, prefill and decode; print tokens/s and state bytes")
    p.add_argument("--config", default="tiny", help="a named config (tiny, mamba2-130m, ...)")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_smoke)
    q = sub.add_parser("info", help="describe a checkpoint folder: config, parameters, state bytes per sequence")
    q.add_argument("path")
    q.set_defaults(func=_info)


def _smoke(args) -> int:
    import torch

    from promptcot_mamba.model.lm import Mamba2LM

    torch.manual_seed(args.seed)
    model = Mamba2LM(args.config).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, args.prompt_tokens))
    t0 = time.perf_counter()
    logits, state = model.prefill(ids)
    t1 = time.perf_counter()
    tokens = []
    for _ in range(args.new_tokens):
        nxt = logits.argmax(-1)
        tokens.append(int(nxt))
        logits = model.step(nxt, state)
    t2 = time.perf_counter()
    print(f"model: {args.config}, {model.num_parameters() / 1e6:.2f}M parameters")
    print(f"prefill: {args.prompt_tokens} tokens in {1e3 * (t1 - t0):.1f} ms "
          f"({args.prompt_tokens / (t1 - t0):.0f} tokens/s)")
    print(f"decode: {args.new_tokens} tokens in {1e3 * (t2 - t1):.1f} ms ({args.new_tokens / (t2 - t1):.1f} tokens/s)")
    print(f"state: {state.nbytes:,} bytes per sequence (independent of length)")
    print(f"greedy tokens: {tokens[:16]}{' ...' if len(tokens) > 16 else ''}")
    return 0


def _info(args) -> int:
    from promptcot_mamba.model.checkpoint import read_config, resolve_path
    from promptcot_mamba.model.state import InferenceState

    folder = resolve_path(args.path)
    c = read_config(folder)
    print(f"{folder}")
    for k, v in c.to_hf_dict().items():
        if k not in ("architectures",):
            print(f"  {k}: {v}")
    print(f"  parameters: {c.num_parameters():,}")
    print(f"  state per sequence: {InferenceState.bytes_per_sequence(c):,} bytes")
    return 0
