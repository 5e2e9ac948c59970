"""A built-in byte-level tokenizer (`tokenizer: builtin:bytes`) for synthetic CPU runs and tests.

Token id b is byte b (0–255), then the ChatML specials. Built with the `tokenizers` library, so it
is an ordinary `Tokenizer` that saves a tokenizer.json next to an exported checkpoint and loads
back with `Tokenizer.from_pretrained` (or transformers' `PreTrainedTokenizerFast`).
"""

from __future__ import annotations

from promptcot_mamba.text.tokenizer import Tokenizer

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's printable stand-ins for the 256 bytes, which tokenizers' ByteLevel pre-tokenizer emits
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def byte_tokenizer() -> Tokenizer:
    """259 tokens: 256 bytes, <|endoftext|> (256), <|im_start|> (257), <|im_end|> (258, the EOS)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    table = _bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    return Tokenizer(tok, eos_token="<|im_end|>", bos_token=None, pad_token="<|endoftext|>")
