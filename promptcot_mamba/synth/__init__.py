"""PromptCoT data synthesis (paper §2.2): seed problems → concepts → concept combinations →
rationale + problem → judged → deduplicated → decontaminated → teacher long-CoT solutions → SFT pairs.

Python API (the CLI `pcm synth` is a thin layer over it):
    run_pipeline(config, clients, out_dir)                       the whole chain → out_dir/sft.jsonl
    run_stage(name, in_path, out_path, clients, config)           one stage, resumable, manifest last
`config` is a SynthConfig, a dict or a YAML path (shipped: "math", "code", "tiny"); `clients` is one
LLMClient for every role or a dict {extractor, generator, judges: [...], teacher, tests, default}.
Every LLM request carries metadata={"stage": name, ...structured inputs...}.
"""

from promptcot_mamba.synth.config import SynthConfig
from promptcot_mamba.synth.pipeline import PipelineResult, run_pipeline
from promptcot_mamba.synth.stages import STAGES, run_stage

__all__ = ["SynthConfig", "run_pipeline", "run_stage", "PipelineResult", "STAGES"]
