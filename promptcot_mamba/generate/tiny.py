"""A tiny random model folder with a real tokenizer, for tests, smoke runs and examples.

`save_tiny_model(folder)` writes what `save_pretrained` writes for a real checkpoint (config.json,
safetensors, tokenizer.json, tokenizer_config.json with the ChatML template), so `pcm serve --model
folder` and `Mamba2LM.from_pretrained(folder)` take it like any other. The tokenizer is a byte-level
BPE trained on a few sentences with the chat and reasoning special tokens. The embeddings are drawn
with a large spread and the head is untied, so the random model's next-token distributions are
peaked without merely repeating the input token: greedy outputs then do not hinge on float rounding,
which makes batched-versus-alone comparisons meaningful.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "Let x be a real number such that x + 2 = 5. Then x = 3, so the answer is \\boxed{3}.",
    "A Mamba state has a fixed size, so every token costs the same time and memory.",
    "def add(a, b):\n    return a + b\n",
    "user assistant system hello world, how are you today? I am fine, thank you.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
]


def build_tiny_tokenizer(vocab_size: int = 384):
    """A `Tokenizer` (promptcot_mamba.text) over a byte-level BPE with ChatML special tokens."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from promptcot_mamba.text.tokenizer import Tokenizer

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return Tokenizer(tok, eos_token="<|im_end|>", bos_token=None, pad_token="<|endoftext|>")


def build_tiny_model(tokenizer=None, *, seed: int = 0, config: str = "tiny", embed_std: float = 1.0,
                     head_std: float = 0.4, **overrides):
    """A random `Mamba2LM` sized to the tokenizer's vocabulary, with `model.tokenizer` set."""
    import torch

    from promptcot_mamba.model.config import named_config
    from promptcot_mamba.model.lm import Mamba2LM

    tokenizer = tokenizer or build_tiny_tokenizer()
    overrides.setdefault("tie_word_embeddings", False)
    cfg = named_config(config, vocab_size=tokenizer.vocab_size,
                       eos_token_id=tokenizer.eos_token_id, **overrides)
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # seeded, leaving the caller's RNG as it was
        torch.manual_seed(seed)
        model = Mamba2LM(cfg)
        model.backbone.embeddings.weight.normal_(0.0, embed_std)
        if not cfg.tie_word_embeddings:
            model.lm_head.weight.normal_(0.0, head_std)
    model.tokenizer = tokenizer
    return model.eval()


def save_tiny_model(folder: str | Path, *, seed: int = 0, config: str = "tiny", **overrides) -> Path:
    """Write a tiny random model folder (weights + tokenizer) and return its path."""
    model = build_tiny_model(seed=seed, config=config, **overrides)
    return model.save_pretrained(folder)
