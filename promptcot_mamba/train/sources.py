"""Where training records come from: JSONL, Parquet, Hugging Face datasets, or a built-in generator.

Each reader yields plain dicts (one raw record each) and knows nothing of schemas; adapters.py turns
a record into a (prompt, response) pair. pyarrow and datasets are optional (the `train` extra); a
recipe that needs them fails with an error naming the extra, and one that points at missing files
fails before any training starts.
"""

from __future__ import annotations

import glob
import random
from collections.abc import Iterator
from pathlib import Path

from promptcot_mamba.common.files import iter_jsonl
from promptcot_mamba.text.prompts import MATH_SUFFIX
from promptcot_mamba.train.recipe import DatasetSpec


class DataError(ValueError):
    """A dataset that cannot be read; the message names the file or dataset."""


def read_records(spec: DatasetSpec) -> Iterator[dict]:
    """Raw records of one recipe dataset entry (at most `spec.limit`)."""
    it = _READERS[spec.kind](spec)
    for i, rec in enumerate(it):
        if spec.limit is not None and i >= spec.limit:
            return
        yield rec


def preflight(specs) -> None:
    """Fail before any training when a recipe's local files are missing or a reader is not installed
    (a phase-2 file missing must not surface after phase 1 has run for days)."""
    problems = []
    for where, spec in specs:
        try:
            if spec.kind in ("jsonl", "parquet"):
                _files(spec, ())
            if spec.kind == "parquet":
                import importlib.util

                if importlib.util.find_spec("pyarrow") is None:
                    raise DataError(f"dataset {spec.describe()}: reading Parquet needs pyarrow "
                                    "(pip install 'promptcot-mamba[train]')")
            if spec.kind == "hf":
                import importlib.util

                if importlib.util.find_spec("datasets") is None:
                    raise DataError(f"dataset {spec.describe()}: Hugging Face datasets need the `datasets` "
                                    "package (pip install 'promptcot-mamba[train]')")
                if spec.path is not None and not Path(spec.path).exists():
                    raise DataError(f"dataset {spec.describe()}: folder not found: {spec.path}")
        except DataError as err:
            problems.append(f"{where}: {err}")
    if problems:
        raise DataError("; ".join(problems))


def _files(spec: DatasetSpec, suffixes: tuple[str, ...]) -> list[Path]:
    p = Path(spec.path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(suffixes))
    elif any(ch in spec.path for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(spec.path, recursive=True))
    else:
        files = [p]
    missing = [f for f in files if not f.exists()]
    if not files or missing:
        raise DataError(f"dataset {spec.describe()}: file not found: {missing[0] if missing else spec.path} "
                        "(relative paths resolve against the recipe's folder, then the working directory)")
    return files


def _read_jsonl(spec: DatasetSpec) -> Iterator[dict]:
    # a broken line is a bad record, counted by the filter report, not a crash; a last line without
    # its newline is read like any other (files written by other tools often end that way)
    for f in _files(spec, (".jsonl", ".json", ".jsonl.gz")):
        yield from iter_jsonl(f, on_bad="mark", torn_tail="parse")


def _read_parquet(spec: DatasetSpec) -> Iterator[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"dataset {spec.describe()}: reading Parquet needs pyarrow "
                        "(pip install 'promptcot-mamba[train]')") from None
    for f in _files(spec, (".parquet",)):
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=1024):
            yield from batch.to_pylist()


def _read_hf(spec: DatasetSpec) -> Iterator[dict]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"dataset {spec.describe()}: Hugging Face datasets need the `datasets` package "
                        "(pip install 'promptcot-mamba[train]')") from None
    src = spec.path or spec.name
    try:
        if spec.path is not None and Path(spec.path).exists() and (Path(spec.path) / "dataset_info.json").exists():
            ds = datasets.load_from_disk(spec.path)  # a save_to_disk folder
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[spec.split]
        else:
            ds = datasets.load_dataset(src, spec.config, split=spec.split, data_files=spec.data_files,
                                       streaming=spec.limit is not None)
    except Exception as err:  # offline, unknown dataset, bad split: say which
        raise DataError(f"dataset {spec.describe()}: could not load (config={spec.config!r}, "
                        f"split={spec.split!r}): {err}") from err
    yield from ds


def _read_synthetic(spec: DatasetSpec) -> Iterator[dict]:
    gen = SYNTHETIC_TASKS.get(spec.task)
    if gen is None:
        raise DataError(f"dataset {spec.describe()}: unknown synthetic task {spec.task!r} "
                        f"(known: {sorted(SYNTHETIC_TASKS)})")
    rng = random.Random(spec.seed)
    for i in range(spec.n):
        prompt, response = gen(rng, spec.options)
        yield {"id": f"synthetic-{spec.task}-{spec.seed}-{i}", "prompt": prompt, "response": response,
               "source": f"synthetic:{spec.task}", "provenance": {"generator": "promptcot_mamba.train.sources"}}


_READERS = {"jsonl": _read_jsonl, "parquet": _read_parquet, "hf": _read_hf, "synthetic": _read_synthetic}


# ----------------------------------------------------------------------------------------------
# built-in synthetic tasks: SFT records in the paper's layout, learnable by a tiny model

def _arithmetic(rng: random.Random, options: dict) -> tuple[str, str]:
    hi = int(options.get("max_operand", 99))
    a, b = rng.randint(0, hi), rng.randint(0, hi)
    prompt = f"What is {a} + {b}?" + (MATH_SUFFIX if options.get("suffix", False) else "")
    response = f"<think>\n{a} + {b} = {a + b}\n</think>\n\nThe answer is \\boxed{{{a + b}}}."
    return prompt, response


def _reverse(rng: random.Random, options: dict) -> tuple[str, str]:
    n = rng.randint(int(options.get("min_len", 3)), int(options.get("max_len", 12)))
    word = "".join(rng.choice("abcdefghij") for _ in range(n))
    prompt = f"Reverse the string {word}."
    response = f"<think>\nreading {word} backwards\n</think>\n\n\\boxed{{{word[::-1]}}}"
    return prompt, response


def _count(rng: random.Random, options: dict) -> tuple[str, str]:
    n = rng.randint(1, int(options.get("max_len", 20)))
    letter = rng.choice("xyz")
    text = "".join(rng.choice("xyz") for _ in range(n))
    c = text.count(letter)
    prompt = f"How many times does {letter} occur in {text}?"
    response = f"<think>\ncounting {letter} in {text}: {c}\n</think>\n\n\\boxed{{{c}}}"
    return prompt, response


SYNTHETIC_TASKS = {"arithmetic": _arithmetic, "reverse": _reverse, "count": _count}
