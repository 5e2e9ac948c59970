"""Issue 13: the checkpoints users load (2.7B and 7B shapes, random bf16 weights in the Hugging Face
format, written once outside the repo) — ours in bf16, float32 and int8 against transformers in bf16,
each in its own process: load, prefill, decode at batch 1 and 8, peak RSS, the bandwidth floor measured
in the same run, and greedy agreement with float32. Same as `pcm bench real-size`; see
promptcot_mamba/bench/real_size.py.

    python benchmarks/bench_real_size.py [--shapes 2.7b 7b] [--runs ours:bf16 hf:bf16 ...]
                                         [--out benchmarks/results/real-size-cpu.json]
"""

from promptcot_mamba.bench.real_size import main

if __name__ == "__main__":
    raise SystemExit(main())
