"""Text conventions shared by generation, evaluation, synthesis and training."""

from promptcot_mamba.text.prompts import MATH_SUFFIX, paper_prompt
from promptcot_mamba.text.reasoning import THINK_CLOSE, THINK_OPEN, split_reasoning

__all__ = ["THINK_OPEN", "THINK_CLOSE", "split_reasoning", "MATH_SUFFIX", "paper_prompt"]
