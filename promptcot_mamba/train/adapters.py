"""Record schemas → (prompt, response): our SFT records and the three open datasets of the paper.

Each adapter returns `Pair(prompt, response)` or raises `BadRecord(reason)`; the filter report
counts reasons instead of crashing (one bad record must not stop a long run). Field layouts follow the Hub dataset cards:

- `sft` (ours, docs/formats.md#sft-records): {"id", "prompt", "response", "source", "provenance"}.
  Also accepted: {"prompt", "completion"} (the layout the PromptCoT authors' training code reads).
- `openthoughts2` (open-thoughts/OpenThoughts2-1M): {"conversations": [{"from": "user"|"human",
  "value"}, {"from": "assistant"|"gpt", "value"}], "question", "source"}; `messages` with
  role/content (OpenThoughts3) is read too. The assistant turn holds `<think>…</think>` then the answer.
- `opencodereasoning` (nvidia/OpenCodeReasoning): {"id", "input", "output", "solution", "source",
  "difficulty", ...}. `output` is the R1 response with its think block. split_1 rows carry
  input "-" (the question lives in another dataset): those count as `missing_question`.
- `openmathreasoning` (nvidia/OpenMathReasoning): {"problem", "generated_solution",
  "expected_answer", "inference_mode" (cot|tir|genselect), "problem_type", ...}. By default only
  `cot` rows are used (option `inference_mode`), and the paper's math suffix is appended.
- `auto`: picks one of the above from the fields present.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from promptcot_mamba.common.files import BAD
from promptcot_mamba.text.prompts import MATH_SUFFIX


class BadRecord(ValueError):
    """A record that cannot become a training example; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Pair:
    prompt: str  # the user turn's content
    response: str  # the assistant turn: "<think>\n…\n</think>\n\nanswer"
    source: str = ""


def _text(rec: dict, key: str, reason: str) -> str:
    v = rec.get(key)
    if v is None or not isinstance(v, str):
        raise BadRecord(reason, f"field {key!r} missing or not a string")
    return v


def _check(prompt: str, response: str) -> None:
    if not prompt.strip():
        raise BadRecord("empty_prompt")
    if not response.strip():
        raise BadRecord("empty_completion")


def adapt_sft(rec: dict, options: dict) -> Pair:
    prompt = _text(rec, "prompt", "missing_prompt")
    if "response" in rec:
        response = _text(rec, "response", "missing_response")
    else:
        response = _text(rec, "completion", "missing_response")
    _check(prompt, response)
    return Pair(prompt, response, str(rec.get("source", "")))


def adapt_openthoughts2(rec: dict, options: dict) -> Pair:
    turns = rec.get("conversations")
    role_key, text_key = "from", "value"
    if turns is None:
        turns, role_key, text_key = rec.get("messages"), "role", "content"
    if not isinstance(turns, list) or not turns:
        raise BadRecord("missing_conversations")
    user = next((t for t in turns if isinstance(t, dict) and t.get(role_key) in ("user", "human")), None)
    asst = next((t for t in turns if isinstance(t, dict) and t.get(role_key) in ("assistant", "gpt")), None)
    if user is None or not isinstance(user.get(text_key), str):
        raise BadRecord("missing_prompt")
    if asst is None or not isinstance(asst.get(text_key), str):
        raise BadRecord("missing_response")
    prompt, response = user[text_key], asst[text_key]
    _check(prompt, response)
    return Pair(prompt, _normalise_think(response), str(rec.get("source", "openthoughts2")))


def adapt_opencodereasoning(rec: dict, options: dict) -> Pair:
    prompt = _text(rec, "input", "missing_question")
    if prompt.strip() in ("", "-"):  # split_1: the question must be joined from TACO/APPS etc.
        raise BadRecord("missing_question", "input is '-' (split_1 row without its question)")
    response = _text(rec, "output", "missing_response")
    _check(prompt, response)
    return Pair(prompt, _normalise_think(response), str(rec.get("source", "opencodereasoning")))


def adapt_openmathreasoning(rec: dict, options: dict) -> Pair:
    wanted = options.get("inference_mode", "cot")
    mode = rec.get("inference_mode")
    if wanted and mode is not None and mode != wanted:
        raise BadRecord("other_inference_mode", f"{mode!r} (kept: {wanted!r})")
    problem = _text(rec, "problem", "missing_prompt")
    response = _text(rec, "generated_solution", "missing_response")
    _check(problem, response)
    suffix = MATH_SUFFIX if options.get("math_suffix", True) else ""
    return Pair(problem + suffix, _normalise_think(response), str(rec.get("problem_source", "openmathreasoning")))


def _normalise_think(response: str) -> str:
    # R1-style outputs sometimes omit the opening tag (the template prefilled it); our rendering
    # expects the response to open the think block itself, as the SFT record does.
    s = response.lstrip()
    if "</think>" in s and not s.startswith("<think>"):
        return "<think>\n" + s
    return response


ADAPTERS: dict[str, Callable[[dict, dict], Pair]] = {
    "sft": adapt_sft,
    "openthoughts2": adapt_openthoughts2,
    "opencodereasoning": adapt_opencodereasoning,
    "openmathreasoning": adapt_openmathreasoning,
}


def detect_schema(rec: dict) -> str | None:
    if "conversations" in rec or "messages" in rec:
        return "openthoughts2"
    if "generated_solution" in rec:
        return "openmathreasoning"
    if "input" in rec and "output" in rec:
        return "opencodereasoning"
    if "prompt" in rec and ("response" in rec or "completion" in rec):
        return "sft"
    return None


def adapt(rec: dict, schema: str, options: dict | None = None) -> Pair:
    """One raw record → Pair, or BadRecord."""
    if BAD in rec:  # a reader's marker for an unparsable line
        raise BadRecord("unparsable", rec[BAD])
    if schema == "auto":
        found = detect_schema(rec)
        if found is None:
            raise BadRecord("unknown_schema", f"fields {sorted(rec)[:8]}")
        schema = found
    try:
        fn = ADAPTERS[schema]
    except KeyError:
        raise ValueError(f"unknown record schema {schema!r} (known: {sorted(ADAPTERS)} or auto)") from None
    return fn(rec, options or {})
