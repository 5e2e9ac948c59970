"""`pcm eval run | grade | report` — thin commands over eval.harness and eval.report."""

from __future__ import annotations

import argparse
import json
import sys

from promptcot_mamba.eval.benchmarks import ALL_BENCHMARKS


def _add_grading_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark-dir", default=None,
                   help="folder with the benchmark files (default: $PCM_BENCHMARK_DIR, else the Hugging Face Hub)")
    p.add_argument("--lcb-tests", default=None,
                   help="LiveCodeBench hidden tests: HF code_generation_lite jsonl file/folder, or 'samples' for "
                        "statement samples only (default: $PCM_LCB_TESTS, else the Hub)")
    p.add_argument("--workers", type=int, default=None, help="grading processes / sandboxes at once (default: all cores)")
    p.add_argument("--math-timeout", type=float, default=10.0, help="seconds per math verification")
    p.add_argument("--lcb-timeout", type=float, default=30.0, help="seconds per LiveCodeBench test (paper: 30)")
    p.add_argument("--sandbox", choices=("auto", "bwrap", "rlimits"), default="auto",
                   help="code isolation (auto: bubblewrap when installed, else rlimits with a warning)")
    p.add_argument("--no-paper", "--no-lenient", dest="no_paper", action="store_true",
                   help="skip the paper's graders where they cost a second run (math, LiveCodeBench): the "
                        "report's `paper` column (--no-lenient is the old name)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _code_config(args):
    from promptcot_mamba.eval.code_grader import CodeGradeConfig

    return CodeGradeConfig(lcb_test_timeout_s=args.lcb_timeout, isolation=args.sandbox,
                           **({"jobs": args.workers} if args.workers else {}))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate on the paper's benchmarks (run, grade external samples, report)")
    esub = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")

    r = esub.add_parser("run", help="generate with a model (in-process or an OpenAI-compatible endpoint) and grade")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a model folder (save_pretrained layout) served by the in-process engine")
    src.add_argument("--base-url", help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    r.add_argument("--api-model", default=None, help="model id to send to the endpoint (default: its first model)")
    r.add_argument("--concurrency", type=int, default=8, help="requests in flight to the endpoint")
    r.add_argument("--max-retries", type=int, default=4, help="retries per request to the endpoint")
    r.add_argument("--benchmarks", default=",".join(ALL_BENCHMARKS),
                   help=f"comma-separated subset of {','.join(ALL_BENCHMARKS)}")
    r.add_argument("--out", required=True, help="output folder (rerunning resumes: finished samples are skipped)")
    r.add_argument("--n", type=int, default=None, help="samples per problem (default: 16 AIME, 8 LCB, 1 otherwise)")
    r.add_argument("--temperature", type=float, default=0.8)
    r.add_argument("--top-p", type=float, default=0.95)
    r.add_argument("--repetition-penalty", type=float, default=1.1)
    r.add_argument("--max-tokens", type=int, default=65536)
    r.add_argument("--seed", type=int, default=0, help="sample i of every problem uses seed + i")
    r.add_argument("--limit", type=int, default=None, help="first N problems per benchmark (smoke runs)")
    r.add_argument("--batch-size", type=int, default=64, help="requests per generate call (resume granularity)")
    r.add_argument("--model-name", default=None, help="name shown in the report")
    r.add_argument("--memory-budget", type=float, default=None, metavar="GB", help="in-process engine memory budget")
    r.add_argument("--max-slots", type=int, default=64, help="in-process engine concurrent sequences")
    r.add_argument("--dtype", default="auto", help="in-process engine dtype: auto, float32, bfloat16")
    r.add_argument("--device", default="cpu", help="in-process engine device: cpu or cuda")
    r.add_argument("--kernels", default="", metavar="KEY=VALUE,...",
                   help="in-process engine hot-path implementations, as for pcm serve (model/kernels.py)")
    r.add_argument("--quantize", default="none", choices=["none", "int8"],
                   help="in-process engine weight quantization, as for pcm serve (model/quantize.py); "
                        "recorded in the report")
    _add_grading_args(r)
    r.set_defaults(func=_run)

    g = esub.add_parser("grade", help="grade completions made elsewhere: rows {benchmark, problem_id, completion}",
                        description="The whole file is checked before anything is graded (a bad row: exit 2, "
                                    "nothing written). Problems may have different numbers of samples; the "
                                    "report gives n per problem.")
    g.add_argument("samples", help="JSONL of {benchmark, problem_id, completion[, sample_index, error]}; a row with "
                                   "an `error` is a failed generation (infra_error)")
    g.add_argument("--out", required=True, help="writes OUT/verdicts.jsonl and OUT/report.{json,md}")
    g.add_argument("--allow-partial", action="store_true", help="allow a subset of a benchmark's problems")
    g.add_argument("--model-name", default=None)
    _add_grading_args(g)
    g.set_defaults(func=_grade)

    rep = esub.add_parser("report", help="re-render OUT/report.md from OUT/report.json and print it")
    rep.add_argument("out")
    rep.set_defaults(func=_report)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _client(args):
    if args.base_url:
        if args.quantize != "none":
            raise ValueError(f"--quantize {args.quantize} applies to --model (the in-process engine); the server "
                             "behind --base-url decides its own weights (pcm serve --quantize int8)")
        from promptcot_mamba.llm.openai_client import OpenAIClient

        return OpenAIClient(args.base_url, model=args.api_model, max_concurrency=args.concurrency,
                            max_retries=args.max_retries)
    # `--model DIR`: the in-process engine (eval sits above generate in the layering), through the names the
    # generate package exports and its client module, so that package may rearrange its internals freely.
    from promptcot_mamba.generate import Engine, EngineClient, EngineConfig
    from promptcot_mamba.model.kernels import Kernels

    cfg = EngineConfig(max_slots=args.max_slots or (4096 if args.memory_budget else 64),
                       memory_budget_gb=args.memory_budget, max_queue=100000, max_prompt_tokens=131072,
                       max_new_tokens=max(args.max_tokens, 1))
    engine = Engine.from_pretrained(args.model, cfg, dtype=args.dtype, device=args.device,
                                    kernels=Kernels.parse(args.kernels), quantize=args.quantize)
    print(f"pcm eval run: engine {json.dumps(engine.model_settings)}", file=sys.stderr)
    return EngineClient(engine, progress=False)


def _run(args) -> int:
    from pathlib import Path

    from promptcot_mamba.eval.harness import EvalConfig, SamplingConfig, evaluate
    from promptcot_mamba.eval.report import render_markdown

    names = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    bad = [b for b in names if b not in ALL_BENCHMARKS]
    if bad:
        print(f"pcm eval run: unknown benchmarks {bad}; choose from {','.join(ALL_BENCHMARKS)}", file=sys.stderr)
        return 2
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                              max_tokens=args.max_tokens, n=args.n, seed=args.seed)
    name = args.model_name or (Path(args.model).name if args.model else (args.api_model or args.base_url))
    cfg = EvalConfig(out_dir=args.out, benchmarks=tuple(names), sampling=sampling, benchmark_dir=args.benchmark_dir,
                     lcb_tests=args.lcb_tests, limit=args.limit, batch_size=args.batch_size, progress=not args.quiet,
                     model_name=name, math_timeout_s=args.math_timeout, paper=not args.no_paper,
                     code=_code_config(args), workers=args.workers)
    try:
        report = evaluate(_client(args), cfg)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"pcm eval run: {err}", file=sys.stderr)
        return 2
    print(render_markdown(report))
    return 0 if all(s["complete"] for s in report["benchmarks"]) else 1


def _grade(args) -> int:
    from promptcot_mamba.eval.harness import grade_file
    from promptcot_mamba.eval.report import render_markdown

    try:
        report = grade_file(args.samples, args.out, benchmark_dir=args.benchmark_dir, lcb_tests=args.lcb_tests,
                            allow_partial=args.allow_partial, progress=not args.quiet,
                            math_timeout_s=args.math_timeout, paper=not args.no_paper,
                            code_config=_code_config(args), workers=args.workers, model_name=args.model_name)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"pcm eval grade: {err}", file=sys.stderr)
        return 2
    print(render_markdown(report))
    return 0


def _report(args) -> int:
    from promptcot_mamba.eval.report import load_report_rows, render_markdown

    try:
        print(render_markdown(load_report_rows(args.out)))
    except FileNotFoundError as err:
        print(f"pcm eval report: {err}", file=sys.stderr)
        return 2
    return 0
