"""Chat glue: the reasoning split of finished and streamed answers agrees with text.reasoning."""

from __future__ import annotations

import pytest

from promptcot_mamba.generate.tiny import build_tiny_tokenizer
from promptcot_mamba.serve.chat import ReasoningStream, render_chat, split_answer
from promptcot_mamba.text.prompts import paper_prompt

CASES = [
    # (prompt text, completion, (reasoning, content))
    (paper_prompt("1+1?"), "add them\n</think>\n\nThe answer is \\boxed{2}.", ("add them", "The answer is \\boxed{2}.")),
    (paper_prompt("1+1?"), "still thinking, never closed", ("still thinking, never closed", None)),
    ("<|im_start|>assistant\n", "<think>hmm</think>\nok", ("hmm", "ok")),
    ("<|im_start|>assistant\n", "plain answer", (None, "plain answer")),
]


@pytest.mark.parametrize("prompt,completion,expected", CASES)
def test_split_answer(prompt, completion, expected):
    assert split_answer(completion, prompt_text=prompt) == expected


@pytest.mark.parametrize("prompt,completion,expected", CASES)
@pytest.mark.parametrize("piece", [1, 3, 7])
def test_streamed_split_matches_final(prompt, completion, expected, piece):
    rs = ReasoningStream(prompt)
    parts: dict[str, str] = {}
    chunks = [completion[i:i + piece] for i in range(0, len(completion), piece)]
    for j, c in enumerate(chunks):
        for kind, text in rs.feed(c, final=j == len(chunks) - 1):
            parts[kind] = parts.get(kind, "") + text
    reasoning, content = expected
    assert (parts.get("reasoning_content", "").strip() or None) == (reasoning or None)
    assert (parts.get("content", "").strip() or None) == content


def test_render_chat_uses_the_template():
    tok = build_tiny_tokenizer()
    text = render_chat(tok, [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    assert text == "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n"
