"""A thin tokenizer: a `tokenizers.Tokenizer` from tokenizer.json plus the chat template and special
token ids from tokenizer_config.json (the files a Hugging Face model folder carries)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from promptcot_mamba.common.files import atomic_write_json, atomic_write_text
from promptcot_mamba.text.prompts import CHATML_TEMPLATE


class Tokenizer:
    def __init__(self, tok: _HFTokenizer, *, chat_template: str | None = None, eos_token: str | None = None,
                 bos_token: str | None = None, pad_token: str | None = None):
        self._tok = tok
        self.chat_template = chat_template or CHATML_TEMPLATE
        self.eos_token = eos_token
        self.bos_token = bos_token
        self.pad_token = pad_token

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Tokenizer:
        folder = Path(folder)
        f = folder / "tokenizer.json"
        if not f.exists():
            raise FileNotFoundError(f"{folder}: no tokenizer.json")
        try:
            tok = _HFTokenizer.from_file(str(f))
        except Exception as err:
            raise ValueError(f"{f}: not a valid tokenizers file: {err}") from None
        cfg = {}
        cf = folder / "tokenizer_config.json"
        if cf.exists():
            cfg = json.loads(cf.read_text(encoding="utf-8"))
        tmpl = cfg.get("chat_template")
        if (folder / "chat_template.jinja").exists():
            tmpl = (folder / "chat_template.jinja").read_text(encoding="utf-8")

        def tokname(v):
            return v.get("content") if isinstance(v, dict) else v

        return cls(tok, chat_template=tmpl, eos_token=tokname(cfg.get("eos_token")),
                   bos_token=tokname(cfg.get("bos_token")), pad_token=tokname(cfg.get("pad_token")))

    def save(self, folder: str | Path) -> None:
        """tokenizer.json and tokenizer_config.json, each replaced atomically."""
        folder = Path(folder)
        atomic_write_text(folder / "tokenizer.json", self._tok.to_str(pretty=True))  # what `.save` writes
        cfg = {"chat_template": self.chat_template, "eos_token": self.eos_token, "bos_token": self.bos_token,
               "pad_token": self.pad_token, "tokenizer_class": "PreTrainedTokenizerFast"}
        atomic_write_json(folder / "tokenizer_config.json", {k: v for k, v in cfg.items() if v is not None})

    # ------------------------------------------------------------------------------------------
    @property
    def backend(self) -> _HFTokenizer:
        """The `tokenizers.Tokenizer` this wraps, for what it does best: `encode_batch`/`decode_batch`
        run in Rust without the GIL, and the vocabulary's own pieces (`id_to_token`)."""
        return self._tok

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    @property
    def eos_token_id(self) -> int | None:
        return self.token_to_id(self.eos_token) if self.eos_token else None

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True,
                            **extra) -> str:
        import jinja2

        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        env.globals["raise_exception"] = _raise
        return env.from_string(self.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "", **extra)


def _raise(msg: str):
    raise ValueError(msg)
