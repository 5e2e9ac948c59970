"""Malformed checkpoints fail with one clear error naming the file, key and shapes."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from promptcot_mamba import Mamba2LM
from promptcot_mamba.model.checkpoint import CheckpointError


@pytest.fixture()
def saved(tmp_path):
    Mamba2LM("tiny").save_pretrained(tmp_path)
    return tmp_path


def _edit_weights(folder, fn):
    sd = load_file(folder / "model.safetensors")
    fn(sd)
    save_file(sd, folder / "model.safetensors")


def test_missing_key(saved):
    _edit_weights(saved, lambda sd: sd.pop("backbone.layers.1.mixer.A_log"))
    with pytest.raises(CheckpointError, match=r"missing.*backbone\.layers\.1\.mixer\.A_log"):
        Mamba2LM.from_pretrained(saved)


def test_unexpected_key(saved):
    _edit_weights(saved, lambda sd: sd.__setitem__("backbone.layers.9.mixer.D", torch.zeros(8)))
    with pytest.raises(CheckpointError, match="unexpected"):
        Mamba2LM.from_pretrained(saved)


def test_shape_mismatch_names_key_and_shapes(saved):
    _edit_weights(saved, lambda sd: sd.__setitem__("backbone.layers.0.mixer.in_proj.weight", torch.zeros(10, 64)))
    with pytest.raises(CheckpointError, match=r"in_proj\.weight has shape \(10, 64\) but the config implies"):
        Mamba2LM.from_pretrained(saved)


def test_config_that_does_not_match_weights(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["state_size"] = 32
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        Mamba2LM.from_pretrained(saved)


def test_truncated_safetensors(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Mamba2LM.from_pretrained(saved)


def test_garbage_config(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Mamba2LM.from_pretrained(saved)


def test_wrong_model_type(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["model_type"] = "llama"
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a Mamba-2 model"):
        Mamba2LM.from_pretrained(saved)


def test_invalid_config_value_names_field(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["num_heads"] = 5
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="num_heads"):
        Mamba2LM.from_pretrained(saved)


def test_missing_weights_and_missing_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(Mamba2LM("tiny").config.to_hf_dict(), default=str))
    with pytest.raises(CheckpointError, match="no weights found"):
        Mamba2LM.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no such folder"):
        Mamba2LM.from_pretrained(tmp_path / "nope" / "deeper")


def test_missing_shard(tmp_path):
    Mamba2LM("tiny").save_pretrained(tmp_path, max_shard_bytes=20_000)
    next(tmp_path.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        Mamba2LM.from_pretrained(tmp_path)


def test_tokenizer_and_chat_template_roundtrip(tmp_path):
    from tokenizers import Tokenizer as HFTok
    from tokenizers import models, pre_tokenizers

    from promptcot_mamba.text.tokenizer import Tokenizer

    vocab = {w: i for i, w in enumerate(["<unk>", "<|im_end|>", "hello", "world"])}
    tok = HFTok(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    model = Mamba2LM("tiny")
    model.tokenizer = Tokenizer(tok, eos_token="<|im_end|>")
    model.save_pretrained(tmp_path)
    loaded = Mamba2LM.from_pretrained(tmp_path)
    assert loaded.tokenizer.encode("hello world") == [2, 3]
    assert loaded.tokenizer.eos_token_id == 1
    text = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_hub_id_resolves_through_the_local_hub_cache(tmp_path, monkeypatch):
    """`from_pretrained("owner/name")` goes through huggingface_hub; offline it reads the Hub cache
    layout (models--owner--name/snapshots/REV) without touching the network."""
    snap = tmp_path / "models--acme--tiny-mamba" / "snapshots" / "0123abc"
    model = Mamba2LM("tiny").eval()
    model.save_pretrained(snap)
    (tmp_path / "models--acme--tiny-mamba" / "refs").mkdir()
    (tmp_path / "models--acme--tiny-mamba" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = Mamba2LM.from_pretrained("acme/tiny-mamba")
    ids = torch.randint(0, 256, (1, 5))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    with pytest.raises(CheckpointError, match="Hub download failed"):
        Mamba2LM.from_pretrained("acme/not-cached")


def test_tied_checkpoint_with_a_head_that_differs(saved):
    """A tied config may store lm_head.weight too (transformers drops it, others keep it): equal is
    fine and stays tied; different is refused, before anything is loaded."""
    emb = load_file(saved / "model.safetensors")["backbone.embeddings.weight"]
    _edit_weights(saved, lambda sd: sd.__setitem__("lm_head.weight", emb.clone()))
    loaded = Mamba2LM.from_pretrained(saved)
    assert loaded.lm_head.weight is loaded.backbone.embeddings.weight
    assert torch.equal(loaded.lm_head.weight, emb)
    other = emb.clone()
    other[-1, -1] += 1
    _edit_weights(saved, lambda sd: sd.__setitem__("lm_head.weight", other))
    with pytest.raises(CheckpointError, match="tie_word_embeddings=true but lm_head.weight differs"):
        Mamba2LM.from_pretrained(saved)


def test_integer_and_unreadable_dtypes(saved):
    ints = torch.zeros(8, dtype=torch.int32)
    _edit_weights(saved, lambda sd: sd.__setitem__("backbone.layers.0.mixer.D", ints))
    with pytest.raises(CheckpointError, match=r"mixer\.D has dtype torch.int32, expected floating point"):
        Mamba2LM.from_pretrained(saved)
    fp8 = torch.zeros(8).to(torch.float8_e4m3fn)
    _edit_weights(saved, lambda sd: sd.__setitem__("backbone.layers.0.mixer.D", fp8))
    with pytest.raises(CheckpointError, match=r"mixer\.D is stored as F8_E4M3, which this loader does not"):
        Mamba2LM.from_pretrained(saved)


def test_malformed_header_and_index(saved):
    (saved / "model.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="truncated or corrupt.*header of 1000000000 bytes"):
        Mamba2LM.from_pretrained(saved)
    (saved / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["not", "a", "map"]}))
    with pytest.raises(CheckpointError, match="malformed shard index"):
        Mamba2LM.from_pretrained(saved)


def test_key_in_two_shards(tmp_path):
    Mamba2LM("tiny").save_pretrained(tmp_path, max_shard_bytes=20_000)
    first, second = sorted(tmp_path.glob("model-*.safetensors"))[:2]
    key, value = next(iter(load_file(first).items()))
    sd = load_file(second)
    sd[key] = value
    save_file(sd, second)
    with pytest.raises(CheckpointError, match=rf"{re.escape(key)} is also in {first.name}"):
        Mamba2LM.from_pretrained(tmp_path)


def test_model_loaded_without_copy_is_its_own_and_resaves_in_place(tmp_path):
    """Weights in the stored dtype are views of a private map of the file: writing to them leaves the
    file as it was, and saving over the same folder (old files unlinked, not truncated) works."""
    torch.manual_seed(5)
    Mamba2LM("tiny-g1").save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    model = Mamba2LM.from_pretrained(tmp_path)
    with torch.no_grad():
        model.backbone.layers[0].mixer.in_proj.weight.add_(1.0)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    model.save_pretrained(tmp_path)
    again = Mamba2LM.from_pretrained(tmp_path)
    for name, p in model.named_parameters():
        assert torch.equal(p, dict(again.named_parameters())[name]), name
