"""The chunked SSD scan as Triton kernels: the `triton` backend of `ssd(...)`.

Same maths, same arguments and same results as `forms.ssd_chunked` (its PyTorch twin and the oracle
of tests/ssd/test_ssd_triton_scan.py), in three kernels, the pipeline of mamba_ssm's
`ops/triton/ssd_*.py` (chunk states, state passing, chunk scan):

    1. `_chunk_state_fwd`   each chunk's own state  S_c = Σ_s exp(A_last − A_s) · Δ_s · x_s ⊗ b_s
    2. `_state_pass_fwd`    Eq. 1 across chunks: the state entering every chunk, and the final state
    3. `_chunk_scan_fwd`    y_l = Σ_{s≤l} (c_l·b_s) exp(A_l − A_s) Δ_s x_s  +  (c_l · S_in) exp(A_l)  (+ D x_l)

Properties the PyTorch twin has and the kernels keep:
- groups are broadcast natively: head h reads group h // R of B and C; B and C are never expanded;
- document boundaries (`doc`, normalised ids): masks inside the chunk, in the carried state and in the
  chunk's own state; the initial state belongs to the row's first document (mamba_ssm's semantics);
- all accumulation in fp32 (tl.dot with fp32 accumulators, fp32 states); bf16/fp16/fp32 inputs;
  fp32 inputs use IEEE dots (no TF32), so they agree with the reference to 1e-4;
- any T (the last chunk is masked) and arbitrary strides (the mixer's x, B, C are views of one tensor).

The chunk length Q of the kernels is their own tuning knob (`TRITON_CHUNK`, or `chunk=`), not the model's
`chunk_size`: the chunked scan's result does not depend on Q (the forms are exactly equal).

Backward (`ssd_triton_backward`): no separate backward kernels — the gradients of a linear scan are
themselves SSD scans (time-reversed and/or with channels and state swapped), so the same three
forward kernels run three more times, plus O(T·H·P) elementwise PyTorch. Roughly 4× a forward.
fp32 inputs: gradients agree with autograd through the reference to ~1e-6. bf16 inputs: ~5e-3 for
x, Δ, B, C, h0, but ~5e-2 for A, whose gradient sums Σ_t (gy_t·y_t − X_t·dX_t), two large terms
whose bf16 tensor-core rounding does not cancel (tests/ssd/test_ssd_triton_scan.py measures both).

Triton is imported here at module level: import this module only through the dispatch table
(optional_backends.py), which does so lazily, so the library stays importable without the `gpu` extra. Under TRITON_INTERPRET=1 (set before
this module is first imported) the kernels run on CPU tensors through Triton's interpreter: that is
how CI checks them without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from promptcot_mamba.ssd.backend import interpreting
from promptcot_mamba.ssd.forms import ssd_chunked

# Q of the kernels: a power of two >= 16; the programs tile it in blocks of 64, so Q trades the
# per-chunk state traffic (b·(T/Q)·H·P·N fp32 written once, read twice) against the causal
# intra-chunk work (∝ Q). 256 is mamba_ssm's choice for these shapes; benchmarks/gpu sweeps 64–256.
TRITON_CHUNK = 256  # the default; `ssd_triton_forward(..., chunk=Q)` takes another (benchmarks sweep it)


def _pow2(n: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(n))


# ----------------------------------------------------------------------------------- kernels
@triton.jit
def _dot(a, b, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with an fp32 accumulator. IEEE: exact fp32 products (no TF32) for fp32 inputs.
    UPCAST: fp32 operands — only under the interpreter, whose bf16 tl.dot gives garbage (Triton 3.9)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if IEEE:
        out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out


@triton.jit
def _mem_t(t, T, REV: tl.constexpr):
    """Logical time → memory row: the adjoint (backward) problems run the scan backwards in time by
    reading rows T−1−t instead of flipping tensors in memory."""
    if REV:
        out = T - 1 - t
    else:
        out = t
    return out


@triton.jit
def _chunk_state_fwd(x_ptr, B_ptr, dt_ptr, acs_ptr, doc_ptr, st_ptr,
                     T, H, P, N, R, RX,
                     sxb, sxt, sxh, sxp, sBb, sBt, sBg, sBn, sdb, sdt, sdh,
                     sab, sah, sdocb, ssb, ssc, ssh,
                     Q: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
                     HAS_DOC: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr, REV: tl.constexpr):
    """One program per (chunk c, row b · head h, P-block): S_c[p, n] for that head, fp32.
    Head h reads group h // R of B and row h // RX of x (RX > 1 only in the transposed adjoints)."""
    c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_p = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    g = h // R
    hx = h // RX
    b64 = b.to(tl.int64)
    t0 = c * Q
    t_last = tl.minimum(t0 + Q, T) - 1
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    acs_row = acs_ptr + b64 * sab + h * sah
    a_last = tl.load(acs_row + t_last)
    if HAS_DOC:
        doc_last = tl.load(doc_ptr + b64 * sdocb + _mem_t(t_last, T, REV))
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for s0 in range(0, Q, BLOCK_S):
        offs_s = t0 + s0 + tl.arange(0, BLOCK_S)
        in_s = offs_s < T
        ms = _mem_t(offs_s, T, REV)
        dt_s = tl.load(dt_ptr + b64 * sdb + ms * sdt + h * sdh, mask=in_s, other=0.0).to(tl.float32)
        a_s = tl.load(acs_row + offs_s, mask=in_s, other=0.0)
        w_s = tl.where(in_s, tl.exp(a_last - a_s) * dt_s, 0.0)  # decay to the chunk's end · Δ_s
        if HAS_DOC:  # only the chunk's last document reaches its end state
            doc_s = tl.load(doc_ptr + b64 * sdocb + ms, mask=in_s, other=-1)
            w_s = tl.where(doc_s == doc_last, w_s, 0.0)
        xT = tl.load(x_ptr + b64 * sxb + hx * sxh + offs_p[:, None] * sxp + ms[None, :] * sxt,
                     mask=(offs_p[:, None] < P) & in_s[None, :], other=0.0)  # (BLOCK_P, BLOCK_S)
        Bs = tl.load(B_ptr + b64 * sBb + g * sBg + ms[:, None] * sBt + offs_n[None, :] * sBn,
                     mask=in_s[:, None] & (offs_n[None, :] < N), other=0.0)  # (BLOCK_S, BLOCK_N)
        xw = (xT.to(tl.float32) * w_s[None, :]).to(Bs.dtype)
        acc += _dot(xw, Bs, IEEE, UPCAST)
    st = st_ptr + b64 * ssb + c * ssc + h * ssh
    tl.store(st + offs_p[:, None] * N + offs_n[None, :], acc, mask=(offs_p[:, None] < P) & (offs_n[None, :] < N))


@triton.jit
def _state_pass_fwd(st_ptr, h0_ptr, fin_ptr, acs_ptr, doc_ptr,
                    T, H, PN, nc,
                    sab, sah, sdocb, ssb, ssc, ssh,
                    Q: tl.constexpr, BLOCK: tl.constexpr, HAS_H0: tl.constexpr, HAS_DOC: tl.constexpr,
                    REV: tl.constexpr):
    """Sequential over chunks, one program per (row b · head h, block of P·N): replaces each chunk's
    own state in `st` by the state ENTERING that chunk (in place), writes the final state."""
    pid_bh = tl.program_id(0)
    pid_k = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    b64 = b.to(tl.int64)
    offs = pid_k * BLOCK + tl.arange(0, BLOCK)
    mask = offs < PN
    if HAS_H0:
        state = tl.load(h0_ptr + (b64 * H + h) * PN + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BLOCK,), dtype=tl.float32)
    acs_row = acs_ptr + b64 * sab + h * sah
    st = st_ptr + b64 * ssb + h * ssh
    for c in range(0, nc):
        own = tl.load(st + c * ssc + offs, mask=mask, other=0.0)
        tl.store(st + c * ssc + offs, state, mask=mask)
        t_last = tl.minimum(c * Q + Q, T) - 1
        decay = tl.exp(tl.load(acs_row + t_last))
        if HAS_DOC:  # the carried state survives the chunk only if no new document starts in it
            d_in = tl.load(doc_ptr + b64 * sdocb + _mem_t(tl.maximum(c * Q - 1, 0), T, REV))
            d_last = tl.load(doc_ptr + b64 * sdocb + _mem_t(t_last, T, REV))
            decay = tl.where(d_in == d_last, decay, 0.0)
        state = state * decay + own
    tl.store(fin_ptr + (b64 * H + h) * PN + offs, state, mask=mask)


@triton.jit
def _chunk_scan_fwd(x_ptr, B_ptr, C_ptr, dt_ptr, acs_ptr, doc_ptr, st_ptr, D_ptr, y_ptr,
                    T, H, P, N, R, RX,
                    sxb, sxt, sxh, sxp, sBb, sBt, sBg, sBn, sCb, sCt, sCg, sCn, sdb, sdt, sdh,
                    sab, sah, sdocb, ssb, ssc, ssh, syb, syt, syh, syp,
                    Q: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_S: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
                    HAS_DOC: tl.constexpr, HAS_D: tl.constexpr, IEEE: tl.constexpr,
                    UPCAST: tl.constexpr, REV: tl.constexpr):
    """One program per (chunk c · block of BLOCK_L positions, row b · head h, P-block): the outputs."""
    pid_cl = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_p = tl.program_id(2)
    c = pid_cl // (Q // BLOCK_L)
    lb = pid_cl % (Q // BLOCK_L)
    b = pid_bh // H
    h = pid_bh % H
    g = h // R
    hx = h // RX
    b64 = b.to(tl.int64)
    t0 = c * Q
    offs_l = t0 + lb * BLOCK_L + tl.arange(0, BLOCK_L)
    in_l = offs_l < T
    ml = _mem_t(offs_l, T, REV)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    acs_row = acs_ptr + b64 * sab + h * sah
    a_l = tl.load(acs_row + offs_l, mask=in_l, other=0.0)
    Cl = tl.load(C_ptr + b64 * sCb + g * sCg + ml[:, None] * sCt + offs_n[None, :] * sCn,
                 mask=in_l[:, None] & (offs_n[None, :] < N), other=0.0)  # (BLOCK_L, BLOCK_N)

    # the carried state's share: (c_l · S_in) exp(A_l), for the chunk's first document only
    S_in = tl.load(st_ptr + b64 * ssb + c * ssc + h * ssh + offs_n[:, None] + offs_p[None, :] * N,
                   mask=(offs_n[:, None] < N) & (offs_p[None, :] < P), other=0.0)  # (BLOCK_N, BLOCK_P) fp32
    acc = _dot(Cl, S_in.to(Cl.dtype), IEEE, UPCAST)
    carry = tl.exp(a_l)
    if HAS_DOC:
        doc_l = tl.load(doc_ptr + b64 * sdocb + ml, mask=in_l, other=-1)
        d_in = tl.load(doc_ptr + b64 * sdocb + _mem_t(tl.maximum(t0 - 1, 0), T, REV))
        carry = tl.where(doc_l == d_in, carry, 0.0)
    acc = acc * carry[:, None]

    # the diagonal block: Σ_{s ≤ l, same doc} (c_l · b_s) exp(A_l − A_s) Δ_s x_s
    hi = (lb + 1) * BLOCK_L
    for s0 in range(0, hi, BLOCK_S):
        offs_s = t0 + s0 + tl.arange(0, BLOCK_S)
        in_s = offs_s < T
        ms = _mem_t(offs_s, T, REV)
        BsT = tl.load(B_ptr + b64 * sBb + g * sBg + offs_n[:, None] * sBn + ms[None, :] * sBt,
                      mask=(offs_n[:, None] < N) & in_s[None, :], other=0.0)  # (BLOCK_N, BLOCK_S)
        CB = _dot(Cl, BsT, IEEE, UPCAST)  # (BLOCK_L, BLOCK_S) fp32
        a_s = tl.load(acs_row + offs_s, mask=in_s, other=0.0)
        dt_s = tl.load(dt_ptr + b64 * sdb + ms * sdt + h * sdh, mask=in_s, other=0.0).to(tl.float32)
        keep = (offs_s[None, :] <= offs_l[:, None]) & in_s[None, :]
        if HAS_DOC:
            doc_s = tl.load(doc_ptr + b64 * sdocb + ms, mask=in_s, other=-2)
            keep = keep & (doc_s[None, :] == doc_l[:, None])
        # mask before exp: above the diagonal A_l − A_s > 0 could overflow
        seg = tl.where(keep, a_l[:, None] - a_s[None, :], float("-inf"))
        W = CB * tl.exp(seg) * dt_s[None, :]
        xs = tl.load(x_ptr + b64 * sxb + hx * sxh + ms[:, None] * sxt + offs_p[None, :] * sxp,
                     mask=in_s[:, None] & (offs_p[None, :] < P), other=0.0)  # (BLOCK_S, BLOCK_P)
        acc += _dot(W.to(xs.dtype), xs, IEEE, UPCAST)

    out_mask = in_l[:, None] & (offs_p[None, :] < P)
    if HAS_D:
        xl = tl.load(x_ptr + b64 * sxb + hx * sxh + ml[:, None] * sxt + offs_p[None, :] * sxp,
                     mask=out_mask, other=0.0).to(tl.float32)
        Dp = tl.load(D_ptr + h * P + offs_p, mask=offs_p < P, other=0.0)
        acc += xl * Dp[None, :]
    tl.store(y_ptr + b64 * syb + h * syh + ml[:, None] * syt + offs_p[None, :] * syp,
             acc.to(y_ptr.dtype.element_ty), mask=out_mask)


# ---------------------------------------------------------------------------------- launcher
def ssd_triton_forward(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                       initial_state: Tensor | None = None, doc: Tensor | None = None, *,
                       chunk: int | None = None, log_a: Tensor | None = None,
                       out_dtype: torch.dtype | None = None, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """The forward kernels on already-validated inputs (see `dispatch.ssd`); no autograd.

    x (b, T, H, P), dt (b, T, H) (Δ, after softplus), A (H,), B/C (b, T, G, N), D (H,) | (H, P),
    initial_state (b, H, P, N), doc (b, T) normalised document ids. Returns (y like x, final fp32).
    For the backward pass's adjoint problems: `log_a` (b, T, H) replaces the per-step log-decay Δ·A
    (Δ then only scales the input); `out_dtype` sets y's dtype; `reverse` runs the scan from the last
    row to the first (log_a is then given in that reversed order; y comes back in memory order); and x
    may be per group (b, T, G_x, P) with B, C per head — x's heads then broadcast like B's groups do.
    """
    b, T, Hx, P = x.shape
    G, N = B.shape[-2:]
    H = max(Hx, G)
    if H % Hx or H % G:
        raise ValueError(f"ssd triton: heads {H} must be a multiple of x's {Hx} and B's {G}")
    R, RX = H // G, H // Hx
    if B.dtype != x.dtype or C.dtype != x.dtype:  # tl.dot needs equal operand dtypes (rare: mixed inputs)
        B, C = B.to(x.dtype), C.to(x.dtype)
    Q = chunk or TRITON_CHUNK
    if Q < 16 or Q & (Q - 1):
        raise ValueError(f"ssd triton: the kernel chunk must be a power of two >= 16, got {Q}")
    Q = min(Q, _pow2(T))  # a short sequence needs no longer chunk than itself
    dev = x.device
    final = torch.empty(b, H, P, N, device=dev, dtype=torch.float32)
    if T == 0:
        if initial_state is not None:
            final.copy_(initial_state)
        else:
            final.zero_()
        return x.new_empty(b, 0, H, P, dtype=out_dtype or x.dtype), final
    nc = triton.cdiv(T, Q)
    # cumulative log-decay within each chunk, fp32 (b, H, nc·Q); the padded tail repeats the chunk's
    # last value (Δ = 0 there), which is what the kernels read as "A at the chunk's end".
    dA = dt.float() * A.float() if log_a is None else log_a.float()  # (b, T, H)
    dA = torch.nn.functional.pad(dA, (0, 0, 0, nc * Q - T))
    acs = dA.view(b, nc, Q, H).cumsum(dim=2).permute(0, 3, 1, 2).reshape(b, H, nc * Q).contiguous()
    st = torch.empty(b, nc, H, P, N, device=dev, dtype=torch.float32)
    y = torch.empty(b, T, H, P, device=dev, dtype=out_dtype or x.dtype)
    rev = bool(reverse)
    has_doc = doc is not None
    docc = doc.to(torch.int32).contiguous() if has_doc else acs  # dummy pointer when absent
    ieee = x.dtype == torch.float32
    upcast = interpreting()
    BLOCK_N = _pow2(N)
    BLOCK_P = min(_pow2(P), 64)
    BLOCK_S = min(Q, 64)
    BLOCK_L = min(Q, 64)
    n_pb = triton.cdiv(P, BLOCK_P)
    warps = 4
    _chunk_state_fwd[(nc, b * H, n_pb)](
        x, B, dt, acs, docc, st, T, H, P, N, R, RX,
        *x.stride(), *B.stride(), *dt.stride(),
        acs.stride(0), acs.stride(1), docc.stride(0) if has_doc else 0, st.stride(0), st.stride(1), st.stride(2),
        Q=Q, BLOCK_S=BLOCK_S, BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N, HAS_DOC=has_doc, IEEE=ieee, UPCAST=upcast,
        REV=rev, num_warps=warps)
    h0 = initial_state.float().contiguous() if initial_state is not None else final
    BLOCK = min(1024, _pow2(P * N))
    _state_pass_fwd[(b * H, triton.cdiv(P * N, BLOCK))](
        st, h0, final, acs, docc, T, H, P * N, nc,
        acs.stride(0), acs.stride(1), docc.stride(0) if has_doc else 0, st.stride(0), st.stride(1), st.stride(2),
        Q=Q, BLOCK=BLOCK, HAS_H0=initial_state is not None, HAS_DOC=has_doc, REV=rev, num_warps=warps)
    has_d = D is not None
    Dhp = (D.float()[:, None].expand(H, P) if D.dim() == 1 else D.float()).contiguous() if has_d else acs
    _chunk_scan_fwd[(nc * (Q // BLOCK_L), b * H, n_pb)](
        x, B, C, dt, acs, docc, st, Dhp, y, T, H, P, N, R, RX,
        *x.stride(), *B.stride(), *C.stride(), *dt.stride(),
        acs.stride(0), acs.stride(1), docc.stride(0) if has_doc else 0, st.stride(0), st.stride(1), st.stride(2),
        *y.stride(),
        Q=Q, BLOCK_L=BLOCK_L, BLOCK_S=BLOCK_S, BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N,
        HAS_DOC=has_doc, HAS_D=has_d, IEEE=ieee, UPCAST=upcast, REV=rev, num_warps=warps)
    return y, final


# ---------------------------------------------------------------------------------- backward
def _group_sum(t: Tensor, G: int) -> Tensor:
    b, T, H, N = t.shape
    return t.view(b, T, G, H // G, N).sum(dim=3)


def ssd_triton_backward(x, dt, A, B, C, D, h0, doc, y, final, gy, gfinal, *, chunk: int | None = None):
    """Gradients of `ssd_triton_forward` by three more runs of the same forward kernels.

    With X_s = Δ_s x_s, a_k = exp(Δ_k A) and L(l, s) = Π_{k=s+1..l} a_k (zero across documents):
      • dX_s = Σ_{l≥s} (b_s·c_l) L(l, s) gy_l + L(T−1, s) gfinal b_s: an SSD run backwards in time with
        b and c swapped, input gy, initial state gfinal and the log-decays shifted by one step; its
        final state is dh0 / a_0.
      • dB_s = Σ_{h∈g} Σ_p X_s[p] H'_s[p, :], H' that reverse run's state: the same reverse problem
        transposed (channels ↔ state: x = c, b = gy, c = X).
      • dC_l = Σ_{h∈g} H_lᵀ gy_l, H the forward state: the forward problem transposed (x = b, b = x).
      • the log-decays: with Acs the global cumsum of log a, ∂/∂Acs_t = gy_t·(y_t − D x_t) − X_t·dX_t
        (+ ⟨gfinal, final⟩ at t = T−1), and ∂/∂log a_k = Σ_{t≥k} ∂/∂Acs_t.
    Every run accumulates in fp32 and writes fp32; returns fp32 grads cast to the inputs' dtypes. The
    reverse runs read rows backwards (nothing is flipped in memory) and B, C stay per group (the
    transposed runs broadcast them as their x).
    """
    b, T, H, P = x.shape
    G, N = B.shape[-2:]
    f32 = torch.float32
    gy = torch.zeros_like(y) if gy is None else gy
    gfinal = torch.zeros_like(final) if gfinal is None else gfinal.float()
    la = dt.float() * A.float()  # (b, T, H) log a
    ones = torch.ones(b, T, H, device=x.device, dtype=f32)
    # the reverse problems: reverse step j has log-decay log a_{T−j} (0 at j = 0), in reversed order
    la_rev = torch.cat([la.new_zeros(b, 1, H), la.flip(1)[:, :-1]], dim=1)
    # 1. dX (b, T, H, P) and dh0: reverse scan, b ↔ c
    dX, dh0_rev = ssd_triton_forward(gy, ones, A, C, B, None, gfinal, doc, chunk=chunk, log_a=la_rev,
                                     out_dtype=f32, reverse=True)
    dh0 = dh0_rev * la[:, 0].exp()[..., None, None]
    # 2. dB: reverse and transposed (x = c per group, b = gy, c = X per head; state (N, P)), summed per group
    X = x.float() * dt.float()[..., None]
    dB_h, _ = ssd_triton_forward(C, ones, A, gy, X.to(x.dtype), None, gfinal.transpose(-1, -2), doc,
                                 chunk=chunk, log_a=la_rev, out_dtype=f32, reverse=True)
    dB = _group_sum(dB_h, G)
    # 3. dC: forward, transposed (x = b per group, b = x, c = gy, state Hᵀ)
    dC_h, _ = ssd_triton_forward(B, dt, A, x, gy, None, h0.transpose(-1, -2) if h0 is not None else None,
                                 doc, chunk=chunk, out_dtype=f32)
    dC = _group_sum(dC_h, G)
    # 4. the log-decays, then Δ, A, x, D. gy_t·(y_t − D x_t) = gy_tᵀ (h_t c_t) = c_t·(h_tᵀ gy_t), and
    # h_tᵀ gy_t is run 3's per-head output: reading it there keeps this term in fp32. Taken from the
    # stored y instead (bf16 in bf16 training), its rounding does not cancel against X·dX and A's
    # gradient was off by ~4e-2 relative, against a 1e-2 target for bf16 gradients.
    Gh = dC_h.view(b, T, G, H // G, N) * C.float()[:, :, :, None, :]
    gy_ytil = Gh.sum(-1).reshape(b, T, H)  # (b, T, H)
    dAcs = gy_ytil - (X * dX).sum(-1)  # (b, T, H)
    dAcs[:, -1] += (gfinal * final).sum((-1, -2))
    dla = dAcs.flip(1).cumsum(1).flip(1)
    ddt = (dX * x.float()).sum(-1) + dla * A.float()
    dA = (dla * dt.float()).sum((0, 1))
    dx = dX * dt.float()[..., None]
    dD = None
    if D is not None:
        dx = dx + gy.float() * (D.float()[:, None] if D.dim() == 1 else D.float())
        dD = (gy.float() * x.float()).sum((0, 1))
        dD = dD.sum(-1) if D.dim() == 1 else dD
    return (dx.to(x.dtype), ddt.to(dt.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD.to(D.dtype) if D is not None else None, dh0.to(h0.dtype) if h0 is not None else None)


# ---------------------------------------------------------------------------------- autograd
class TritonSSD(torch.autograd.Function):
    """Forward and backward by the Triton kernels (the backward runs them on three adjoint problems,
    see `ssd_triton_backward`). `backward="recompute"` takes the gradients by recomputation through
    the PyTorch reference instead, for comparison."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, initial_state, doc, chunk, backward):
        y, final = ssd_triton_forward(x, dt, A, B, C, D, initial_state, doc, chunk=chunk)
        ctx.save_for_backward(x, dt, A, B, C, D, initial_state, doc, y, final)
        ctx.chunk, ctx.backward = chunk, backward
        return y, final

    @staticmethod
    def backward(ctx, gy, gfinal):
        x, dt, A, B, C, D, h0, doc, y, final = ctx.saved_tensors
        if ctx.backward == "kernels":
            grads = ssd_triton_backward(x, dt, A, B, C, D, h0, doc, y, final, gy, gfinal, chunk=ctx.chunk)
            out = [g if need else None for g, need in zip(grads, ctx.needs_input_grad[:7])]
            return (*out, None, None, None)
        return _recompute_backward(ctx, (x, dt, A, B, C, D, h0, doc), gy, gfinal)


def _recompute_backward(ctx, saved, gy, gfinal):
    x, dt, A, B, C, D, h0, doc = saved
    inputs = [x, dt, A, B, C, D, h0]
    leaves = [t.detach().requires_grad_(need) if t is not None else None
              for t, need in zip(inputs, ctx.needs_input_grad[:7])]
    with torch.enable_grad():
        y, final = ssd_chunked(*leaves, doc, chunk_size=256)
        wanted = [(i, t) for i, t in enumerate(leaves) if t is not None and t.requires_grad]
        outs, grads_out = [], []
        if gy is not None:
            outs.append(y)
            grads_out.append(gy)
        if gfinal is not None:
            outs.append(final)
            grads_out.append(gfinal)
        got = torch.autograd.grad(outs, [t for _, t in wanted], grads_out, allow_unused=True) if wanted else []
    grads: list[Tensor | None] = [None] * 10
    for (i, _), gr in zip(wanted, got):
        grads[i] = gr
    return tuple(grads)


def ssd_triton(x, dt, A, B, C, D=None, initial_state=None, doc=None, *, chunk: int | None = None,
               backward: str = "kernels"):
    """The `triton` backend: same signature and results as `forms.ssd_chunked` (minus chunk_size).
    backward: "kernels" (the adjoint scans) or "recompute" (autograd through the PyTorch reference)."""
    if backward not in ("kernels", "recompute"):
        raise ValueError(f"ssd_triton: backward must be 'kernels' or 'recompute', got {backward!r}")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, dt, A, B, C, D, initial_state))
    if needs_grad:
        return TritonSSD.apply(x, dt, A, B, C, D, initial_state, doc, chunk, backward)
    return ssd_triton_forward(x, dt, A, B, C, D, initial_state, doc, chunk=chunk)
