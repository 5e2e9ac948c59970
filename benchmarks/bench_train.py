"""Training throughput on this CPU: our trainer (run_recipe on Mamba2LM) against transformers'
Mamba2ForCausalLM trained by the transformers Trainer, same data, same shape, same run.

    python benchmarks/bench_train.py [--shapes tiny,130m] [--steps 5] [--out benchmarks/results/train-cpu.json]

Both sides train on the same 512-token rows (byte-tokenized synthetic SFT records, truncated to 513
ids) at the same micro/global batch, fp32, AdamW with the paper's settings. Step 1 of each side is
warm-up and excluded; tokens/s is the median over the remaining steps. The transformers model is
the pure-PyTorch fallback (mamba_ssm cannot be installed here), n_groups = 1, tied embeddings, the
same parameter count as ours.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = {
    # name: (our model config fields, transformers Mamba2Config fields, micro batch, steps)
    "tiny": ({"name": "tiny-g1", "vocab_size": 264},
             dict(vocab_size=264, hidden_size=64, num_hidden_layers=2, state_size=16, head_dim=16, num_heads=8,
                  n_groups=1, expand=2, chunk_size=16, tie_word_embeddings=False), 8, 12),
    "130m": ({"name": "mamba2-130m"},
             dict(vocab_size=50288, hidden_size=768, num_hidden_layers=24, state_size=128, head_dim=64,
                  num_heads=24, n_groups=1, expand=2, chunk_size=256, tie_word_embeddings=True), 2, 5),
}
T = 512


def _records(path: Path, n: int) -> None:
    import random

    rng = random.Random(0)
    with open(path, "w") as fh:
        for i in range(n):
            words = " ".join(str(rng.randint(0, 999)) for _ in range(200))
            fh.write(json.dumps({"id": str(i), "prompt": f"Add up: {words[:200]}",
                                 "response": f"<think>\n{words}\n</think>\n\n\\boxed{{{i}}}", "source": "bench"}) + "\n")


def _recipe(data: Path, model_cfg: dict, micro: int, steps: int) -> dict:
    return {"name": "bench", "seed": 0, "model": {"kind": "mamba2", "config": model_cfg},
            "tokenizer": "builtin:bytes",
            "run": {"device": "cpu", "precision": "fp32", "micro_batch": micro, "checkpoint_every": 0,
                    "tensorboard": False, "progress": False},
            "optimizer": {"lr": 5e-6, "betas": [0.9, 0.95], "weight_decay": 0.01, "grad_clip": 1.0,
                          "warmup_steps": 1},
            "phases": [{"name": "bench", "datasets": [{"kind": "jsonl", "path": str(data), "schema": "sft"}],
                        "max_length": T + 1, "drop_over_length": False, "global_batch": micro, "steps": steps}]}


def bench_ours(data: Path, model_cfg: dict, micro: int, steps: int, tmp: Path) -> dict:
    from promptcot_mamba.train import run_recipe
    from promptcot_mamba.train.metrics import read_metrics

    t0 = time.perf_counter()
    res = run_recipe(_recipe(data, model_cfg, micro, steps), tmp / "ours", progress=False)
    wall = time.perf_counter() - t0
    rows = read_metrics(res.metrics_path)
    assert all(r["tokens"] == micro * T for r in rows), "rows are not all full 512-token rows"
    times = [r["step_time_s"] for r in rows[1:]]
    return {"tokens_per_s": micro * T / statistics.median(times), "step_times_s": [r["step_time_s"] for r in rows],
            "losses": [r["loss"] for r in rows], "wall_s_incl_data_ckpt_export": wall}


def bench_hf(data: Path, hf_cfg: dict, micro: int, steps: int, tmp: Path) -> dict:
    import transformers
    from transformers import Mamba2Config, Mamba2ForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from promptcot_mamba.train.batches import BatchStream
    from promptcot_mamba.train.byte_tokenizer import byte_tokenizer
    from promptcot_mamba.train.examples import build_phase_examples
    from promptcot_mamba.train.recipe import Recipe

    transformers.logging.set_verbosity_error()
    # the very same rows our trainer sees (labels unshifted: the HF model shifts internally)
    phase = Recipe.from_dict(_recipe(data, {"name": "tiny"}, micro, steps)).phases[0]
    examples, _ = build_phase_examples(phase, byte_tokenizer(), 0)
    stream = BatchStream(examples, max_length=T + 1, global_batch=micro, seed=0)
    rows = []
    for s in range(steps):
        for r in stream.global_batch_rows(s):
            ex = examples[r[0]]
            ids = torch.tensor(ex.ids[:T])
            labels = ids.clone()
            labels[: ex.n_prompt] = -100
            rows.append({"input_ids": ids, "labels": labels})
    torch.manual_seed(0)
    model = Mamba2ForCausalLM(Mamba2Config(**hf_cfg))

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.t = [], None

        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t)

    clock = Clock()
    args = TrainingArguments(output_dir=str(tmp / "hf"), per_device_train_batch_size=micro, max_steps=steps,
                             learning_rate=5e-6, adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.01,
                             max_grad_norm=1.0, warmup_steps=1, lr_scheduler_type="constant_with_warmup",
                             logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                             dataloader_num_workers=0, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[clock])
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"tokens_per_s": micro * T / statistics.median(clock.times[1:]), "step_times_s": clock.times,
            "losses": losses, "wall_s": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="tiny,130m")
    ap.add_argument("--steps", type=int, default=None, help="steps per side (default per shape)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both sides (1: steady on a shared, loaded 2-core VM; 0: torch default)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train-cpu.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        data = tmp / "bench.jsonl"
        _records(data, 64)
        for name in args.shapes.split(","):
            ours_cfg, hf_cfg, micro, steps = SHAPES[name]
            steps = args.steps or steps
            load0 = os.getloadavg()[0]
            hf = bench_hf(data, hf_cfg, micro, steps, tmp / name)
            ours = bench_ours(data, ours_cfg, micro, steps, tmp / name)
            ratio = ours["tokens_per_s"] / hf["tokens_per_s"]
            print(f"{name}: {micro}x{T} tokens/step  ours {ours['tokens_per_s']:.0f} tok/s  "
                  f"transformers Trainer {hf['tokens_per_s']:.0f} tok/s  ratio {ratio:.2f}x")
            results.append({"shape": name, "micro_batch": micro, "seq_len": T, "steps": steps,
                            "ours": ours, "transformers_trainer": hf, "speedup": ratio,
                            "loadavg_1m_at_start": load0})
    out = {"benchmark": "train-cpu", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "machine": {"nproc": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "platform": platform.platform()},
           "note": "fp32, same rows both sides, step 1 excluded, median step time; ours = run_recipe on Mamba2LM, "
                   "baseline = transformers Trainer on Mamba2ForCausalLM (torch fallback). No GPU in this session: "
                   "MFU at 1.3B is unmeasured.",
           "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
