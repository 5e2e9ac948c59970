"""Records → tokenized training examples: rendering, loss mask, length filter, mixture, report.

Rendering (docs/formats.md#prompt-layout): `<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n`
is the prompt; `{response}<|im_end|>` (+ EOS when the tokenizer's EOS is another token) is the
completion. The loss covers the completion and its closing tokens only, as in the authors' training
code (github.com/inclusionAI/PromptCoT): the prompt is tokenized on its own and its tokens get
no label. At evaluation `paper_prompt` ends with "…assistant\\n<think>\\n", exactly where the
training response continues after its opening "<think>\\n".
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from promptcot_mamba.train.adapters import BadRecord, Pair, adapt
from promptcot_mamba.train.recipe import DatasetSpec, PhaseSpec
from promptcot_mamba.train.sources import read_records

IM_START, IM_END = "<|im_start|>", "<|im_end|>"


@dataclass(frozen=True)
class Example:
    ids: tuple[int, ...]  # prompt + completion token ids (length L)
    n_prompt: int  # the first n_prompt ids carry no loss

    @property
    def n_loss(self) -> int:  # labelled positions: completion tokens and closing tokens
        return len(self.ids) - self.n_prompt


@dataclass
class FilterReport:
    """What happened to every raw record of a phase, per dataset entry (counted, never a crash: one bad record must not stop a long run)."""

    per_dataset: dict[str, Counter] = field(default_factory=dict)

    def count(self, dataset: str, key: str, n: int = 1) -> None:
        self.per_dataset.setdefault(dataset, Counter())[key] += n

    @property
    def totals(self) -> Counter:
        total: Counter = Counter()
        for c in self.per_dataset.values():
            total.update(c)
        return total

    def to_dict(self) -> dict:
        return {"per_dataset": {k: dict(v) for k, v in self.per_dataset.items()}, "totals": dict(self.totals)}

    def summary(self) -> str:
        t = self.totals
        bad = {k: v for k, v in t.items() if k not in ("records", "kept", "selected", "truncated")}
        return (f"{t.get('records', 0)} records, {t.get('kept', 0)} usable, {t.get('selected', 0)} selected"
                + (f", {t['truncated']} truncated" if t.get("truncated") else "")
                + (f"; dropped: {dict(sorted(bad.items()))}" if bad else ""))


class Renderer:
    """Pair → Example for one tokenizer (the ChatML turn layout of docs/formats.md#prompt-layout)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        eos = tokenizer.eos_token_id
        im_end = tokenizer.token_to_id(IM_END)
        self.closing_text = IM_END
        # EOS after <|im_end|> only when they are different tokens (docs/formats.md#prompt-layout)
        self.extra_eos = [eos] if eos is not None and eos != im_end else []

    def prompt_text(self, prompt: str) -> str:
        return f"{IM_START}user\n{prompt}{IM_END}\n{IM_START}assistant\n"

    def completion_text(self, response: str) -> str:
        return f"{response}{self.closing_text}"

    def render_many(self, pairs: list[Pair]) -> list[Example]:
        prompts = [self.prompt_text(p.prompt) for p in pairs]
        comps = [self.completion_text(p.response) for p in pairs]
        p_ids, c_ids = self._encode(prompts), self._encode(comps)
        return [Example(tuple(p) + tuple(c) + tuple(self.extra_eos), len(p)) for p, c in zip(p_ids, c_ids)]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        inner = getattr(self.tokenizer, "backend", None)  # the `tokenizers` object: batch encode in Rust
        if inner is not None and hasattr(inner, "encode_batch"):
            return [e.ids for e in inner.encode_batch(texts, add_special_tokens=False)]
        return [self.tokenizer.encode(t) for t in texts]


def load_dataset_examples(spec: DatasetSpec, renderer: Renderer, max_length: int, report: FilterReport,
                          *, drop_over_length: bool = True, batch: int = 512) -> list[Example]:
    """Read, adapt, tokenize and length-filter one dataset entry; counts go to `report`."""
    key = spec.describe()
    out: list[Example] = []
    pending: list[Pair] = []

    def flush():
        for ex in renderer.render_many(pending):
            if len(ex.ids) > max_length:
                if drop_over_length or ex.n_prompt >= max_length - 1:
                    report.count(key, "over_length")
                    continue
                ex = Example(ex.ids[:max_length], ex.n_prompt)  # right truncation, as the authors' code
                report.count(key, "truncated")
            out.append(ex)
            report.count(key, "kept")
        pending.clear()

    for rec in read_records(spec):
        report.count(key, "records")
        if not isinstance(rec, dict):
            report.count(key, "not_a_mapping")
            continue
        try:
            pending.append(adapt(rec, spec.schema, spec.options))
        except BadRecord as bad:
            report.count(key, bad.reason)
            continue
        if len(pending) >= batch:
            flush()
    flush()
    return out


def select(examples: list[Example], spec: DatasetSpec, seed: int) -> list[Example]:
    """Apply the entry's `weight` (multiplier) or `count` (absolute), deterministically."""
    n = len(examples)
    if n == 0:
        return []
    if spec.count is not None:
        target = spec.count
    elif spec.weight is not None:
        target = int(round(spec.weight * n))
    else:
        return list(examples)
    # keyed by the file's name, not its absolute path, so the same recipe selects the same examples
    # wherever the run folder or the data live (the demo's determinism test caught this)
    key = f"{spec.kind}:{Path(spec.path).name}" if spec.path else spec.describe()
    rng = random.Random(f"{seed}:{key}")
    reps, rest = divmod(target, n)
    chosen = list(examples) * reps
    chosen += [examples[i] for i in sorted(rng.sample(range(n), rest))]
    return chosen


def build_phase_examples(phase: PhaseSpec, tokenizer, seed: int) -> tuple[list[Example], FilterReport]:
    """All examples of a phase's mixture (in recipe order; the batch stream shuffles them)."""
    renderer = Renderer(tokenizer)
    report = FilterReport()
    mixture: list[Example] = []
    for spec in phase.datasets:
        usable = load_dataset_examples(spec, renderer, phase.max_length, report,
                                       drop_over_length=phase.drop_over_length)
        chosen = select(usable, spec, seed)
        report.count(spec.describe(), "selected", len(chosen))
        mixture.extend(chosen)
    # a "usable" example with one token or none cannot train anything; the filter above keeps ids
    # >= prompt + closing token, so every kept example has at least one labelled position
    return mixture, report


def loss_tokens(examples: list[Example]) -> int:
    return sum(ex.n_loss for ex in examples)


def steps_for(n_rows: int, global_batch: int, epochs: float | None, steps: int | None) -> int:
    if steps is not None:
        return steps
    return max(1, math.ceil((epochs or 1.0) * n_rows / global_batch))
