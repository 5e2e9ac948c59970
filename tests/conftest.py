"""Fixtures shared by the whole suite (one place; test modules opt in by name).

- `one_thread`: torch runs one intra-op thread for a module's tests. Tiny ops gain nothing from
  threads, and on a shared, oversubscribed 2-core runner an OpenMP region can stall for a whole
  scheduler slice (a 5 µs bmm took 28 ms with 2 threads under load; train tests ran 10x slower).
  Opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`. The library leaves torch's
  thread count alone; this restores it after the module.
- Triton interpreter guard: Triton decides at its first import whether it runs in interpreter mode.
  A kernel test file sets TRITON_INTERPRET=1 before importing triton and records
  `_TRITON_TOO_EARLY` when another module got there first; its tests then skip, and the file's
  `test_rerun_in_fresh_process` (using `rerun_in_fresh_process`) runs it again in a new process.
- Benchmark data: tests that read the seven benchmarks take them from $PCM_BENCHMARK_DIR (scripts/test.sh
  points it at ../shared/data/benchmarks). Where that folder is missing (a clone without the data),
  those tests skip and say why, instead of falling back to the Hugging Face Hub: no test needs the
  network.
- Greedy near-ties (`assert_greedy_equivalent`, `tie_free_length`, `next_token_logits`): two greedy
  decodes whose per-row arithmetic differs (another batch size through a GEMM, another implementation)
  pick the same tokens only while no step has its top two logits within rounding of each other, and
  which steps those are can differ from one CPU to the next. The first compares two token lists and
  accepts a first difference only at such a near-tie of the reference model; the second gives how many
  greedy tokens come before the reference's first near-tie, for comparisons that see only text (HTTP).
  "Within rounding" is the tolerance rule of promptcot_mamba/common/tolerances.py for a whole-model value
  at test sizes, relative to the largest |logit|: rtol(float32, SSD_TERMS) · max|logits|.
"""

import os
import subprocess
import sys

import pytest
import torch

from promptcot_mamba.common.tolerances import SSD_TERMS, rtol


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def benchmark_data_present() -> bool:
    from promptcot_mamba.eval.benchmarks import default_benchmark_dir

    d = default_benchmark_dir()
    return d is not None and d.is_dir() and any(d.rglob("*.jsonl"))


@pytest.fixture(autouse=True, scope="session")
def _no_hub_without_benchmark_data():
    if benchmark_data_present():
        yield
        return
    from promptcot_mamba.eval import benchmarks
    from promptcot_mamba.synth import decontam

    def skip(*_args, **_kw):
        pytest.skip(skip_without_benchmark_data())

    # the two places the data is read: a benchmark (else from the Hub) and decontamination's folder
    real = benchmarks._load_hub, decontam.load_benchmarks
    benchmarks._load_hub = decontam.load_benchmarks = skip
    yield
    benchmarks._load_hub, decontam.load_benchmarks = real


@pytest.fixture()
def benchmark_data():
    """For a test whose subprocess reads the benchmark data (the in-process patch above cannot reach it)."""
    if not benchmark_data_present():
        pytest.skip(skip_without_benchmark_data())


def skip_without_benchmark_data() -> str:
    return (f"benchmark data not found (PCM_BENCHMARK_DIR={os.environ.get('PCM_BENCHMARK_DIR')!r}); "
            "point PCM_BENCHMARK_DIR at a local copy to run this test")


def _too_early(request) -> bool:
    return getattr(request.module, "_TRITON_TOO_EARLY", False)


@pytest.fixture(autouse=True)
def _fresh_process_guard(request):
    if _too_early(request) and request.node.name != "test_rerun_in_fresh_process":
        pytest.skip("triton was imported before TRITON_INTERPRET=1; test_rerun_in_fresh_process runs these")


@pytest.fixture()
def rerun_in_fresh_process(request):
    def run() -> None:
        if not _too_early(request):
            pytest.skip("the tests of this file ran in this process")
        env = dict(os.environ, TRITON_INTERPRET="1")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                               str(request.path)], env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:]

    return run


def _near_tie_bound(logits: torch.Tensor) -> float:
    finite = logits[torch.isfinite(logits)]  # masked (-inf) tokens carry no scale
    return rtol(torch.float32, SSD_TERMS) * float(finite.abs().max())


def _assert_greedy_equivalent(logits_fn, prompt_ids, a_tokens, b_tokens, *, what: str = "greedy tokens"):
    """`logits_fn(ids) -> (vocab,)`: the reference model's next-token logits after `ids` (masked tokens
    -inf). Equal lists pass; otherwise the first difference must be a near-tie of the reference."""
    a, b = list(a_tokens), list(b_tokens)
    if a == b:
        return
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if k is None:
        raise AssertionError(f"{what}: one run has {len(a)} tokens, the other {len(b)}, equal up to the shorter")
    with torch.no_grad():
        logits = logits_fn(list(prompt_ids) + a[:k]).detach().float().flatten()
    tol, top = _near_tie_bound(logits), float(logits.max())
    la, lb = float(logits[a[k]]), float(logits[b[k]])
    if not (abs(la - lb) <= tol and top - max(la, lb) <= tol):
        raise AssertionError(f"{what}: first differ at step {k} (token {a[k]} vs {b[k]}), not a near-tie: "
                             f"reference logits {la:.6g} vs {lb:.6g}, top {top:.6g}, bound {tol:.3g}")


def _tie_free_length(logits_fn, prompt_ids, max_tokens: int) -> int:
    """How many of the reference's greedy tokens (at most `max_tokens`) come before its first near-tie."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for k in range(max_tokens):
            logits = logits_fn(ids).detach().float().flatten()
            top2 = logits.topk(2)
            if float(top2.values[0] - top2.values[1]) <= _near_tie_bound(logits):
                return k
            ids.append(int(top2.indices[0]))
    return max_tokens


@pytest.fixture(scope="session")
def assert_greedy_equivalent():
    return _assert_greedy_equivalent


@pytest.fixture(scope="session")
def tie_free_length():
    return _tie_free_length


@pytest.fixture(scope="session")
def next_token_logits():
    """`next_token_logits(model)`: a `logits_fn` running the model's whole forward (our Mamba2LM or a
    transformers causal LM) over the ids and keeping the last position."""
    return lambda model: (lambda ids: model(torch.tensor([list(ids)])).logits[0, -1])
