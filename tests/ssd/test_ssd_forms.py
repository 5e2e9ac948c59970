"""The three SSD forms agree: recurrence (Eq. 1), quadratic dual (Eq. 2), chunked scan.

Tolerances follow common/tolerances.py: the longest float32 sum of an output is over the T tokens
of the scan times the N state channels (T·N terms); a gradient adds a sum over batch, heads and P."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptcot_mamba.common.tolerances import RTOL, rel_err, rtol
from promptcot_mamba.ssd import ssd, ssd_step

# T covers 1, primes, shorter than a chunk and many chunks
LENGTHS = st.sampled_from([1, 2, 3, 5, 7, 13, 16, 31, 64, 97, 130])


def make_inputs(seed, b, T, H, P, G, N, *, dtype=torch.float32, with_D=True, with_h0=False, n_docs=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, H, P, generator=g)
    dt = F.softplus(torch.randn(b, T, H, generator=g) - 1.0)
    A = -torch.exp(torch.rand(H, generator=g) * 2.5)  # decays in (-12, -1]
    B = torch.randn(b, T, G, N, generator=g)
    C = torch.randn(b, T, G, N, generator=g)
    D = torch.randn(H, generator=g) if with_D else None
    h0 = torch.randn(b, H, P, N, generator=g) if with_h0 else None
    seq = None
    if n_docs:
        seq = torch.zeros(b, T, dtype=torch.long)
        for row in range(b):
            cuts = torch.randperm(max(T - 1, 1), generator=g)[:n_docs] + 1
            for c in cuts.tolist():
                if c < T:
                    seq[row, c:] += 1
    cast = lambda t: t.to(dtype) if t is not None else None
    return cast(x), dt, A, cast(B), cast(C), D, h0, seq


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), b=st.integers(1, 2), T=LENGTHS, G=st.sampled_from([1, 2, 4]),
       R=st.sampled_from([1, 2, 3]), P=st.sampled_from([1, 4, 8]), N=st.sampled_from([1, 4, 16]),
       Q=st.sampled_from([1, 4, 8, 16, 64, 256]), with_h0=st.booleans(), n_docs=st.integers(0, 4),
       with_D=st.booleans())
def test_three_forms_agree(seed, b, T, G, R, P, N, Q, with_h0, n_docs, with_D):
    x, dt, A, B, C, D, h0, seq = make_inputs(seed, b, T, G * R, P, G, N, with_D=with_D, with_h0=with_h0,
                                            n_docs=n_docs)
    y_r, s_r = ssd(x, dt, A, B, C, D, initial_state=h0, seq_idx=seq, backend="recurrent")
    y_q, s_q = ssd(x, dt, A, B, C, D, initial_state=h0, seq_idx=seq, backend="quadratic")
    y_c, s_c = ssd(x, dt, A, B, C, D, initial_state=h0, seq_idx=seq, backend="torch", chunk_size=Q)
    assert rel_err(y_q, y_r) <= RTOL[torch.float32]
    assert rel_err(y_c, y_r) <= RTOL[torch.float32]
    assert rel_err(s_q, s_r) <= RTOL[torch.float32]
    assert rel_err(s_c, s_r) <= RTOL[torch.float32]
    assert s_c.dtype == torch.float32


@pytest.mark.parametrize("Q", [4, 16])
def test_chunked_gradients_match_quadratic(Q):
    x, dt, A, B, C, D, h0, seq = make_inputs(3, 2, 37, 6, 4, 2, 8, with_h0=True, n_docs=2)
    leaves = [t for t in (x, dt, A, B, C, D, h0)]

    def grads(backend, **kw):
        xs = [t.detach().clone().requires_grad_(True) for t in leaves]
        y, s = ssd(*xs[:6], initial_state=xs[6], seq_idx=seq, backend=backend, **kw)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        ((y * w).sum() + (s ** 2).sum() * 1e-2).backward()
        return [t.grad for t in xs]

    for gq, gc in zip(grads("quadratic"), grads("torch", chunk_size=Q)):
        assert rel_err(gc, gq) <= rtol(torch.float32, 3 * 37 * 6 * 4 * 8)  # b·T·H·P·N


@pytest.mark.parametrize("b, T, G, R, P, N, Q, with_D", [
    (2, 37, 1, 4, 8, 16, 8, True),  # padded last chunk
    (2, 64, 2, 2, 8, 4, 16, False),  # groups, whole chunks, no skip
    (3, 5, 1, 2, 4, 4, 16, True),  # shorter than a chunk
    (2, 130, 2, 3, 7, 5, 32, True),  # the demo's Q, odd P and N
])
def test_training_scan_matches_quadratic_values_and_gradients(b, T, G, R, P, N, Q, with_D):
    """ssd/chunked_grad.py (what `ssd_chunked` runs under autograd without documents or h0) against
    Eq. 2's autograd: outputs, final state, and the gradients of all six inputs with a
    loss on both outputs. fp32 throughout; the tolerance is rtol's for the longest sum of a
    gradient (b·T·H·P·N terms: g_A sums over every token, head channel and state channel)."""
    x, dt, A, B, C, D, _, _ = make_inputs(7, b, T, G * R, P, G, N, with_D=with_D)
    leaves = [t for t in (x, dt, A, B, C, D) if t is not None]

    from promptcot_mamba.ssd.chunked_grad import ssd_chunked_autograd

    def run(fast):
        xs = [t.detach().clone().requires_grad_(True) for t in leaves]
        args = xs + ([None] if not with_D else [])
        y, s = ssd_chunked_autograd(*args, Q) if fast else ssd(*args, backend="quadratic")
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        ((y * w).sum() + (s ** 2).sum() * 1e-2).backward()
        return y.detach(), s.detach(), [t.grad for t in xs]

    y_q, s_q, g_q = run(False)
    y_c, s_c, g_c = run(True)
    tol = rtol(torch.float32, b * T * G * R * P * N)
    assert rel_err(y_c, y_q) <= RTOL[torch.float32]
    assert rel_err(s_c, s_q) <= RTOL[torch.float32]
    for gq, gc in zip(g_q, g_c):
        assert rel_err(gc, gq) <= tol


def test_training_scan_gradients_when_only_the_outputs_have_a_loss():
    """Training's case: no gradient reaches the final state (backward gets None for it), and the
    recurrence's backward starts from zeros."""
    from promptcot_mamba.ssd.chunked_grad import ssd_chunked_autograd

    x, dt, A, B, C, D, _, _ = make_inputs(3, 2, 100, 4, 8, 1, 16, with_D=True)
    leaves = [x, dt, A, B, C, D]

    def grads(fast):
        xs = [t.detach().clone().requires_grad_(True) for t in leaves]
        y, _ = ssd_chunked_autograd(*xs, 32) if fast else ssd(*xs, backend="quadratic")
        (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
        return [t.grad for t in xs]

    tol = rtol(torch.float32, 2 * 100 * 4 * 8 * 16)  # the longest gradient sum, as above
    for gq, gc in zip(grads(False), grads(True)):
        assert rel_err(gc, gq) <= tol


def test_training_scan_is_the_path_autograd_takes(monkeypatch):
    """The fast path is chosen by the inputs, not a flag: with autograd and no documents or h0."""
    from promptcot_mamba.ssd import chunked_grad

    calls = []
    real = chunked_grad.ssd_chunked_autograd
    monkeypatch.setattr(chunked_grad, "ssd_chunked_autograd", lambda *a: calls.append(1) or real(*a))
    x, dt, A, B, C, D, h0, seq = make_inputs(1, 1, 20, 2, 4, 1, 4, with_h0=True, n_docs=1)  # N <= P
    ssd(x.requires_grad_(), dt, A, B, C, D, backend="torch", chunk_size=8)
    assert calls == [1]
    ssd(x, dt, A, B, C, D, seq_idx=seq, backend="torch", chunk_size=8)  # documents: the general path
    ssd(x, dt, A, B, C, D, initial_state=h0, backend="torch", chunk_size=8)  # a carried state: same
    with torch.no_grad():
        ssd(x, dt, A, B, C, D, backend="torch", chunk_size=8)  # inference: the in-place path
    x2, dt2, A2, B2, C2, D2, _, _ = make_inputs(1, 1, 20, 2, 4, 1, 8)
    ssd(x2.requires_grad_(), dt2, A2, B2, C2, D2, backend="torch", chunk_size=8)  # N > P: the same
    assert calls == [1, 1]
    ssd(x2, dt2, A2, B2, C2, D2[:, None].expand(2, 4), backend="torch", chunk_size=8)  # D per channel: general
    assert calls == [1, 1]


def test_document_reset_mid_chunk_equals_separate_documents():
    x, dt, A, B, C, D, _, _ = make_inputs(5, 1, 40, 4, 4, 2, 8)
    seq = torch.zeros(1, 40, dtype=torch.long)
    seq[:, 11:] = 1  # the second document starts inside the first chunk of 16
    y, s = ssd(x, dt, A, B, C, D, seq_idx=seq, chunk_size=16)
    y2, s2 = ssd(x[:, 11:], dt[:, 11:], A, B[:, 11:], C[:, 11:], D, chunk_size=16)
    assert rel_err(y[:, 11:], y2) <= rtol(torch.float32, 40 * 8)  # T·N
    assert rel_err(s, s2) <= rtol(torch.float32, 40 * 8)


def test_reused_document_ids_are_separate_runs():
    x, dt, A, B, C, D, _, _ = make_inputs(6, 1, 20, 2, 2, 1, 4)
    a = torch.tensor([[0] * 5 + [1] * 5 + [0] * 10])  # id 0 reused: three documents
    b = torch.tensor([[0] * 5 + [1] * 5 + [2] * 10])
    assert torch.equal(ssd(x, dt, A, B, C, D, seq_idx=a)[0], ssd(x, dt, A, B, C, D, seq_idx=b)[0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_accumulate_in_fp32(dtype):
    x, dt, A, B, C, D, h0, seq = make_inputs(7, 2, 70, 4, 8, 2, 16, dtype=dtype, with_h0=True, n_docs=1)
    y, s = ssd(x, dt, A, B, C, D, initial_state=h0, seq_idx=seq, chunk_size=16)
    y_ref, s_ref = ssd(x.float(), dt, A, B.float(), C.float(), D, initial_state=h0, seq_idx=seq,
                       backend="recurrent")
    assert y.dtype == dtype and s.dtype == torch.float32
    assert rel_err(y, y_ref) <= RTOL[dtype]
    assert rel_err(s, s_ref) <= rtol(torch.float32, 70 * 16)  # the state never leaves fp32: T·N


def test_groups_are_not_expanded_and_match_explicit_expansion():
    x, dt, A, B, C, D, _, _ = make_inputs(8, 1, 25, 8, 4, 2, 8)
    y, _ = ssd(x, dt, A, B, C, D, chunk_size=8)
    Bx, Cx = B.repeat_interleave(4, dim=2), C.repeat_interleave(4, dim=2)  # (b, T, H, N)
    y2, _ = ssd(x, dt, A, Bx, Cx, D, chunk_size=8)
    assert rel_err(y, y2) <= rtol(torch.float32, 25 * 8)  # T·N


def test_unbatched_inputs_and_state_continuation():
    x, dt, A, B, C, D, _, _ = make_inputs(9, 1, 30, 4, 4, 2, 8)
    y_full, s_full = ssd(x[0], dt[0], A, B[0], C[0], D)
    assert y_full.shape == (30, 4, 4) and s_full.shape == (4, 4, 8)
    y1, s1 = ssd(x[0, :12], dt[0, :12], A, B[0, :12], C[0, :12], D)
    y2, s2 = ssd(x[0, 12:], dt[0, 12:], A, B[0, 12:], C[0, 12:], D, initial_state=s1)
    tol = rtol(torch.float32, 30 * 8)  # T·N
    assert rel_err(torch.cat([y1, y2]), y_full) <= tol and rel_err(s2, s_full) <= tol


def test_decode_step_matches_recurrence():
    x, dt, A, B, C, D, h0, _ = make_inputs(10, 3, 9, 6, 4, 3, 8, with_h0=True)
    y_ref, s_ref = ssd(x, dt, A, B, C, D, initial_state=h0, backend="recurrent")
    state = h0.clone()
    ys = [ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t], D) for t in range(9)]
    tol = rtol(torch.float32, 9 * 8)  # T·N
    assert rel_err(torch.stack(ys, 1), y_ref) <= tol and rel_err(state, s_ref) <= tol


@pytest.mark.parametrize("bad, message", [
    (dict(x=torch.randn(1, 5, 4, 4, 1)), "x must be"),
    (dict(dt=torch.rand(1, 4, 4)), "dt must be"),
    (dict(A=torch.rand(3)), "A must be"),
    (dict(B=torch.randn(1, 5, 3, 8), C=torch.randn(1, 5, 3, 8)), "multiple of groups"),
    (dict(C=torch.randn(1, 5, 2, 7)), "B and C"),
    (dict(D=torch.randn(5)), "D must be"),
    (dict(initial_state=torch.randn(1, 4, 4, 7)), "initial_state"),
    (dict(seq_idx=torch.zeros(1, 4, dtype=torch.long)), "seq_idx"),
    (dict(backend="nope"), "unknown SSD backend"),
])
def test_bad_shapes_get_clear_errors(bad, message):
    args = dict(x=torch.randn(1, 5, 4, 4), dt=torch.rand(1, 5, 4), A=-torch.rand(4), B=torch.randn(1, 5, 2, 8),
                C=torch.randn(1, 5, 2, 8), D=None, initial_state=None, seq_idx=None, backend="auto")
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        ssd(args["x"], args["dt"], args["A"], args["B"], args["C"], args["D"], initial_state=args["initial_state"],
            seq_idx=args["seq_idx"], backend=args["backend"])


def test_intra_chunk_backward_passes_gradcheck():
    """The hand-written backward of the chunked scan's diagonal blocks, in float64."""
    from promptcot_mamba.ssd.forms import _IntraChunk

    g = torch.Generator().manual_seed(8)
    b, nc, G, R, Q, P = 1, 2, 2, 2, 5, 3
    acs = torch.cumsum(-torch.rand(b, nc, G, R, Q, generator=g, dtype=torch.float64), -1).requires_grad_()
    CB = torch.randn(b, nc, G, Q, Q, generator=g, dtype=torch.float64).tril().requires_grad_()
    xdt = torch.randn(b, nc, G, R, Q, P, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_IntraChunk.apply, (acs, CB, xdt))


def test_strong_decays_past_the_exp_clamp_match_the_quadratic_form():
    """Log-decays far below −80 inside a chunk (the chunked scan clamps them there before the exp)."""
    x, dt, A, B, C, D, h0, seq = make_inputs(9, 2, 40, 4, 4, 2, 8, with_h0=True, n_docs=1)
    A = torch.tensor([-60.0, -20.0, -5.0, -0.5])
    dt = dt + 0.5
    leaves = [x, dt, A, B, C, D, h0]

    def run(backend, **kw):
        xs = [t.detach().clone().requires_grad_(True) for t in leaves]
        y, s = ssd(*xs[:6], initial_state=xs[6], seq_idx=seq, backend=backend, **kw)
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
        ((y * w).sum() + s.square().sum() * 1e-2).backward()
        return [y.detach(), s.detach()] + [t.grad for t in xs]

    for got, want in zip(run("torch", chunk_size=16), run("quadratic")):
        assert torch.isfinite(got).all()
        assert rel_err(got, want) <= rtol(torch.float32, 2 * 40 * 4 * 4 * 8)  # b·T·H·P·N (gradients)


def test_chunked_backward_under_bf16_autocast_follows_fp32():
    """The trainer's CPU bf16 autocast: matmuls run in bf16, the hand-written backward still works."""
    x, dt, A, B, C, D, h0, seq = make_inputs(4, 2, 45, 4, 8, 2, 16, with_h0=True, n_docs=1)
    leaves = [x, dt, A, B, C, D, h0]

    def grads(autocast):
        xs = [t.detach().clone().requires_grad_(True) for t in leaves]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y, s = ssd(*xs[:6], initial_state=xs[6], seq_idx=seq, backend="torch", chunk_size=16)
        (y.float().square().sum() + s.square().sum() * 1e-2).backward()
        return [t.grad for t in xs]

    for low, ref in zip(grads(True), grads(False)):
        # the matmuls' operands are rounded to bf16 (a handful of roundings on each path)
        assert low.dtype == torch.float32 and rel_err(low, ref) <= rtol(torch.bfloat16, 2 * 45 * 4 * 8 * 16)
