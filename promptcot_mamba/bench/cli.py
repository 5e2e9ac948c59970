"""`pcm bench ssd | decode | throughput`: thin commands over bench/*.py; each writes JSON + a PNG.

Defaults follow the device: on CUDA the paper's shapes in bf16, on a CPU tiny shapes in fp32 (a
smoke run of the same code; CPU timings say nothing about the GPU targets)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _device(arg: str | None) -> str:
    import torch

    return arg or ("cuda" if torch.cuda.is_available() else "cpu")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace(",", " ").split())


def _intervals(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for part in text.replace(",", " ").split():
        a, _, b = part.partition(":")
        if not b:
            raise argparse.ArgumentTypeError(f"interval {part!r}: write a:b, e.g. 1024:2048")
        out.append((int(a), int(b)))
    return tuple(out)


def _out(args, name: str, device: str) -> Path:
    return Path(args.out) if args.out else Path("bench-results") / f"{name}-{device.split(':')[0]}.json"


def cmd_ssd(args) -> int:
    from promptcot_mamba.bench import ssd_bench

    dev = _device(args.device)
    cuda = dev.startswith("cuda")
    cfg = ssd_bench.SSDBenchConfig(
        lengths=args.lengths or ((1024, 4096, 16384) if cuda else (256, 1024)),
        shape=args.shape or ("codestral" if cuda else "tiny"), batch=args.batch,
        dtype=args.dtype or ("bf16" if cuda else "fp32"), backends=tuple(args.backends or ()),
        backward=not args.no_backward, chunk_size=args.chunk_size, warmup=args.warmup, iters=args.iters,
        device=dev)
    result = ssd_bench.run_ssd_bench(cfg)
    print("\n".join(ssd_bench.summary(result)))
    print(ssd_bench.save(result, _out(args, "ssd", dev), plot=not args.no_plot))
    return 0


def cmd_decode(args) -> int:
    from promptcot_mamba.bench import decode_bench

    dev = _device(args.device)
    cuda = dev.startswith("cuda")
    cfg = decode_bench.DecodeBenchConfig(
        model=args.model or ("mamba-codestral-7b" if cuda else "tiny"), dtype=args.dtype or ("bf16" if cuda else "fp32"),
        batch_sizes=args.batch_sizes or ((1, 16, 64, 128) if cuda else (1, 4)),
        contexts=args.contexts or ((128, 8192) if cuda else (16, 64)), steps=args.steps,
        modes=tuple(args.modes or (("eager", "graph", "triton-graph") if cuda else ("eager",))), device=dev)
    result = decode_bench.run_decode_bench(cfg)
    print(decode_bench.save(result, _out(args, "decode", dev), plot=not args.no_plot))
    return 0


def cmd_throughput(args) -> int:
    from promptcot_mamba.bench import throughput

    dev = _device(args.device)
    cuda = dev.startswith("cuda")
    intervals = args.intervals or (((1024, 2048), (4096, 8192), (8192, 16384)) if cuda else ((8, 16), (32, 64)))
    if args.endpoints:
        result = throughput.run_endpoints(args.endpoints[0], args.endpoints[1], intervals,
                                          num_requests=args.num_requests, cap_label=args.caps[0] if args.caps else "server-side",
                                          mamba_model=args.mamba_model, transformer_model=args.transformer_model)
    else:
        cfg = throughput.ThroughputConfig(
            mamba=args.mamba or ("mamba-codestral-7b" if cuda else "tiny"),
            transformer=args.transformer or ("qwen2.5-7b" if cuda else "tiny-qwen2"),
            intervals=intervals, memory_caps=tuple(args.caps or (("24GB", "72GB") if cuda else ("0.6MB", "1.2MB"))),
            prompt_len=args.prompt_len, num_requests=args.num_requests, max_batch=args.max_batch,
            dtype=args.dtype or ("bf16" if cuda else "fp32"), device=dev, mamba_path=args.mamba_path,
            transformer_cache=args.transformer_cache)
        result = throughput.run_inprocess(cfg)
    print(throughput.save(result, _out(args, "throughput", dev if not args.endpoints else "endpoints"),
                          plot=not args.no_plot))
    return 0


def cmd_real_size(args) -> int:
    from promptcot_mamba.bench import real_size

    args.runs = [r for group in args.runs for r in group]
    return real_size.save(real_size.run(args), args)


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks: SSD kernels, decode, Figure 2 throughput, real-size checkpoints")
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH")

    def common(p):
        p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
        p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: bf16 on CUDA, fp32 on CPU)")
        p.add_argument("--out", default=None, help="JSON path (the PNG goes next to it)")
        p.add_argument("--no-plot", action="store_true")

    p = sub.add_parser("ssd", help="SSD scan: backends over sequence length, forward and backward")
    common(p)
    p.add_argument("--shape", default=None, help="codestral | mamba2-130m | tiny")
    p.add_argument("--lengths", type=_ints, default=None, help="sequence lengths, e.g. '1024 4096 16384'")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--backends", nargs="*", default=None,
                   help="torch triton fla torch-compile quadratic recurrent (default: all available)")
    p.add_argument("--no-backward", action="store_true")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.set_defaults(func=cmd_ssd)

    p = sub.add_parser("decode", help="decode tokens/s and memory vs batch size and context length")
    common(p)
    p.add_argument("--model", default=None, help="named config (random weights) or checkpoint folder")
    p.add_argument("--batch-sizes", type=_ints, default=None)
    p.add_argument("--contexts", type=_ints, default=None)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--modes", nargs="*", default=None, help="eager graph triton triton-graph")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("throughput", help="paper Figure 2: Mamba vs Transformer under memory caps")
    common(p)
    p.add_argument("--mamba", default=None, help="Mamba2LM named config or folder")
    p.add_argument("--transformer", default=None, help="tiny-qwen2 | qwen2.5-7b | transformers folder")
    p.add_argument("--intervals", type=_intervals, default=None, help="generation-length intervals a:b ...")
    p.add_argument("--caps", nargs="*", default=None, help="memory caps, e.g. 24GB 72GB")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--num-requests", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument("--mamba-path", default="auto", help="eager | graph | triton-graph | auto")
    p.add_argument("--transformer-cache", default="auto", help="static | dynamic | auto")
    p.add_argument("--endpoints", nargs=2, metavar=("MAMBA_URL", "TRANSFORMER_URL"), default=None,
                   help="measure two OpenAI-compatible servers instead of in-process models")
    p.add_argument("--mamba-model", default=None)
    p.add_argument("--transformer-model", default=None)
    p.set_defaults(func=cmd_throughput)

    from promptcot_mamba.bench.real_size import add_args as real_size_args

    p = sub.add_parser("real-size", help="2.7B and 7B checkpoints (random weights): load, prefill, decode, "
                                         "memory against transformers and the bandwidth floor")
    real_size_args(p)
    p.set_defaults(func=cmd_real_size)

    def _help(args) -> int:
        bench.print_help()
        return 2

    bench.set_defaults(func=_help)
