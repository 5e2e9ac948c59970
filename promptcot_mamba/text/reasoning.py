"""The one place that knows how a reasoning completion is laid out: `<think> … </think> answer`.

Evaluation grades only the text after the *last* `</think>`; a completion without one has no answer,
because grading text inside an unfinished thought credits drafts the model never committed to. The
server's reasoning split and the synthesis format checks use the same function so the three never
disagree. The layout is in docs/formats.md, "Prompt layout".
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class ReasoningSplit:
    reasoning: str  # text inside the think block (without the tags); "" when there is none
    answer: str | None  # text after the last </think>; None when the completion never closed it

    @property
    def closed(self) -> bool:
        return self.answer is not None


def split_reasoning(completion: str, *, prefilled_open: bool = True) -> ReasoningSplit:
    """Split a completion into reasoning and answer.

    `prefilled_open`: the paper's prompt ends with `<think>\\n`, so the completion usually starts
    inside the think block without repeating the opening tag.
    """
    idx = completion.rfind(THINK_CLOSE)
    if idx < 0:
        body = completion
        if body.lstrip().startswith(THINK_OPEN):
            body = body.lstrip()[len(THINK_OPEN):]
        return ReasoningSplit(reasoning=body.strip() if prefilled_open else "", answer=None)
    head = completion[:idx]
    start = head.find(THINK_OPEN)
    reasoning = head[start + len(THINK_OPEN):] if start >= 0 else head
    return ReasoningSplit(reasoning=reasoning.strip(), answer=completion[idx + len(THINK_CLOSE):].strip())
