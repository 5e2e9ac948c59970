"""Chat formatting glue: messages → prompt text through the model's chat template, and the
reasoning split of a chat answer into `reasoning_content` and `content`.

The split itself is `text.reasoning.split_reasoning` (the one place that knows the `<think>` layout,
shared with evaluation); `ReasoningStream` applies the same rule to a stream of text deltas.
"""

from __future__ import annotations

from collections.abc import Sequence

from promptcot_mamba.text.reasoning import THINK_CLOSE, THINK_OPEN, split_reasoning

TEMPLATE_VARIABLES = frozenset({"messages", "add_generation_prompt", "bos_token", "eos_token"})  # set by us


def render_chat(tokenizer, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True,
                continue_final_message: bool = False, template_kwargs: dict | None = None) -> str:
    """The prompt text for `messages`; template errors become ValueError naming the template.

    `continue_final_message` (vLLM's name): the last message is the start of the assistant's reply,
    which the model continues. It is rendered as the conversation before it with the generation prompt,
    followed by that text verbatim, so the reply's end-of-turn marker is never inserted.
    `template_kwargs` (vLLM's `chat_template_kwargs`): further variables for the template, other than
    the ones it is always given (TEMPLATE_VARIABLES)."""
    kwargs = dict(template_kwargs or {})
    if continue_final_message:
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError("continue_final_message needs the last message to be the assistant's")
        if add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt cannot both be true")
        return render_chat(tokenizer, messages[:-1], template_kwargs=kwargs) + (messages[-1].get("content") or "")
    try:
        return tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, **kwargs)
    except ValueError:
        raise
    except Exception as err:  # jinja2 errors: a bad template or messages it cannot render
        raise ValueError(f"the chat template could not render these messages: {err}") from None


def prompt_opens_think(prompt_text: str) -> bool:
    """Whether the prompt ends inside a think block (the paper's `<think>\\n` prefill)."""
    return prompt_text.rstrip().endswith(THINK_OPEN)


def split_answer(completion: str, *, prompt_text: str) -> tuple[str | None, str | None]:
    """(reasoning_content, content) of a finished chat answer. Without any think block the whole text
    is content; a think block that never closed is all reasoning (content None)."""
    opened = prompt_opens_think(prompt_text)
    if not opened and THINK_OPEN not in completion and THINK_CLOSE not in completion:
        return None, completion
    s = split_reasoning(completion, prefilled_open=True)
    return s.reasoning, s.answer


class ReasoningStream:
    """Route streamed text deltas to ("reasoning_content", text) or ("content", text) pieces."""

    def __init__(self, prompt_text: str):
        self.in_reasoning = prompt_opens_think(prompt_text)
        self.started = self.in_reasoning
        self._carry = ""

    def feed(self, delta: str, *, final: bool = False) -> list[tuple[str, str]]:
        text = self._carry + delta
        self._carry = ""
        out: list[tuple[str, str]] = []
        if not self.started:
            stripped = text.lstrip()
            if len(stripped) < len(THINK_OPEN) and THINK_OPEN.startswith(stripped) and stripped and not final:
                self._carry = text  # might become "<think>"
                return out
            self.started = True
            if stripped.startswith(THINK_OPEN):
                self.in_reasoning = True
                text = stripped[len(THINK_OPEN):]
        if self.in_reasoning:
            j = text.find(THINK_CLOSE)
            if j >= 0:
                if text[:j]:
                    out.append(("reasoning_content", text[:j]))
                self.in_reasoning = False
                rest = text[j + len(THINK_CLOSE):]
                if rest:
                    out.append(("content", rest))
                return out
            keep = 0 if final else _partial_suffix(text, THINK_CLOSE)
            if text[:len(text) - keep]:
                out.append(("reasoning_content", text[:len(text) - keep]))
            self._carry = text[len(text) - keep:]
            return out
        if text:
            out.append(("content", text))
        return out


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-k:]):
            return k
    return 0
