"""Typed, validated configuration of a synthesis run: one section per stage, one place per knob.

A YAML file or dict mirrors these classes section by section and is validated by the shared
mechanism of common/config.py: every default lives on its field, and an unknown key or a bad value
is an error naming the field path and the file (a typo must not fall back to a default silently).
The shipped configs (synth/configs/*.yaml) reproduce the settings of the PromptCoT reference scripts
(github.com/inclusionAI/PromptCoT) for math and code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from promptcot_mamba.common.config import (
    ConfigModel,
    Fraction,
    Int,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Shipped,
    apply_overrides,
    load_config,
    validate_config,
)
from promptcot_mamba.synth.prompts import CODE_LEVELS, MATH_LEVELS

SHIPPED = Shipped(Path(__file__).with_name("configs"), "synthesis config")


class EndpointConfig(ConfigModel):
    """An OpenAI-compatible endpoint; base_url/api_key fall back to OPENAI_BASE_URL/$api_key_env."""

    base_url: str | None = None
    api_key: str | None = Field(None, repr=False)  # never written to manifests (SynthConfig.to_dict)
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: PosInt = 32
    timeout_s: PosFloat = 600.0
    max_retries: NonNegInt = 4


class ModelsConfig(ConfigModel):
    """Model names per role (sent as `model` to the endpoint). None: the endpoint's first model."""

    extractor: str | None = None
    generator: str | None = None
    judges: list[str | None] = [None]
    teacher: str | None = None
    tests: str | None = None  # writes code test inputs; default: the teacher


class SeedsConfig(ConfigModel):
    path: str = "seeds/math_train_rllm.jsonl"  # relative paths resolve against PCM_BENCHMARK_DIR
    field: str = "problem"
    limit: NonNegInt | None = None  # 0 or None: every seed


class ConceptsConfig(ConfigModel):
    num_concepts: Int = Field(5, ge=2)
    max_tokens: PosInt = 1024
    temperature: NonNegFloat = 0.0
    parse_retries: NonNegInt = 2
    few_shot: bool = False  # one worked example as a prior turn (small models; prompts.example_turns)


class EmbeddingsConfig(ConfigModel):
    backend: Literal["minilm", "hashing"] = "minilm"  # minilm: real sentence embeddings; hashing: fallback
    dim: PosInt = 256  # hashing only


class ComboSamplingConfig(ConfigModel):
    """The concept-combination sampler (YAML section `sampling`)."""

    num_problems: PosInt = 1000
    size: PosInt = 5
    temperature: PosFloat = 0.2
    levels: list[str] | None = None  # None: the domain's levels


class ProblemsConfig(ConfigModel):
    prompt_style: Literal["instruct", "paper"] = "instruct"  # instruct: chat + format; paper: raw concept prompt
    max_tokens: PosInt = 4096
    temperature: NonNegFloat = 0.6
    top_p: PosFloat = Field(1.0, le=1)
    parse_retries: NonNegInt = 1
    few_shot: bool = False  # instruct style: one worked example as a prior turn
    prefill: bool = False  # instruct style: the reply starts with the rationale marker (assistant prefill)


class JudgeConfig(ConfigModel):
    # all_perfect: the reference's filter (every judge says "perfect"); keep_all: judge and record,
    # filter nothing (unparsable verdicts too)
    keep_policy: Literal["all_perfect", "any_perfect_no_bad", "majority_perfect", "no_bad",
                         "keep_all"] = "all_perfect"
    max_tokens: PosInt = 2048
    temperature: NonNegFloat = 0.6
    parse_retries: NonNegInt = 1
    few_shot: bool = False  # one worked judgement as a prior turn (small models)
    prefill: bool = False  # the reply starts with the first criterion's name ("FORMAT:")


class DedupConfig(ConfigModel):
    threshold: PosFloat = Field(0.7, lt=1)
    num_perm: Int = Field(128, ge=16)
    min_word_len: PosInt = 1
    drop_numeric: bool = False


class DecontamConfig(ConfigModel):
    benchmark_dir: str | None = None  # None: $PCM_BENCHMARK_DIR
    ngram: Int = Field(8, ge=3)
    threshold: PosFloat = Field(0.5, le=1)


class TeacherConfig(ConfigModel):
    k: PosInt = 4
    mode: Literal["completion", "chat"] = "completion"  # completion: paper_prompt as raw text; chat: user turn
    max_tokens: PosInt = 16384
    temperature: NonNegFloat = 0.6
    top_p: PosFloat = Field(0.95, le=1)
    format_retries: NonNegInt = 2
    min_agreement: Fraction = 0.5  # math: share of valid samples that agree with the majority answer
    min_valid: NonNegInt = 1  # at least this many (and at least 1) valid samples: think format, answer present
    responses_per_problem: PosInt = 1
    num_test_inputs: PosInt = 5  # code
    test_timeout_s: PosFloat = 5.0  # code, per run
    few_shot: bool = False  # chat mode: one worked example as a prior turn
    prefill: bool = False  # chat mode: the reply starts with "<think>\n" (completion mode always does)
    # Budget forcing (s1, Muennighoff et al. 2025): a sample whose reasoning is still open when it stops
    # (max_tokens or EOS) gets "</think>" and an answer opening appended, and the model writes the answer
    # in one more call of `forced_answer_tokens`. Off in the paper's settings; for small or non-reasoning
    # teachers that rarely close their own think block. Forced samples are marked `forced` on the record.
    budget_forcing: bool = False
    forced_answer_tokens: PosInt = 32


class SynthConfig(ConfigModel):
    domain: Literal["math", "code"] = "math"
    seed: Int = 0
    chunk_size: PosInt = 64
    endpoint: EndpointConfig = EndpointConfig()
    models: ModelsConfig = ModelsConfig()
    seeds: SeedsConfig = SeedsConfig()
    concepts: ConceptsConfig = ConceptsConfig()
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    sampling: ComboSamplingConfig = ComboSamplingConfig()
    problems: ProblemsConfig = ProblemsConfig()
    judge: JudgeConfig = JudgeConfig()
    dedup: DedupConfig = DedupConfig()
    decontam: DecontamConfig = DecontamConfig()
    teacher: TeacherConfig = TeacherConfig()

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # a YAML section whose keys are all commented out (`endpoint:`) reads as None: its defaults
        if isinstance(data, Mapping):
            sections = {n for n, f in cls.model_fields.items() if isinstance(f.default, ConfigModel)}
            return {k: {} if v is None and k in sections else v for k, v in data.items()}
        return data

    @property
    def levels(self) -> list[str]:
        if self.sampling.levels:
            return list(self.sampling.levels)
        return list(MATH_LEVELS if self.domain == "math" else CODE_LEVELS)

    # --------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, *, where: str = "config",
                  overrides: Mapping[str, Any] | Iterable[str] = ()) -> SynthConfig:
        """A config from a dict (sections as nested dicts); `where` names it in errors."""
        return validate_config(cls, apply_overrides(d or {}, overrides, source=where), source=where)

    @classmethod
    def from_yaml(cls, path: str | Path, *, overrides: Mapping[str, Any] | Iterable[str] = ()) -> SynthConfig:
        """A YAML file, or a shipped config by name (`pcm synth configs`), with dotted overrides."""
        return load_config(cls, path, shipped=SHIPPED, overrides=overrides)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain data, without the endpoint's api_key (this goes into manifests)."""
        return self.model_dump(exclude={"endpoint": {"api_key"}})


def shipped_configs() -> list[str]:
    return SHIPPED.names()
