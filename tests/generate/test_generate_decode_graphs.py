"""BucketedDecoder: bucketing, padding and row discipline, checked on CPU through its eager path (the
CUDA-graph path replays the same step on the same rows; benchmarks/gpu checks it on a device)."""

import pytest
import torch

from promptcot_mamba.common.tolerances import assert_close
from promptcot_mamba.generate.decode_graphs import BucketedDecoder, default_buckets
from promptcot_mamba.model.lm import Mamba2LM


def test_default_buckets():
    assert default_buckets(1) == [1]
    assert default_buckets(8) == [1, 2, 4, 8]
    assert default_buckets(12) == [1, 2, 4, 8, 12]


def test_bucketed_step_equals_model_step_and_leaves_other_rows_alone():
    torch.manual_seed(0)
    model = Mamba2LM("tiny").eval()
    pool = model.allocate_state(8)
    ids = torch.randint(0, 256, (8, 5))
    _, filled = model.prefill(ids)
    pool.conv.copy_(filled.conv)
    pool.ssm.copy_(filled.ssm)
    reference = pool.clone()
    dec = BucketedDecoder(model, pool, buckets=[2, 4])
    assert dec.buckets == [2, 4, 8] and not dec.use_graphs
    tokens = torch.tensor([3, 7, 11])
    logits = dec(tokens)  # bucket 4: rows 0..3 step (row 3 is a padded free slot), rows 4..7 untouched
    ref_view = reference.select([0, 1, 2])
    ref_logits = model.step(tokens, ref_view)
    assert logits.shape == (3, 256)
    # 4 rows through the step's GEMMs against 3: another summation order. The longest sum of one step is
    # a projection's dot product (over d_inner = 128, the widest input); the state update adds one term.
    n = model.config.d_inner
    assert_close(logits, ref_logits, reductions=n, what="logits")
    assert_close(pool.ssm[:, :3], ref_view.ssm, reductions=n, what="ssm state")
    assert torch.equal(pool.ssm[:, 4:], reference.ssm[:, 4:]) and torch.equal(pool.conv[:, 4:], reference.conv[:, 4:])
    assert not torch.equal(pool.ssm[:, 3], reference.ssm[:, 3])  # the padded row did step
    with pytest.raises(ValueError, match="exceed"):
        dec(torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="buckets"):
        BucketedDecoder(model, pool, buckets=[16])
