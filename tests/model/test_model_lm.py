"""The Mamba-2 LM: parity with transformers, the grouped norm, inference state, packing."""

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcot_mamba import InferenceState, Mamba2Config, Mamba2LM, named_config
from promptcot_mamba.common.tolerances import SSD_TERMS, assert_close, rel_err, rtol
from promptcot_mamba.model.norm import GatedRMSNorm

transformers = pytest.importorskip("transformers")


def hf_model(seed, **kw):
    cfg = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, state_size=8, head_dim=8, num_heads=8,
               n_groups=1, expand=2, conv_kernel=4, chunk_size=8, tie_word_embeddings=False)
    cfg.update(kw)
    torch.manual_seed(seed)
    model = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**cfg)).eval()
    with torch.no_grad():  # random, non-trivial SSM parameters (HF initialises D=1, dt_bias from a range)
        for layer in model.backbone.layers:
            layer.mixer.D.normal_()
            layer.mixer.norm.weight.uniform_(0.5, 1.5)
            layer.norm.weight.uniform_(0.5, 1.5)
    return model


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), hidden=st.sampled_from([16, 32]), layers=st.integers(1, 3),
       N=st.sampled_from([4, 16]), P=st.sampled_from([4, 8]), Q=st.sampled_from([4, 16]),
       tie=st.booleans(), T=st.sampled_from([1, 7, 33]))
def test_logits_match_transformers(tmp_path_factory, seed, hidden, layers, N, P, Q, tie, T):
    hf = hf_model(seed, hidden_size=hidden, num_hidden_layers=layers, state_size=N, head_dim=P,
                  num_heads=2 * hidden // P, chunk_size=Q, tie_word_embeddings=tie)
    folder = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(folder)
    ours = Mamba2LM.from_pretrained(folder)
    ids = torch.randint(0, 97, (2, T), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        a, b = hf(ids).logits, ours(ids).logits
    assert b.shape == (2, T, 97)
    assert_close(b, a, reductions=SSD_TERMS, what="logits against transformers")


def test_saved_checkpoint_loads_in_transformers_with_same_logits(tmp_path):
    torch.manual_seed(0)
    ours = Mamba2LM(named_config("tiny-g1")).eval()
    ours.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "mamba2" and cfg["architectures"] == ["Mamba2ForCausalLM"]
    hf = transformers.Mamba2ForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 256, (2, 21))
    with torch.no_grad():
        assert_close(hf(ids).logits, ours(ids).logits, reductions=SSD_TERMS, what="transformers on our checkpoint")


@pytest.mark.parametrize("name", ["tiny", "tiny-g1"])
def test_save_load_roundtrip_same_logits(tmp_path, name):
    torch.manual_seed(1)
    model = Mamba2LM(name).eval()
    model.save_pretrained(tmp_path)
    loaded = Mamba2LM.from_pretrained(tmp_path)
    ids = torch.randint(0, 256, (3, 19))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded.config == model.config


def test_sharded_save_loads(tmp_path):
    model = Mamba2LM("tiny").eval()
    model.save_pretrained(tmp_path, max_shard_bytes=20_000)
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ids = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, Mamba2LM.from_pretrained(tmp_path)(ids).logits)


def test_mamba_ssm_dialect_checkpoint_loads(tmp_path):
    """mamba_ssm writes d_model/n_layer/ssm_cfg, `backbone.embedding.` and pytorch_model.bin, tied head."""
    torch.manual_seed(2)
    ref = Mamba2LM(named_config("tiny", vocab_size=250)).eval()  # 250 rows: padded to 256 by mamba_ssm
    sd = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in ref.state_dict().items()}
    sd.pop("lm_head.weight")
    padded = torch.cat([sd["backbone.embedding.weight"], torch.zeros(6, 64)])
    sd["backbone.embedding.weight"] = padded
    torch.save(sd, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({
        "d_model": 64, "n_layer": 2, "vocab_size": 250, "pad_vocab_size_multiple": 8, "tie_embeddings": True,
        "ssm_cfg": {"layer": "Mamba2", "d_state": 16, "headdim": 16, "ngroups": 2, "expand": 2, "d_conv": 4,
                    "chunk_size": 16}}))
    loaded = Mamba2LM.from_pretrained(tmp_path)
    assert loaded.config.vocab_size == 256 and loaded.config.n_groups == 2
    ids = torch.randint(0, 250, (1, 11))
    with torch.no_grad():
        # the same weights; the head's matmul has 256 rows instead of 250 (another blocking on some CPUs)
        assert_close(loaded(ids).logits[..., :250], ref(ids).logits, reductions=64)


def test_grouped_gated_norm_against_independent_reference():
    """Per-group RMS of y * silu(z) (mamba_ssm `rms_norm_ref` semantics), written out longhand."""
    torch.manual_seed(3)
    d, G = 24, 3
    norm = GatedRMSNorm(d, G, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    y, z = torch.randn(2, 5, d), torch.randn(2, 5, d)
    out = norm(y, z)
    expect = torch.empty_like(y)
    for g in range(G):
        sl = slice(g * d // G, (g + 1) * d // G)
        v = y[..., sl] * z[..., sl] * torch.sigmoid(z[..., sl])
        expect[..., sl] = v / torch.sqrt((v * v).mean(-1, keepdim=True) + 1e-5) * norm.weight[sl]
    assert_close(out, expect, reductions=d // G)  # a mean over one group's channels
    # and it is not the whole-width norm transformers' eager path uses (the n_groups > 1 bug)
    v = y * F.silu(z)
    whole = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    assert not torch.allclose(out, whole, atol=1e-3)


@pytest.mark.parametrize("G", [1, 3])
def test_norms_training_backward_matches_autograd_of_the_formula(G):
    """RMSNorm and GatedRMSNorm under autograd run model/norm.py's `_RMSNormFn` (a written-out
    backward); values and gradients against autograd of the formula, fp32. The longest sum is a
    weight gradient over b·T rows (2·7 = 14 terms) or a group's S channels; rtol takes the larger."""
    from promptcot_mamba.model.norm import RMSNorm

    torch.manual_seed(5)
    d = 24
    gated, plain = GatedRMSNorm(d, G, eps=1e-5), RMSNorm(d, eps=1e-5)
    with torch.no_grad():
        gated.weight.uniform_(0.5, 2.0)
        plain.weight.uniform_(0.5, 2.0)
    y, z, w_out = torch.randn(2, 7, d), torch.randn(2, 7, d), torch.randn(2, 7, d)

    def formula(y, z, weight, groups):
        v = (y * F.silu(z) if z is not None else y).view(2, 7, groups, d // groups)
        return (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5)).view(2, 7, d) * weight

    for module, zz, groups in ((gated, z, G), (plain, None, 1)):
        leaves = [y.clone().requires_grad_(), zz.clone().requires_grad_() if zz is not None else None]
        out = module(*[t for t in leaves if t is not None])
        (out * w_out).sum().backward()
        ref_leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in leaves]
        weight = module.weight.detach().clone().requires_grad_()
        ref = formula(ref_leaves[0], ref_leaves[1], weight, groups)
        (ref * w_out).sum().backward()
        tol = rtol(torch.float32, max(14, d))
        assert rel_err(out.detach(), ref.detach()) <= tol
        assert rel_err(module.weight.grad, weight.grad) <= tol
        for a, b in zip(leaves, ref_leaves):
            if a is not None:
                assert rel_err(a.grad, b.grad) <= tol


def test_prefill_then_steps_equals_full_forward():
    torch.manual_seed(4)
    model = Mamba2LM("tiny").eval()
    ids = torch.randint(0, 256, (2, 45))
    with torch.no_grad():
        full = model(ids).logits
        last, state = model.prefill(ids[:, :17])
        # the recurrence and the chunked scan: the SSD forms' rule (common/tolerances.py)
        assert_close(last, full[:, 16], reductions=SSD_TERMS)
        for t in range(17, 45):
            assert_close(model.step(ids[:, t], state), full[:, t], reductions=SSD_TERMS, what=f"step t={t}")
        # a multi-token continuation from a state equals the full forward too
        _, s2 = model.prefill(ids[:, :30])
        cont = model(ids[:, 30:], state=s2).logits
        assert_close(cont, full[:, 30:], reductions=SSD_TERMS)


def test_prefill_in_pieces_equals_one_pass():
    """`prefill` runs long prompts in pieces (bounded activations, issue 13 item 4): same logits and
    state as one pass, for pieces that split the scan's chunks and ones that do not."""
    torch.manual_seed(5)
    model = Mamba2LM("tiny").eval()
    ids = torch.randint(0, 256, (2, 70))
    with torch.no_grad():
        one = model.forward(ids, return_state=True, logits_to_keep=1)
        for chunk in (16, 23, 70, 1000):
            last, state = model.prefill(ids, chunk=chunk)
            assert_close(last, one.logits[:, -1], reductions=SSD_TERMS, what=f"chunk={chunk}")
            assert_close(state.ssm, one.state.ssm, reductions=SSD_TERMS, what=f"state, chunk={chunk}")
            assert_close(state.conv, one.state.conv, reductions=SSD_TERMS, what=f"conv window, chunk={chunk}")
    with pytest.raises(ValueError, match="chunk must be positive"):
        model.prefill(ids, chunk=0)


def test_state_bytes_do_not_depend_on_context_length():
    model = Mamba2LM("tiny").eval()
    _, s16 = model.prefill(torch.randint(0, 256, (1, 16)))
    _, s4k = model.prefill(torch.randint(0, 256, (1, 4096)))
    assert s16.nbytes == s4k.nbytes == InferenceState.bytes_per_sequence(model.config)
    assert s4k.ssm.dtype == torch.float32
    before = s4k.nbytes
    for _ in range(10):
        model.step(torch.tensor([3]), s4k)
    assert s4k.nbytes == before


def test_packed_documents_equal_separate_runs():
    """seq_idx resets both the conv window and the SSM state, also in the middle of a chunk."""
    torch.manual_seed(5)
    model = Mamba2LM("tiny").eval()  # chunk 16
    docs = [torch.randint(0, 256, (n,)) for n in (7, 20, 5)]
    packed = torch.cat(docs)[None]
    seq_idx = torch.cat([torch.full((len(d),), i) for i, d in enumerate(docs)])[None]
    with torch.no_grad():
        out = model(packed, seq_idx=seq_idx).logits[0]
        start = 0
        for d in docs:
            alone = model(d[None]).logits[0]
            assert_close(out[start:start + len(d)], alone, reductions=SSD_TERMS)
            start += len(d)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="num_heads"):
        Mamba2Config(hidden_size=64, num_heads=3, head_dim=16)
    with pytest.raises(ValueError, match="n_groups"):
        Mamba2Config(hidden_size=64, num_heads=8, head_dim=16, n_groups=3)
    with pytest.raises(ValueError, match="state_size"):
        named_config("tiny", state_size=0)


def test_codestral_shape_is_exact():
    c = named_config("mamba-codestral-7b")
    assert (c.hidden_size, c.num_hidden_layers, c.state_size, c.head_dim, c.num_heads, c.n_groups) == \
        (4096, 64, 128, 64, 128, 8)
    assert c.in_proj_dim == 18560 and c.conv_dim == 10240 and not c.tie_word_embeddings
    assert 7.2e9 < c.num_parameters() < 7.4e9


@pytest.mark.parametrize("ids, message", [
    (torch.zeros(5, dtype=torch.long), "input_ids must be"),
    (torch.zeros(1, 0, dtype=torch.long), "no tokens"),
    (torch.full((1, 3), 999), "outside the vocabulary"),
    (torch.zeros(1, 3), "integer token ids"),
])
def test_bad_inputs_get_clear_errors(ids, message):
    with pytest.raises(ValueError, match=message):
        Mamba2LM("tiny")(ids)
