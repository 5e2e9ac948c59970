"""Incremental detokenization with stop strings, per sequence.

Decoding the whole output after every token costs O(n²) over a 65k-token answer; instead we decode
a short window (vLLM's prefix/read offsets): the text of ids[prefix:] minus the text of
ids[prefix:read] is the new text, which is exact for byte-level and SentencePiece decoders because
the window starts at a token boundary already emitted. A window that ends inside a multi-byte
character decodes to U+FFFD and is held back until the character completes.

Stop strings: text that could still turn out to be the start of a stop string is held back, so the
streamed deltas concatenate to exactly the final text (which ends before the stop string, or with it
when `include_stop_str_in_output`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from promptcot_mamba.text.tokenizer import Tokenizer


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, *, stop: Sequence[str] = (), include_stop: bool = False,
                 skip_special_tokens: bool = True, special_ids: frozenset[int] = frozenset()):
        self.tok = tokenizer
        self.stop = tuple(stop)
        self.include_stop = include_stop
        self.skip_special = skip_special_tokens
        self.special_ids = special_ids
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far (the final text may be cut at a stop string)
        self.emitted = 0  # characters of self.text already handed out
        self.stopped_by: str | None = None
        self._prefix = 0
        self._read = 0
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self._search_from = 0

    def _decode(self, ids: list[int]) -> str:
        # skip only the chat/control tokens the engine names; <think> and </think> must stay in the text
        if self.skip_special and self.special_ids:
            ids = [i for i in ids if i not in self.special_ids]
        return self.tok.decode(ids, skip_special_tokens=False)

    def add(self, token_id: int, *, check_stop: bool = True) -> str:
        """Feed one token; return the text that may be shown now ("" when held back)."""
        if self.stopped_by is not None:
            return ""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        new_text = self._decode(self.ids[self._prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.text += new_text[len(prefix_text):]
            self._prefix, self._read = self._read, len(self.ids)
        if self.stop and check_stop:
            self._check_stop()
        else:
            self._search_from = len(self.text)  # stop strings count only from where checking starts
        return self._release(final=self.stopped_by is not None)

    def _check_stop(self) -> None:
        start = max(0, self._search_from - self._hold)
        best = None
        for s in self.stop:
            j = self.text.find(s, start)
            if j >= 0 and (best is None or j < best[0]):
                best = (j, s)
        if best is not None:
            j, s = best
            self.stopped_by = s
            self.text = self.text[: j + len(s)] if self.include_stop else self.text[:j]
        self._search_from = len(self.text)

    def _release(self, final: bool) -> str:
        limit = len(self.text) if final or not self.stop else max(self.emitted, len(self.text) - self._hold)
        out = self.text[self.emitted:limit]
        self.emitted = max(self.emitted, limit)
        return out

    def flush(self) -> str:
        """At the end of the sequence: whatever was held back."""
        if self.stopped_by is None and self._read < len(self.ids):
            # an incomplete character at the very end: decode what is there
            rest = self._decode(self.ids[self._prefix:])
            prefix_text = self._decode(self.ids[self._prefix:self._read])
            if len(rest) > len(prefix_text):
                self.text += rest[len(prefix_text):]
        return self._release(final=True)


def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's): the printable character each byte is written as in the
    vocabulary (printable bytes as themselves, the others as U+0100 onwards)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTE_OF = _byte_level_alphabet()
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte tokens


@functools.lru_cache(maxsize=1 << 17)
def token_bytes(tokenizer: Tokenizer, token_id: int) -> bytes:
    """The bytes token `token_id` stands for: what OpenAI's logprobs `bytes` carry, so that the bytes of
    tokens that split a character add up to it (decoding such a token alone gives U+FFFD). Read from the
    vocabulary: byte-level BPE pieces map back through their alphabet, SentencePiece byte tokens
    (<0xE2>) are their byte, added tokens their text; any other piece is its decoded text."""
    hf = getattr(tokenizer, "backend", None)  # the tokenizers.Tokenizer inside text.tokenizer.Tokenizer
    piece = hf.id_to_token(token_id) if hf is not None else None
    if piece is None or token_id in hf.get_added_tokens_decoder():
        return (piece if piece is not None else tokenizer.decode([token_id])).encode()
    from tokenizers import decoders

    if isinstance(hf.decoder, decoders.ByteLevel) and all(c in _BYTE_OF for c in piece):
        return bytes(_BYTE_OF[c] for c in piece)
    m = _BYTE_FALLBACK.fullmatch(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    return tokenizer.decode([token_id]).encode()
