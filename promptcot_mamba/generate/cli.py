"""`pcm generate` (one prompt, streamed to the terminal) and `pcm chat` (interactive), and the engine
options they share with `pcm serve` (`add_engine_args`, `build_engine`)."""

from __future__ import annotations

import argparse
import sys


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Engine options shared by `pcm serve`, `pcm generate` and `pcm chat`."""
    p.add_argument("--model", required=True, help="a model folder as written by save_pretrained (with tokenizer.json)")
    p.add_argument("--memory-budget", type=float, default=None, metavar="GB",
                   help="memory for weights + prefix cache + all sequences; sets how many run at once "
                        "(weights alone above it: refused before loading)")
    p.add_argument("--max-slots", type=int, default=None,
                   help="upper bound on concurrent sequences (default 64; with --memory-budget: what fits)")
    p.add_argument("--max-queue", type=int, default=256, help="waiting requests beyond this get HTTP 429")
    p.add_argument("--max-prompt-tokens", type=int, default=131072)
    p.add_argument("--max-new-tokens", type=int, default=131072)
    p.add_argument("--prefix-cache-gb", type=float, default=0.25)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="the weights' dtype: auto (default: as stored in the checkpoint), or converted "
                        "while loading")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--kernels", default="", metavar="KEY=VALUE,...",
                   help="implementations of the hot paths (model/kernels.py): ssd=auto|torch|triton|fla, "
                        "matvec=auto|onednn|aten, step=eager|fused, decode=direct|bucketed (CUDA graphs per "
                        "batch-size bucket on a GPU); e.g. --kernels step=fused,decode=bucketed")
    p.add_argument("--quantize", default="none", choices=["none", "int8"],
                   help="weight-only quantization while loading (model/quantize.py): int8 stores in_proj, "
                        "out_proj and the LM head as int8 with per-channel scales (half a bf16 step's "
                        "reads); norms, A, D, dt, conv and embeddings stay in --dtype. Not with step=fused")


def build_engine(args):
    """The engine `add_engine_args`' options describe. For the pcm commands only: `--threads` sets
    torch's thread count for the whole process, which is the command's to decide."""
    import torch

    from promptcot_mamba.generate.engine import Engine, EngineConfig
    from promptcot_mamba.model.kernels import Kernels

    if args.threads:
        torch.set_num_threads(args.threads)
    slots = args.max_slots or (4096 if args.memory_budget else 64)
    cfg = EngineConfig(max_slots=slots, memory_budget_gb=args.memory_budget, max_queue=args.max_queue,
                       max_prompt_tokens=args.max_prompt_tokens, max_new_tokens=args.max_new_tokens,
                       prefix_cache_gb=args.prefix_cache_gb)
    return Engine.from_pretrained(args.model, cfg, dtype=args.dtype, device=args.device,
                                  kernels=Kernels.parse(args.kernels), quantize=args.quantize)


def settings_line(engine) -> str:
    """One line for stderr: the model's dtype and device, and its weights when quantized."""
    s = engine.model_settings
    q = s["quantization"]
    weights = f"; weights {q} (in_proj, out_proj, lm_head; model/quantize.py)" if q != "none" else ""
    return f"{s['dtype']} on {s['device']}{weights}"


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
        engine = build_engine(args)
        if engine.model_settings["quantization"] != "none":
            print(f"pcm generate: {settings_line(engine)}", file=sys.stderr)
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
        engine = build_engine(args)
        params = _params(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"pcm chat: {err}", file=sys.stderr)
        return 2
    if engine.model_settings["quantization"] != "none":
        print(f"pcm chat: {settings_line(engine)}", file=sys.stderr)
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
