"""Typed, validated configuration of a synthesis run (one dataclass per stage, one place per knob).

A YAML/dict config mirrors these classes section by section; unknown keys are errors (a typo must
not silently fall back to a default). The shipped configs (synth/configs/*.yaml) reproduce the
paper's math and code settings (notes §1.2–1.5).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptcot_mamba.synth.prompts import CODE_LEVELS, MATH_LEVELS

KEEP_POLICIES = ("all_perfect", "any_perfect_no_bad", "majority_perfect", "no_bad", "keep_all")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass
class EndpointConfig:
    """An OpenAI-compatible endpoint; base_url/api_key fall back to OPENAI_BASE_URL/OPENAI_API_KEY."""

    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 32
    timeout_s: float = 600.0
    max_retries: int = 4


@dataclass
class ModelsConfig:
    """Model names per role (sent as `model` to the endpoint). None: the endpoint's first model."""

    extractor: str | None = None
    generator: str | None = None
    judges: list[str | None] = field(default_factory=lambda: [None])
    teacher: str | None = None
    tests: str | None = None  # writes code test inputs; default: the teacher


@dataclass
class SeedsConfig:
    path: str = "seeds/math_train_rllm.jsonl"  # relative paths resolve against PCM_BENCHMARK_DIR
    field: str = "problem"
    limit: int | None = None


@dataclass
class ConceptsConfig:
    num_concepts: int = 5
    max_tokens: int = 1024
    temperature: float = 0.0
    parse_retries: int = 2
    few_shot: bool = False  # one worked example as a prior turn (small models; prompts.example_turns)

    def __post_init__(self) -> None:
        _check(self.num_concepts >= 2, "concepts.num_concepts must be >= 2")


@dataclass
class EmbeddingsConfig:
    backend: str = "minilm"  # minilm (real sentence embeddings) | hashing (explicit fallback)
    dim: int = 256  # hashing only

    def __post_init__(self) -> None:
        _check(self.backend in ("minilm", "hashing"), f"embeddings.backend must be minilm|hashing, got {self.backend!r}")


@dataclass
class SamplingConfig:
    num_problems: int = 1000
    size: int = 5
    temperature: float = 0.2
    levels: list[str] | None = None  # None: the domain's levels

    def __post_init__(self) -> None:
        _check(self.num_problems >= 1, "sampling.num_problems must be >= 1")
        _check(self.size >= 1, "sampling.size must be >= 1")
        _check(self.temperature > 0, "sampling.temperature must be > 0")


@dataclass
class ProblemsConfig:
    prompt_style: str = "instruct"  # instruct (chat + format instructions) | paper (raw concept prompt)
    max_tokens: int = 4096
    temperature: float = 0.6
    top_p: float = 1.0
    parse_retries: int = 1
    few_shot: bool = False  # instruct style: one worked example as a prior turn
    prefill: bool = False  # instruct style: the reply starts with the rationale marker (assistant prefill)

    def __post_init__(self) -> None:
        _check(self.prompt_style in ("instruct", "paper"), "problems.prompt_style must be instruct|paper")


@dataclass
class JudgeConfig:
    keep_policy: str = "all_perfect"  # keep_all: judge and record, filter nothing (unparsable verdicts too)
    max_tokens: int = 2048
    temperature: float = 0.6
    parse_retries: int = 1
    few_shot: bool = False  # one worked judgement as a prior turn (small models)
    prefill: bool = False  # the reply starts with the first criterion's name ("FORMAT:")

    def __post_init__(self) -> None:
        _check(self.keep_policy in KEEP_POLICIES, f"judge.keep_policy must be one of {KEEP_POLICIES}")


@dataclass
class DedupConfig:
    threshold: float = 0.7
    num_perm: int = 128
    min_word_len: int = 1
    drop_numeric: bool = False


@dataclass
class DecontamConfig:
    benchmark_dir: str | None = None  # None: $PCM_BENCHMARK_DIR
    ngram: int = 8
    threshold: float = 0.5


@dataclass
class TeacherConfig:
    k: int = 4
    mode: str = "completion"  # completion: paper_prompt as raw text | chat: user message
    max_tokens: int = 16384
    temperature: float = 0.6
    top_p: float = 0.95
    format_retries: int = 2
    min_agreement: float = 0.5  # math: share of valid samples that agree with the majority answer
    min_valid: int = 1  # at least this many valid (think-format, answer present) samples
    responses_per_problem: int = 1
    num_test_inputs: int = 5  # code
    test_timeout_s: float = 5.0  # code, per run
    few_shot: bool = False  # chat mode: one worked example as a prior turn
    prefill: bool = False  # chat mode: the reply starts with "<think>\n" (completion mode always does)
    # Budget forcing (s1, Muennighoff et al. 2025): a sample whose reasoning is still open when it stops
    # (max_tokens or EOS) gets "</think>" and an answer opening appended, and the model writes the answer
    # in one more call of `forced_answer_tokens`. Off in the paper's settings; for small or non-reasoning
    # teachers that rarely close their own think block. Forced samples are marked `forced` on the record.
    budget_forcing: bool = False
    forced_answer_tokens: int = 32

    def __post_init__(self) -> None:
        _check(self.k >= 1, "teacher.k must be >= 1")
        _check(self.mode in ("completion", "chat"), "teacher.mode must be completion|chat")
        _check(0.0 <= self.min_agreement <= 1.0, "teacher.min_agreement must be in [0, 1]")


@dataclass
class SynthConfig:
    domain: str = "math"
    seed: int = 0
    chunk_size: int = 64
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    concepts: ConceptsConfig = field(default_factory=ConceptsConfig)
    embeddings: EmbeddingsConfig = field(default_factory=EmbeddingsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    problems: ProblemsConfig = field(default_factory=ProblemsConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    def __post_init__(self) -> None:
        _check(self.domain in ("math", "code"), f"domain must be math|code, got {self.domain!r}")
        _check(self.chunk_size >= 1, "chunk_size must be >= 1")

    @property
    def levels(self) -> list[str]:
        if self.sampling.levels:
            return list(self.sampling.levels)
        return list(MATH_LEVELS if self.domain == "math" else CODE_LEVELS)

    # --------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, *, where: str = "config") -> SynthConfig:
        return _build(cls, d or {}, where)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SynthConfig:
        import yaml

        path = Path(path)
        if not path.exists():
            shipped = Path(__file__).with_name("configs") / path.name
            shipped_yaml = shipped.with_suffix(".yaml") if not shipped.suffix else shipped
            if shipped_yaml.exists():
                path = shipped_yaml
            else:
                raise FileNotFoundError(f"synthesis config {path} not found (shipped: {', '.join(shipped_configs())})")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["endpoint"].pop("api_key", None)  # never write a key into manifests
        return d


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in Path(__file__).with_name("configs").glob("*.yaml"))


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if sub is not None and dataclasses.is_dataclass(sub) and isinstance(sub, type):
            kwargs[name] = _build(sub, value or {}, f"{where}.{name}")
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
