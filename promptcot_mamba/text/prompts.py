"""The prompt format of the paper's evaluation: ChatML with `<think>\\n` prefilled, as in the authors'
pre-rendered prompts (`PromptCoT_Mamba/data/*.jsonl` in https://github.com/inclusionAI/PromptCoT). The
layout is in docs/formats.md, "Prompt layout"."""

from __future__ import annotations

MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def paper_prompt(problem: str, *, math: bool = True) -> str:
    """`<|im_start|>user\\n{problem}{suffix}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n`."""
    suffix = MATH_SUFFIX if math else ""
    return f"<|im_start|>user\n{problem}{suffix}<|im_end|>\n<|im_start|>assistant\n<think>\n"
