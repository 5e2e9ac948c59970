"""Issue 15, item 2: CPU-seconds per training step of the demo's Mamba-2 against its same-size Llama.

    python benchmarks/bench_demo_step.py [--rounds 7] [--steps 3] [--label after]
                                         [--out benchmarks/results/demo-step-cpu.json]
    python benchmarks/bench_demo_step.py --profile [--length 224]   # op table of one Mamba-2 step

Both models are built as `pcm demo` builds them: the default preset's Mamba-2 recipe through
train/models.py `build_model`, the Llama from demo/pipeline.py `matched_baseline` (its MLP width
chosen so the parameter counts match), each wrapped in the trainer's `SFTObjective` (Mamba-2 runs
its LM head at labelled positions only, the Llama on every position, exactly as in training) and
stepped as the trainer steps: loss → backward → clip_grad_norm_ → fused AdamW → zero_grad.

The batches are random tokens at the demo's shapes: the preset's rows per step (its global batch;
`--batch` for another) padded to 128 (phase 1) or 224 (phase 2) positions, row lengths uniform in [0.6·T, T] (one row at T), the first ~40% of each row prompt
(unlabelled), the rest labelled; the demo's rows are 100-220 tokens of which the worked solution
is the larger part. One torch thread, as the demo runs each model in its own single-thread process.

The cost is CPU-seconds (`time.process_time`) per step, which a second process on the same cores
inflates less than wall time; wall is recorded too. Rounds interleave the two models (one round =
`--steps` steps of Mamba-2 then of the Llama, at each length), so both see the same machine; the
ratio is taken per round, and the median and the min over rounds are reported. Two warm-up steps
per model and length are excluded. `--label` files the run under that key of the JSON, keeping the
other keys (e.g. "before" and "after" a change).

The process runs under the demo workers' allocator settings (demo/pipeline.py `WORKER_MALLOC`; it
re-executes itself with them unless they are set or `--system-malloc` is given), as the demo trains.

Against the hardware floor, measured in the same run: single-thread GEMM FLOP/s (a 1024³ product and
the in_proj's shape) and memory bandwidth (a copy far larger than the caches). Each model's step is
counted once outside the timing: its matmul FLOPs (torch.utils.flop_counter; SDPA counted dense, and
halved for the causal kernel, which skips the blocks above the diagonal) and its aten calls (views
apart). `matmul_floor_s` is those FLOPs at the measured GEMM rate; `rest_s`, the step's CPU-seconds
beyond it, is what elementwise passes and per-op overhead cost. `--plot` draws both per length.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LENGTHS = (128, 224)  # phase 1 and phase 2 max_length of the default preset
VOCAB = 384  # data.tokenizer_vocab of the default preset (round_vocab keeps 384)


class _Vocab:
    """The few tokenizer fields `build_model` reads (a BPE of the preset's vocabulary size)."""

    vocab_size = VOCAB
    eos_token_id = 2
    pad_token = "<pad>"
    bos_token = None

    def token_to_id(self, token: str) -> int:
        return 0


def demo_models(preset: str = "default"):
    """(Mamba-2 objective, Llama objective, settings) built as demo/pipeline.py builds them."""
    from promptcot_mamba.demo.pipeline import matched_baseline
    from promptcot_mamba.demo.settings import DemoSettings
    from promptcot_mamba.model.config import Mamba2Config
    from promptcot_mamba.train.models import SFTObjective, build_model, round_vocab
    from promptcot_mamba.train.recipe import Recipe

    settings = DemoSettings.load(preset)
    vocab = round_vocab(VOCAB)
    mamba_params = Mamba2Config.from_dict({"vocab_size": vocab, **settings.recipe["model"]["config"]}).num_parameters()
    recipe = Recipe.from_dict({"tokenizer": "builtin:bytes", **settings.recipe})
    llama_recipe = Recipe.from_dict({"tokenizer": "builtin:bytes", **settings.recipe,
                                     "model": matched_baseline(settings, mamba_params, vocab)})
    torch.manual_seed(0)
    mamba = SFTObjective(build_model(recipe.model, _Vocab()))
    llama = SFTObjective(build_model(llama_recipe.model, _Vocab()))
    return mamba, llama, recipe


def demo_batch(T: int, b: int = 32, seed: int = 0):
    """(input_ids, labels, seq_idx=None, label_index) of one padded micro-batch, as `collate` makes."""
    from promptcot_mamba.train.batches import IGNORE

    g = torch.Generator().manual_seed(seed + T)
    ids = torch.zeros(b, T, dtype=torch.long)
    labels = torch.full((b, T), IGNORE, dtype=torch.long)
    lengths = torch.randint(int(0.6 * T), T + 1, (b,), generator=g)
    lengths[0] = T
    for r, n in enumerate(lengths.tolist()):
        ids[r, :n] = torch.randint(3, VOCAB, (n,), generator=g)
        labels[r, int(0.4 * n):n - 1] = ids[r, int(0.4 * n) + 1:n]
    label_index = torch.nonzero(labels.reshape(-1) != IGNORE).squeeze(1)
    return ids, labels, None, label_index


class Stepper:
    """One model's training step exactly as train/trainer.py runs it (one micro-batch per step)."""

    def __init__(self, objective: torch.nn.Module, recipe):
        from promptcot_mamba.train.optim import build_optimizer, no_decay_names

        self.model = objective.train()
        self.spec = recipe.phases[0].optimizer
        self.opt = build_optimizer(objective, self.spec, no_decay_names(objective), fused=True)

    def step(self, batch) -> float:
        from promptcot_mamba.train.parallel import grad_norm_and_clip

        loss = self.model(*batch)
        n_loss = batch[3].numel()
        (loss / n_loss).backward()
        grad_norm_and_clip(self.model, self.spec.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach()) / n_loss

    def timed(self, batch, steps: int) -> tuple[list[float], list[float]]:
        cpu, wall = [], []
        for _ in range(steps):
            c0, w0 = time.process_time(), time.perf_counter()
            self.step(batch)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        return cpu, wall


def profile(stepper: Stepper, batch, rows: int = 30) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    for _ in range(2):
        stepper.step(batch)
    with prof(activities=[ProfilerActivity.CPU], record_shapes=False) as p:
        stepper.step(batch)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def hardware_floor(rows: int, in_proj: torch.nn.Linear) -> dict:
    """This thread's GEMM rate (GFLOP/s, best of 5) at 1024³ and at the in_proj's shape (rows × 128
    tokens through the model's own in_proj), and copy bandwidth (GB/s read + written) over 256 MB."""

    def best(fn, reps: int = 5) -> float:
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    d_out, d_in = in_proj.weight.shape
    x, w = torch.randn(rows * 128, d_in), torch.randn(d_in, d_out)
    src = torch.empty(1 << 26)  # 256 MB of fp32
    src.fill_(1.0)
    dst = torch.empty_like(src)
    return {"gemm_gflops_1024": 2 * 1024 ** 3 / best(lambda: a @ b) / 1e9,
            "gemm_gflops_in_proj": 2 * x.numel() * d_out / best(lambda: x @ w, 20) / 1e9,
            "copy_gb_s": 2 * src.numel() * 4 / best(lambda: dst.copy_(src)) / 1e9}


def _cpu_flash_formulas() -> None:
    """FLOP formulas for the CPU flash-attention ops (torch registers the CUDA ones only)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    ops = ((aten._scaled_dot_product_flash_attention_for_cpu, lambda q, k, v, *a, out_val=None, **kw:
            fc.sdpa_flop_count(q.shape, k.shape, v.shape)),
           (aten._scaled_dot_product_flash_attention_for_cpu_backward, lambda g, q, k, v, *a, out_val=None, **kw:
            fc.sdpa_backward_flop_count(g.shape, q.shape, k.shape, v.shape)))
    for op, formula in ops:
        if op not in fc.flop_registry:
            fc.register_flop_formula(op, get_raw=True)(formula)


def step_counts(stepper: Stepper, batch) -> dict:
    """One step's matmul FLOPs (GFLOP: all, of which SDPA dense) and aten calls (all, non-view)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    _cpu_flash_formulas()

    class Calls(TorchDispatchMode):
        n = compute = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 1
            self.compute += not func.is_view
            return func(*args, **(kwargs or {}))

    with FlopCounterMode(display=False) as flops:
        stepper.step(batch)
    with Calls() as calls:
        stepper.step(batch)
    per_op = flops.get_flop_counts().get("Global", {})
    sdpa = sum(v for k, v in per_op.items() if "scaled_dot_product" in str(k))
    return {"matmul_gflop": flops.get_total_flops() / 1e9, "sdpa_gflop_dense": sdpa / 1e9,
            "aten_calls": calls.n, "aten_calls_non_view": calls.compute}


def _summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "all": xs}


def preset_rows(recipe) -> int:
    """Rows of one micro-batch in the preset's training: its phases' global batch, capped by
    micro_batch (the trainer's split)."""
    rows = {min(ph.global_batch, recipe.run.micro_batch) for ph in recipe.phases}
    if len(rows) != 1:
        raise SystemExit(f"the preset's phases step different batches {sorted(rows)}: pass --batch")
    return rows.pop()


def run(rounds: int, steps: int, lengths, batch: int | None = None) -> dict:
    mamba, llama, recipe = demo_models()
    steppers = {"mamba2": Stepper(mamba, recipe), "llama": Stepper(llama, recipe)}
    rows = batch or preset_rows(recipe)
    batches = {T: demo_batch(T, rows) for T in lengths}
    from promptcot_mamba.model.mixer import Mamba2Mixer

    floor = hardware_floor(rows, next(m for m in mamba.modules() if isinstance(m, Mamba2Mixer)).in_proj)
    counts = {}
    for T in lengths:  # warm-up: first calls allocate and pick kernels
        for name, s in steppers.items():
            s.timed(batches[T], 2)
            counts[name, T] = step_counts(s, batches[T])
    cpu = {(m, T): [] for m in steppers for T in lengths}
    wall = {(m, T): [] for m in steppers for T in lengths}
    ratio = {T: [] for T in lengths}
    for r in range(rounds):
        for T in lengths:
            med = {}
            for name, s in steppers.items():
                c, w = s.timed(batches[T], steps)
                cpu[name, T] += c
                wall[name, T] += w
                med[name] = statistics.median(c)
            ratio[T].append(med["mamba2"] / med["llama"])
            print(f"round {r + 1}/{rounds} T={T}: mamba2 {med['mamba2'] * 1e3:.0f} ms  llama "
                  f"{med['llama'] * 1e3:.0f} ms CPU/step  ratio {ratio[T][-1]:.2f}", flush=True)
    out = {"hardware_floor": floor}
    for T in lengths:
        steps = {}
        for m in steppers:
            c = counts[m, T]
            gflop = c["matmul_gflop"] - c["sdpa_gflop_dense"] / 2  # the causal kernel's share
            median = statistics.median(cpu[m, T])
            floor_s = gflop / floor["gemm_gflops_in_proj"]
            steps[m] = {**c, "matmul_gflop_causal": gflop, "matmul_floor_s": floor_s,
                        "rest_s": median - floor_s, "achieved_gflops": gflop / median}
        out[str(T)] = {
            "batch": list(batches[T][0].shape), "labelled_positions": int(batches[T][3].numel()),
            "cpu_s_per_step": {m: _summary(cpu[m, T]) for m in steppers},
            "wall_s_per_step": {m: _summary(wall[m, T]) for m in steppers},
            "ratio_mamba2_over_llama_cpu": _summary(ratio[T]),
            "step": steps,
        }
    out["params"] = {m: sum(p.numel() for p in {id(p): p for p in s.model.parameters()}.values())
                     for m, s in steppers.items()}
    return out


def plot(result: dict, lengths, path: Path, label: str) -> None:
    """Per length, each model's CPU-seconds per step split into its matmul floor and the rest, as a
    share of the Llama's step at that length (the costs span 20x over the lengths)."""
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is missing (pip install 'promptcot-mamba[plot]')")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (m, colour) in enumerate((("mamba2", "tab:blue"), ("llama", "tab:orange"))):
        xs = [j + (i - 0.5) * 0.38 for j in range(len(lengths))]
        unit = [result[str(T)]["cpu_s_per_step"]["llama"]["median"] for T in lengths]
        fl = [result[str(T)]["step"][m]["matmul_floor_s"] / u for T, u in zip(lengths, unit)]
        rest = [result[str(T)]["step"][m]["rest_s"] / u for T, u in zip(lengths, unit)]
        ax.bar(xs, fl, 0.36, color=colour, label=f"{m}: matmul FLOPs at the measured GEMM rate")
        ax.bar(xs, rest, 0.36, bottom=fl, color=colour, alpha=0.35, label=f"{m}: the rest (elementwise, per-op)")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(lengths)), [
        f"T {T}: {result[str(T)]['cpu_s_per_step']['llama']['median'] * 1e3:.0f} ms\nMamba-2 "
        f"{result[str(T)]['ratio_mamba2_over_llama_cpu']['median']:.2f}x" for T in lengths])
    ax.set_ylabel("CPU-s per step / the Llama's (1 thread)")
    ax.set_ylim(0, 1.75)
    ax.set_title(f"demo training step, Mamba-2 vs same-size Llama ({label})", fontsize=10)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3, help="steps per model per round")
    ap.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    ap.add_argument("--batch", type=int, default=None, help="rows per step (default: the preset's global batch)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the demo runs 1 per process)")
    ap.add_argument("--label", default="current", help="key of this run in the JSON (other keys are kept)")
    ap.add_argument("--note", default="", help="what this run measures (the code state), stored with it")
    ap.add_argument("--profile", action="store_true", help="print an op table of one Mamba-2 step and exit")
    ap.add_argument("--profile-llama", action="store_true", help="the same for the Llama")
    ap.add_argument("--length", type=int, default=224, help="T of the profiled step")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "demo-step-cpu.json"))
    ap.add_argument("--system-malloc", action="store_true",
                    help="keep the allocator's defaults instead of the demo workers' settings")
    ap.add_argument("--plot", default=None, help="draw this run's floor/rest split per length to this PNG")
    args = ap.parse_args()
    from promptcot_mamba.demo.pipeline import WORKER_MALLOC

    missing = {k: v for k, v in WORKER_MALLOC.items() if k not in os.environ}
    if missing and not args.system_malloc:  # glibc reads them at process start: run again with them
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **missing})
    torch.set_num_threads(args.threads)
    if args.profile or args.profile_llama:
        mamba, llama, recipe = demo_models()
        profile(Stepper(llama if args.profile_llama else mamba, recipe),
                demo_batch(args.length, args.batch or preset_rows(recipe)))
        return 0
    lengths = [int(t) for t in args.lengths.split(",")]
    load0 = os.getloadavg()
    result = run(args.rounds, args.steps, lengths, args.batch)
    result.update({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "note": args.note,
                   "rounds": args.rounds, "steps_per_round": args.steps, "loadavg_at_start": load0,
                   "loadavg_at_end": os.getloadavg(),
                   "malloc": {k: os.environ.get(k) for k in WORKER_MALLOC}})
    floor = result["hardware_floor"]
    print(f"floor: GEMM {floor['gemm_gflops_1024']:.0f} GFLOP/s at 1024³, {floor['gemm_gflops_in_proj']:.0f} at "
          f"the in_proj's shape; copy {floor['copy_gb_s']:.1f} GB/s")
    for T in lengths:
        r = result[str(T)]
        st = r["step"]
        print(f"T={T}: CPU s/step median mamba2 {r['cpu_s_per_step']['mamba2']['median']:.3f} llama "
              f"{r['cpu_s_per_step']['llama']['median']:.3f}; ratio median "
              f"{r['ratio_mamba2_over_llama_cpu']['median']:.2f} min {r['ratio_mamba2_over_llama_cpu']['min']:.2f}; "
              f"matmul GFLOP {st['mamba2']['matmul_gflop_causal']:.2f} / {st['llama']['matmul_gflop_causal']:.2f} "
              f"(floor ratio {st['mamba2']['matmul_floor_s'] / st['llama']['matmul_floor_s']:.2f}); rest "
              f"{st['mamba2']['rest_s']:.3f} / {st['llama']['rest_s']:.3f} s; aten calls "
              f"{st['mamba2']['aten_calls_non_view']} / {st['llama']['aten_calls_non_view']} (non-view)")
    if args.plot:
        plot(result, lengths, Path(args.plot), args.label)
    path = Path(args.out)
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc.update({"benchmark": "demo-step-cpu",
                "machine": {"nproc": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                            "platform": platform.platform()},
                "description": __doc__.split("\n\n")[2].replace("\n", " ")})
    doc.setdefault("runs", {})[args.label] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    print(f"wrote {path} (runs: {', '.join(doc['runs'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
