"""`pcm generate` (one prompt, streamed to the terminal) and `pcm chat` (interactive)."""

from __future__ import annotations

import argparse
import sys


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=-1)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")


def register(sub: argparse._SubParsersAction) -> None:
    from promptcot_mamba.serve.cli import add_engine_args

    g = sub.add_parser("generate", help="generate from one prompt, streaming to the terminal")
    add_engine_args(g)
    _sampling_args(g)
    g.add_argument("prompt", help="the prompt text ('-' reads stdin)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt as one user turn of the chat template")
    g.add_argument("--paper-prompt", action="store_true",
                   help="the paper's math prompt: ChatML user turn + step-by-step suffix + '<think>\\n'")
    g.set_defaults(func=_generate)
    c = sub.add_parser("chat", help="chat with a model in the terminal (empty line or Ctrl-D quits)")
    add_engine_args(c)
    _sampling_args(c)
    c.add_argument("--system", default=None, help="a system message")
    c.set_defaults(func=_chat)


def _params(args):
    from promptcot_mamba.generate.sampling import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                          seed=args.seed, stop=tuple(args.stop))


def _load(args):
    from promptcot_mamba.serve.cli import build_engine

    return build_engine(args)


def _stream(engine, prompt_ids, params, out=sys.stdout) -> str:
    text = ""
    for o in engine.stream(prompt_ids, params):
        out.write(o.text)
        out.flush()
        text += o.text
        if o.finished:
            out.write("\n")
            if o.finish_reason == "length":
                print(f"[stopped at max_tokens={params.max_tokens}]", file=sys.stderr)
    return text


def _generate(args) -> int:
    from promptcot_mamba.generate.engine import EngineError
    from promptcot_mamba.text.prompts import paper_prompt

    try:
        engine = _load(args)
        params = _params(args)
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        if args.paper_prompt:
            prompt = paper_prompt(prompt)
        elif args.chat:
            prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
        _stream(engine, engine.tokenizer.encode(prompt), params)
    except (FileNotFoundError, ValueError, EngineError) as err:
        print(f"pcm generate: {err}", file=sys.stderr)
        return 2
    return 0


def _chat(args) -> int:
    from promptcot_mamba.generate.engine import EngineError

    try:
        engine = _load(args)
        params = _params(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"pcm chat: {err}", file=sys.stderr)
        return 2
    messages = [{"role": "system", "content": args.system}] if args.system else []
    while True:
        try:
            line = input(">>> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line.strip():
            return 0
        messages.append({"role": "user", "content": line})
        prompt = engine.tokenizer.apply_chat_template(messages)
        try:
            answer = _stream(engine, engine.tokenizer.encode(prompt), params)
        except EngineError as err:
            print(f"pcm chat: {err}", file=sys.stderr)
            messages.pop()
            continue
        except KeyboardInterrupt:
            print("\n[interrupted]")
            answer = ""
        messages.append({"role": "assistant", "content": answer})
