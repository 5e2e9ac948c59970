"""The paper's prompt format (§3.1, DESIGN.md): ChatML with `<think>\\n` prefilled."""

from __future__ import annotations

MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def paper_prompt(problem: str, *, math: bool = True, think_prefill: bool = True) -> str:
    """`<|im_start|>user\\n{problem}{suffix}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n`."""
    suffix = MATH_SUFFIX if math else ""
    prompt = f"<|im_start|>user\n{problem}{suffix}<|im_end|>\n<|im_start|>assistant\n"
    return prompt + ("<think>\n" if think_prefill else "")
