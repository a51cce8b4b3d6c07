"""Mamba-2 mixer in pure PyTorch (Dao & Gu 2024, "Transformers are SSMs", the SSD layer).

Parameter names and constructor arguments are those of ``mamba_ssm.modules.mamba2.Mamba2``, so a
state dict trained with the fused kernels loads unchanged. ``ssd_scan_ref`` is the step-by-step
recurrence (the specification); ``ssd_chunk_scan`` is the block decomposition of the paper
(section 6: intra-chunk quadratic form + inter-chunk state passing) written for speed on the CPU:
C·Bᵀ is contracted before anything is multiplied by the head dimension, the chunk is
``min(chunk_size, L)``, a trailing partial chunk is scanned on its own instead of padding, and the
inter-chunk pass is skipped when there is only one chunk and no initial state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import cpu_ops, fused_ops


# Block length of the PyTorch chunked scan. The block decomposition is exact for any block length, so
# this is a speed choice only (results agree to rounding): on the CPU, blocks of 128 beat the fused
# kernels' 256 (less quadratic intra-block work), and 64 beat 128 by 6% at L 256 and 10% at 4096 in
# the mixer's forward (interleaved, benchmarks/backbone.py's mixer) with every head's decay factored.
CPU_BLOCK = 64
# Sequences up to this long (and a chunk_size at least as long) are scanned as one block with no state
# passing (``_OneChunkScan``): every MedSora scan at 32x256 (128 long).
ONE_CHUNK_MAX = 128


def ssd_scan_ref(x, dt, A, B, C, D=None, initial_states=None, return_final_states=False):
    """The SSD recurrence, one step at a time (reference; slow).

    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_tᵀ,  y_t = C_t h_t + D x_t   (per head; B, C per group)
    x: (b, l, h, p), dt: (b, l, h) (already softplus'ed), A: (h,), B, C: (b, l, g, n),
    D: (h,) or (h, p), initial_states: (b, h, p, n). Returns y (b, l, h, p) [, final state].
    """
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    Bh = B.repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    Ch = C.repeat_interleave(h // g, dim=2)
    state = x.new_zeros(b, h, p, n) if initial_states is None else initial_states.to(x.dtype)
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)  # (b, h)
        state = decay[:, :, None, None] * state + (dt[:, t, :, None, None] * x[:, t, :, :, None]) * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    y = torch.stack(ys, dim=1)  # (b, l, h, p)
    if D is not None:
        y = y + x * (D[:, None] if D.dim() == 1 else D)
    return (y, state) if return_final_states else y


# Largest spread of the decay's cumulative sum within a chunk for which a head's diagonal blocks are
# computed in factored form: exp(cs_i - cs_j) = exp(cs_i - m) exp(m - cs_j), m the middle of the
# chunk's range, so every factor lies within exp(+-limit/2): no overflow or underflow, and the products
# are as accurate as exp of the difference (both round the exponent to ulp(|cs|)). Heads beyond it
# (fast decay over a long chunk) use the (T x T) decay matrices.
FACTORED_RANGE = {torch.float32: 120.0, torch.float64: 1200.0}


def _decay_matrix(cs: torch.Tensor) -> torch.Tensor:
    """L_ij = exp(cs_i - cs_j) for i >= j, 0 above the diagonal. cs: (..., T) -> (..., T, T)."""
    T = cs.shape[-1]
    diff = cs[..., :, None] - cs[..., None, :]
    keep = torch.ones(T, T, dtype=torch.bool, device=cs.device).tril()
    return torch.exp(diff.masked_fill_(~keep, -math.inf))  # diff is ours: filled in place


class _DiagonalBlocks(torch.autograd.Function):
    """The diagonal blocks of SSD: y_i = sum_{j<=i} (C_i·B_j) exp(cs_i - cs_j) dt_j X_j per chunk and head,
    cs = cumsum(dt A) within the chunk.

    Most heads: the decay is factored out of the (T x T) matrix, y = a ∘ (tril(C Bᵀ) (dt b ∘ X)) with
    a_i = exp(cs_i - m), b_j = exp(m - cs_j). tril(C Bᵀ) is shared by the r heads of a group, so all
    their diagonal blocks are one matmul of a (T x T) matrix with (T x r*p) columns, and no per-head
    (T x T) decay matrix is formed (its exp, mask and product were most of a CPU training step's
    elementwise time). Heads whose spread exceeds ``FACTORED_RANGE`` get a = b = 0 there and are
    computed apart with their (T x T) decay matrices. dt enters with b, so dt X is never formed; X
    may be a strided view (of the convolution's output). Keeps only its inputs for the backward.

    C, B: (..., T, n) per group, cs: (..., r, T), X: (..., T, r, p), dt: (..., T, r) -> y (..., T, r, p).
    """

    @staticmethod
    def forward(ctx, C, B, cs, X, dt):
        y, full = _diagonal_forward(C, B, cs, X, dt)
        ctx.save_for_backward(C, B, cs, X, dt)
        ctx.full = full
        return y

    @staticmethod
    def backward(ctx, gy):
        saved = ctx.saved_tensors
        # Under autocast the forward's matmuls ran in a lower precision than the saved inputs; the
        # backward (run without autocast) works in one promoted dtype and returns each input's own.
        dtype = gy.dtype
        for t in saved:
            dtype = torch.promote_types(dtype, t.dtype)
        grads = _diagonal_backward(gy.to(dtype), *(t.to(dtype) for t in saved), ctx.full)
        return tuple(g.to(t.dtype) for g, t in zip(grads, saved))


def _decay_factors(cs, full):
    """a_i = exp(cs_i - m), b_j = exp(m - cs_j) as (..., T, r, 1), m the middle of each chunk's range;
    zero for the heads in ``full`` (their exponents may overflow)."""
    e = cs - (cs.amax(-1, keepdim=True) + cs.amin(-1, keepdim=True)) * 0.5
    if full is None:
        a, b = e.exp(), e.neg().exp_()
    else:
        skip = torch.zeros(cs.shape[-2], 1, dtype=torch.bool, device=cs.device).index_fill_(0, full, True)
        a, b = e.masked_fill(skip, -math.inf).exp_(), e.neg().masked_fill_(skip, -math.inf).exp_()
    return a.transpose(-1, -2).unsqueeze(-1), b.transpose(-1, -2).unsqueeze(-1)


def _diagonal_forward(C, B, cs, X, dt):
    """``_DiagonalBlocks``' forward: y and the heads computed with decay matrices (None: all factored)."""
    full = None
    if not cs.is_meta:  # on the meta device (FLOP counts, shapes) every head is factored
        spread = (cs.amax(-1) - cs.amin(-1)).flatten(0, -2).amax(0)  # (r,): each head's widest chunk
        full = (~(spread <= FACTORED_RANGE.get(cs.dtype, 0.0))).nonzero().squeeze(1)  # NaN: full too
        full = full if len(full) else None  # one host sync: the choice decides the shapes below
    a, b = _decay_factors(cs, full)
    M = (C @ B.transpose(-1, -2)).tril_()  # (..., T, T)
    y = (M @ (X * (dt.unsqueeze(-1) * b)).flatten(-2)).view(X.shape).mul_(a)
    if full is not None:
        Xu = (X * dt.unsqueeze(-1)).index_select(-2, full).transpose(-2, -3)  # (..., u, T, p)
        yu = (M.unsqueeze(-3) * _decay_matrix(cs.index_select(-2, full))) @ Xu
        y.index_copy_(-2, full, yu.transpose(-2, -3))
    return y, full


def _diagonal_backward(gy, C, B, cs, X, dt, full):
    """``_DiagonalBlocks``' backward: gradients of C, B, cs, X, dt (one dtype)."""
    a, b = _decay_factors(cs, full)
    M = (C @ B.transpose(-1, -2)).tril_()
    w = dt.unsqueeze(-1) * b  # (..., T, r, 1)
    xs = (X * w).flatten(-2)  # (..., T, r*p)
    gp = (gy * a).flatten(-2)  # the gradient of M xs
    p = M @ xs  # recomputed: keeping it would hold another (T x r*p) per chunk through the step
    g_a = (gp * p).unflatten(-1, X.shape[-2:]).sum(-1)  # (..., T, r): through a (da/dcs = a)
    gxs = (M.transpose(-1, -2) @ gp).view(X.shape)
    q = (gxs * X).sum(-1)  # d/d(dt b), per token and head
    g_dt = q * b.squeeze(-1)
    g_cs = (g_a - g_dt * dt).transpose(-1, -2).contiguous()  # through b (db/dcs = -b), (..., r, T)
    gX = gxs.mul_(w)
    gM = gp @ xs.transpose(-1, -2)  # (..., T, T)
    if full is not None:
        L = _decay_matrix(cs.index_select(-2, full))  # (..., u, T, T)
        Mf = M.unsqueeze(-3) * L
        Xu = X.index_select(-2, full).transpose(-2, -3)  # (..., u, T, p)
        dtu = dt.index_select(-1, full).transpose(-1, -2).unsqueeze(-1)  # (..., u, T, 1)
        gyu = gy.index_select(-2, full).transpose(-2, -3)
        gMf = gyu @ (Xu * dtu).transpose(-1, -2)
        gXdt = Mf.transpose(-1, -2) @ gyu  # (..., u, T, p): the gradient of dt X
        gX.index_copy_(-2, full, (gXdt * dtu).transpose(-2, -3))
        g_dt.index_copy_(-1, full, (gXdt * Xu).sum(-1).transpose(-1, -2))
        gM += (gMf * L).sum(-3)
        gS = gMf.mul_(Mf)  # d/d(cs_i - cs_j); zero above the diagonal, where Mf is
        g_cs.index_copy_(-2, full, gS.sum(-1) - gS.sum(-2))
    gM.tril_()
    return gM @ B, gM.transpose(-1, -2) @ C, g_cs, gX, g_dt


class _OneChunkScan(torch.autograd.Function):
    """Causal convolution, SiLU and the whole SSD scan of sequences no longer than a chunk, in one function:
    c = conv(x), y = diagonal blocks of silu(c) + D x_ssm, (x_ssm, B, C) = silu(c) split (no initial or final
    state). With ``rows`` (see ``_CausalConvSiLU``) the sequences are the rows of x gathered by rows[0].

    Autograd would keep the convolution's output c (for SiLU's backward) and silu(c) (as x, B and C); this
    keeps only its inputs: x (a view of the input projection, alive anyway for the gate z), the weights,
    dt, A and D, and recomputes the gather, the convolution and the SiLU in the backward, which needs the
    gathered input again for the weights' gradient anyway. That is one (length x conv_dim) tensor less per
    scan through the step (MedSora's four spiral scans: 64 x 128 x 1280 floats per block at 32x256) for
    k multiply-adds over it.

    x: (b, l, conv_dim) or (B, M, conv_dim) with rows, w: (conv_dim, k), bias: (conv_dim,) or None,
    dt: (b, l, h) softplus'ed (the scan's dtype), A: (h,), D: (h,) or (h, p) -> y (b, l, h, p).
    """

    @staticmethod
    def _views(s, dt, A, g, h, n):
        b, l, _ = s.shape
        r = h // g
        x, B, C = s.split([s.shape[-1] - 2 * g * n, g * n, g * n], dim=-1)
        p = x.shape[-1] // h
        X = x.view(b, l, g, r, p).transpose(1, 2)  # (b, g, l, r, p)
        dtg = dt.view(b, l, g, r).transpose(1, 2)  # (b, g, l, r)
        cs = torch.cumsum(dtg * A.view(g, 1, r), dim=2).transpose(-1, -2)  # (b, g, r, l)
        return x.view(b, l, h, p), X, B.view(b, l, g, n).transpose(1, 2), C.view(b, l, g, n).transpose(1, 2), dtg, cs

    @staticmethod
    def forward(ctx, x, w, bias, rows, dt, A, D, g, n):
        b, l, h = dt.shape
        s = _conv_silu(x, w, bias, rows, dt.dtype)[0]
        xv, X, Bg, Cg, dtg, cs = _OneChunkScan._views(s, dt, A, g, h, n)
        y, full = _diagonal_forward(Cg, Bg, cs, X, dtg)  # (b, g, l, r, p)
        y = y.transpose(1, 2).reshape(b, l, h, -1)
        y.addcmul_(xv, D[:, None] if D.dim() == 1 else D)
        ctx.save_for_backward(x, w, bias, dt, A, D)
        ctx.rows, ctx.full, ctx.g, ctx.n = rows, full, g, n
        return y

    @staticmethod
    def backward(ctx, gy):
        x, w, bias, dt, A, D = ctx.saved_tensors
        rows, g, n = ctx.rows, ctx.g, ctx.n
        b, l, h = dt.shape
        r = h // g
        gy = gy.to(dt.dtype).contiguous()  # under autocast the forward's output was lower precision
        s, c, xs = _conv_silu(x, w, bias, rows, dt.dtype)  # recomputed
        xv, X, Bg, Cg, dtg, cs = _OneChunkScan._views(s, dt, A, g, h, n)
        p = X.shape[-1]
        Dv = D[:, None] if D.dim() == 1 else D
        gD = (gy * xv).sum((0, 1))  # (h, p)
        gD = gD.sum(-1) if D.dim() == 1 else gD
        gyg = gy.view(b, l, g, r, p).transpose(1, 2)
        gC, gB, g_cs, gX, g_dt = _diagonal_backward(gyg, Cg, Bg, cs, X, dtg, ctx.full)
        # cs = cumsum(dt A) along the length: its gradient summed from the end
        g_dA = g_cs.flip(-1).cumsum(-1).flip(-1).transpose(-1, -2)  # (b, g, l, r)
        g_dt = (g_dt + g_dA * A.view(g, 1, r)).transpose(1, 2).reshape(b, l, h)
        gA = (g_dA * dtg).sum((0, 2)).reshape(h)
        gs = s  # silu(c) is not needed any more: its buffer takes the gradient
        d_ssm = h * p
        gs[..., :d_ssm].view(b, l, g, r, p).copy_(gX.transpose(1, 2)).view(b, l, h, p).addcmul_(gy, Dv)
        gs[..., d_ssm:d_ssm + g * n].view(b, l, g, n).copy_(gB.transpose(1, 2))
        gs[..., d_ssm + g * n:].view(b, l, g, n).copy_(gC.transpose(1, 2))
        gx, gw, gb = _conv_silu_backward(gs, x, w, bias, rows, c, xs)
        return gx, gw, gb, None, g_dt, gA, gD, None, None


def _chunk_scan_full(x, dt, A, B, C, T, initial_states, need_final):
    """SSD over a length that is a multiple of T. Shapes as ``ssd_chunk_scan``; no D term."""
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    c, r = l // T, h // g
    dA = (dt * A).view(b, c, T, g, r).permute(0, 1, 3, 4, 2)  # (b, c, g, r, T)
    Bc = B.view(b, c, T, g, n).transpose(2, 3).unsqueeze(3)  # (b, c, g, 1, T, n)
    Cc = C.view(b, c, T, g, n).transpose(2, 3).unsqueeze(3)  # (b, c, g, 1, T, n)
    A_cs = torch.cumsum(dA, dim=-1)  # (b, c, g, r, T)

    # 1. Diagonal blocks: y = (C Bᵀ ∘ L) (dt x), L_ij = exp(A_cs_i - A_cs_j) for i >= j; C·Bᵀ is contracted
    # over n once per group and, with the decay factored out, multiplies all r heads at once.
    y = _DiagonalBlocks.apply(Cc.squeeze(3), Bc.squeeze(3), A_cs, x.view(b, c, T, g, r, p).transpose(2, 3),
                              dt.view(b, c, T, g, r).transpose(2, 3)).transpose(2, 3)  # (b, c, T, g, r, p)

    # 2.-4. Off-diagonal blocks: chunk states, state passing across chunks, state -> output. The states
    # are kept as (n, r*p) per group, so the r heads of a group share one matmul with B and one with C
    # (with (p, n) per head, B and C would be copied r times to broadcast over the heads).
    if c > 1 or initial_states is not None or need_final:
        xdt = (x * dt[..., None]).view(b, c, T, g, r, p)  # token-major
        decay_to_end = torch.exp(A_cs[..., -1:] - A_cs).permute(0, 1, 4, 2, 3)[..., None]  # (b, c, T, g, r, 1)
        xs = (xdt * decay_to_end).transpose(2, 3).reshape(b, c, g, T, r * p)
        states = Bc.squeeze(3).transpose(-1, -2) @ xs  # (b, c, g, n, r*p)
        if initial_states is None:
            init = states.new_zeros(b, g, n, r * p)
        else:  # (b, h, p, n) -> (b, g, n, r*p)
            init = initial_states.to(states.dtype).view(b, g, r, p, n).permute(0, 1, 4, 2, 3).reshape(b, g, n, r * p)
        # Inter-chunk recurrence S_{k+1} = exp(sum of chunk k's dA) S_k + states_k, one step per chunk
        # (linear in the number of chunks, unlike the listing's (c+1) x (c+1) decay matrix).
        chunk_decay = torch.exp(A_cs[..., -1])[:, :, :, None, :, None].expand(b, c, g, 1, r, p).reshape(
            b, c, g, 1, r * p)  # (b, c, g, 1, r*p): per head, repeated over its p channels
        starts, S = [], init
        for decay_k, states_k in zip(chunk_decay.unbind(1), states.unbind(1)):  # unbind: one grad buffer
            starts.append(S)
            S = decay_k * S + states_k
        final = S.view(b, g, n, r, p).permute(0, 1, 3, 4, 2).reshape(b, h, p, n)
        start = torch.stack(starts, dim=1)  # (b, c, g, n, r*p): the state entering each chunk
        y_off = (Cc.squeeze(3) @ start).view(b, c, g, T, r, p).transpose(2, 3)  # (b, c, T, g, r, p)
        y = torch.addcmul(y, y_off, torch.exp(A_cs).permute(0, 1, 4, 2, 3)[..., None])
    else:
        final = None
    return y.reshape(b, l, h, p), final


def ssd_chunk_scan(x, dt, A, B, C, chunk_size=256, D=None, initial_states=None, return_final_states=False):
    """Chunked SSD scan, equal to ``ssd_scan_ref``. Any length L (no padding is computed).

    x: (b, l, h, p), dt: (b, l, h) (already softplus'ed), A: (h,) negative, B, C: (b, l, g, n),
    D: (h,) or (h, p), initial_states: (b, h, p, n). Returns y (b, l, h, p) [, final state (b, h, p, n)].
    """
    b, l, h, p = x.shape
    if h % B.shape[2]:
        raise ValueError(f"ssd_chunk_scan: heads ({h}) must be a multiple of groups ({B.shape[2]})")
    T = max(1, min(chunk_size, l))
    full = (l // T) * T
    need_final = return_final_states or full < l
    y, state = _chunk_scan_full(x[:, :full], dt[:, :full], A, B[:, :full], C[:, :full], T, initial_states, need_final)
    if full < l:  # the trailing partial chunk, started from the state the full chunks left
        y_tail, state = _chunk_scan_full(
            x[:, full:], dt[:, full:], A, B[:, full:], C[:, full:], l - full, state, return_final_states
        )
        y = torch.cat([y, y_tail], dim=1)
    if D is not None:
        y = torch.addcmul(y, x, D[:, None] if D.dim() == 1 else D)  # one pass: y + x D
    return (y, state) if return_final_states else y


def ssd_step(x, dt, A, B, C, D=None, initial_states=None, return_final_states=False):
    """The SSD scan of a length-1 sequence in closed form (joint-training images are length-1 scans).

    h = exp(dt A) h0 + dt x Bᵀ,  y = C h + D x. Shapes as ``ssd_scan_ref`` with l = 1; no chunk buffers.
    """
    b, l, h, p = x.shape
    if l != 1:
        raise ValueError(f"ssd_step: expects sequences of length 1, got {l}")
    g = B.shape[2]
    r = h // g
    xdt = x[:, 0] * dt[:, 0, :, None]  # (b, h, p)
    # C hᵀ = dt x (B·C): one scalar per group, shared by its r heads (no (b, h, p, n) state is formed).
    bc = (B[:, 0] * C[:, 0]).sum(-1).repeat_interleave(r, dim=1)  # (b, h)
    y = xdt * bc[..., None]
    state = None
    if initial_states is not None:
        h0 = torch.exp(dt[:, 0] * A)[:, :, None, None] * initial_states.to(x.dtype)  # (b, h, p, n)
        Cg = C[:, 0].unsqueeze(2)  # (b, g, 1, n)
        y = y + (h0.view(b, g, r, p, -1) @ Cg.unsqueeze(-1)).reshape(b, h, p)
    if return_final_states:
        Bh = B[:, 0].repeat_interleave(r, dim=1)  # (b, h, n)
        state = xdt[..., None] * Bh[:, :, None, :]
        if initial_states is not None:
            state = state + h0
    y = y[:, None]  # (b, 1, h, p)
    if D is not None:
        y = y + x * (D[:, None] if D.dim() == 1 else D)
    return (y, state) if return_final_states else y


# CUDA's limit on a launch grid's 2nd and 3rd extents; mamba_ssm's SSD kernels put batch x chunks there.
FUSED_GRID_LIMIT = 65535


def fused_chunk_size(chunk_size: int, length: int) -> int:
    """The fused kernels' chunk for a sequence of ``length``: at most ``chunk_size``, no larger than the
    next power of two >= length (>= 16, the smallest tile of tl.dot). The kernels allocate
    chunk x chunk buffers whatever the length, so a 4-frame temporal scan at chunk 256 would pay
    for 256 x 256; the decomposition is exact for any chunk, so this is a memory and speed choice."""
    return min(chunk_size, max(16, 1 << max(0, length - 1).bit_length()))


def fused_chunk_scan(scan, x, dt, A, B, C, chunk_size, initial_states=None, return_final_states=False, **kw):
    """``scan`` (mamba_chunk_scan_combined's signature) over batch slices small enough to launch:
    batch x chunks stays under FUSED_GRID_LIMIT; the slices are independent sequences."""
    b, l = x.shape[:2]
    per_call = max(1, FUSED_GRID_LIMIT // -(-l // chunk_size))
    if b <= per_call:
        return scan(x, dt, A, B, C, chunk_size, initial_states=initial_states,
                    return_final_states=return_final_states, **kw)
    outs = [
        scan(x[i : i + per_call], dt[i : i + per_call], A, B[i : i + per_call], C[i : i + per_call], chunk_size,
             initial_states=None if initial_states is None else initial_states[i : i + per_call],
             return_final_states=return_final_states, **kw)
        for i in range(0, b, per_call)
    ]
    if return_final_states:
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
    return torch.cat(outs)


def conv1d_input(xBC: torch.Tensor) -> torch.Tensor:
    """(b, l, d) -> the (b, d, l) tensor causal-conv1d accepts. A channel-last view (stride 1 along d)
    is taken as is only when its batch and length strides are multiples of 8 (causal-conv1d refuses
    it otherwise); else it is made contiguous (channel-first), as upstream's rearrange_and_update_stride."""
    x = xBC.transpose(1, 2)  # (b, d, l)
    if x.stride(1) == 1 and (x.stride(0) % 8 or x.stride(2) % 8):
        x = x.contiguous()
    return x


def _flat_index(index: torch.Tensor, b: int, m: int) -> torch.Tensor:
    """``index`` (rows of one (M, E) matrix) repeated for each of b stacked matrices, as rows of (b*M, E)."""
    return index if b == 1 else (index + torch.arange(0, b * m, m, device=index.device)[:, None]).reshape(-1)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x.index_select(1, index) for x (B, M, E), as one gather of rows of the (B*M, E) matrix (a gather
    along dim 0 is several times faster on the CPU than along dim 1, even for B = 1)."""
    b, m, e = x.shape
    return x.reshape(b * m, e).index_select(0, _flat_index(index, b, m)).view(b, -1, e)


def _sequences(x: torch.Tensor, rows) -> torch.Tensor:
    """The sequences a convolution reads: x itself, or with ``rows`` = (index, back, fold, length) x's rows
    gathered by index as (sequences, length, E)."""
    return x if rows is None else gather_rows(x, rows[0]).view(-1, rows[3], x.shape[-1])


def gather_rows_back(g: torch.Tensor, back: torch.Tensor, fold: int) -> torch.Tensor:
    """The gradient of ``gather_rows(x, index)`` for x (B, M, E) when ``index`` lists every row ``fold``
    times: g (B, fold*M, E) gathered by ``back`` (the inverse permutation), the ``fold`` copies summed
    (index_select's own backward would zero-fill and scatter)."""
    g = gather_rows(g, back)
    return g.view(g.shape[0], fold, -1, g.shape[-1]).sum(1) if fold > 1 else g


def _cpu_conv(x, w, dtype=None):
    """medvid's CPU convolution kernels when they apply: CPU tensors, x and w (and ``dtype``, the result's)
    of one dtype, float32 or float64; else None (the eager convolution below)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or w.dtype != x.dtype:
        return None
    if dtype is not None and dtype != x.dtype:
        return None
    return cpu_ops()


def _kernel_rows(x, rows):
    """x (B, M, C) as the kernels read it: (B*M, C) with unit channel stride, the flat gather index of
    ``rows`` (None: the sequences are x's own rows), the number of sequences and their length."""
    xf = x.reshape(-1, x.shape[-1])
    if xf.stride(-1) != 1:
        xf = xf.contiguous()
    if rows is None:
        return xf, None, x.shape[0], x.shape[1]
    index, length = _flat_index(rows[0], x.shape[0], x.shape[1]).contiguous(), rows[3]
    return xf, index, index.numel() // length, length


def _kernel_conv_silu(ops, x, w, bias, rows):
    """silu(conv) of x's sequences by the CPU kernel: (sequences, length, C)."""
    xf, index, nseq, length = _kernel_rows(x, rows)
    return ops.forward(xf, index, nseq, length, w, bias, True).view(nseq, length, x.shape[-1])


def _kernel_conv_silu_backward(ops, g, x, w, bias, rows):
    """The gradients of x (its own shape: the gathered copies summed back), w and bias from g, the
    gradient at ``_kernel_conv_silu``'s output; the convolution is recomputed, nothing was kept."""
    xf, index, nseq, length = _kernel_rows(x, rows)
    gx, gw, gb = ops.backward(g.reshape(-1, x.shape[-1]), xf, index, nseq, length, w, bias, True)
    gx = gx.view(x.shape) if rows is None else ops.fold_rows(gx.view(x.shape[0], -1, x.shape[-1]), rows[1], rows[2])
    return gx, gw, gb if bias is not None else None


def _conv_silu(x, w, bias, rows, dtype=None):
    """silu(conv) of x's sequences (see ``_sequences``) in ``dtype`` (None: the convolution's own), the
    convolution's output c and the sequences xs that the eager backward needs (both None when medvid's
    CPU kernel ran: its backward recomputes them)."""
    ops = _cpu_conv(x, w, dtype)
    if ops is not None:
        return _kernel_conv_silu(ops, x, w, bias, rows), None, None
    xs = _sequences(x, rows)
    c = _conv_forward(xs, w, bias)
    c = c if dtype is None else c.to(dtype)
    return F.silu(c), c, xs


def _conv_silu_backward(g, x, w, bias, rows, c, xs=None):
    """The gradients of x (its own shape), w and bias from g, the gradient at ``_conv_silu``'s output; c
    and xs are what ``_conv_silu`` returned with it (c None: the CPU kernel; xs None: gathered again)."""
    if c is None:
        return _kernel_conv_silu_backward(cpu_ops(), g, x, w, bias, rows)
    xs = _sequences(x, rows) if xs is None else xs
    gx, gw, gb = _conv_backward(torch.ops.aten.silu_backward(g, c), xs, w, bias is not None)
    if rows is not None:
        gx = gather_rows_back(gx.view(x.shape[0], -1, x.shape[-1]), rows[1], rows[2])
    return gx, gw, gb


def _conv_forward(x, w, bias):
    k, l = w.shape[1], x.shape[1]
    out = x * w[:, k - 1] if bias is None else torch.addcmul(bias, x, w[:, k - 1])
    for i in range(k - 1):
        s = k - 1 - i  # tap i looks s steps back
        if s < l:
            out[:, s:].addcmul_(x[:, : l - s], w[:, i])
    return out


def _conv_backward(g, x, w, has_bias):
    k, l = w.shape[1], g.shape[1]
    gx = g * w[:, k - 1]
    gw = [None] * k
    gw[k - 1] = (g * x).sum((0, 1))
    for i in range(k - 1):
        s = k - 1 - i
        if s < l:
            gx[:, : l - s].addcmul_(g[:, s:], w[:, i])
            gw[i] = (g[:, s:] * x[:, : l - s]).sum((0, 1))
        else:
            gw[i] = torch.zeros_like(gw[k - 1])
    return gx, torch.stack(gw, dim=1), g.sum((0, 1)) if has_bias else None


class _CausalConvSiLU(torch.autograd.Function):
    """silu(out), out[t, c] = bias[c] + sum_i w[c, i] x[t - (k-1) + i, c]: channels-last, zeros before t = 0.

    Written as k shifted multiply-adds with a hand-written backward: PyTorch's CPU depthwise conv1d
    is slow for short sequences and some dtypes (it loops over channel groups) and needs two
    transposes, and letting autograd differentiate the shifted slices allocates a zero-filled
    gradient per slice. With ``rows`` = (index, back, fold, length) the convolution's input is the
    rows of x (B, M, C) gathered by ``index`` (MedSora's spiral scans: (B*S*lines, length, C)); the
    gathered copy is not kept but gathered again in the backward (x is alive anyway: it is a view of
    the input projection), and its gradient goes back through ``back``, the ``fold`` copies summed.
    On the CPU in float32/float64 medvid's kernel (``kernels.cpu_ops``) does gather, taps and SiLU
    in one pass, and its backward likewise, keeping only x and the weights.
    """

    @staticmethod
    def forward(ctx, x, w, bias, rows):
        s, c, _ = _conv_silu(x, w, bias, rows)
        ctx.save_for_backward(x, w, bias, c)  # not the gathered copy: gathered again; c None with the kernel
        ctx.rows = rows
        return s

    @staticmethod
    def backward(ctx, g):
        x, w, bias, c = ctx.saved_tensors
        return *_conv_silu_backward(g, x, w, bias, ctx.rows, c), None


def causal_conv1d_silu(x, w, bias, rows=None):
    """silu(depthwise causal conv along the length): x (b, l, c), w (c, k), bias (c,) -> (b, l, c); with
    ``rows`` (see ``_CausalConvSiLU``) the sequences are x's rows gathered by rows[0], rows[3] long."""
    return _CausalConvSiLU.apply(x, w, bias, rows)


def causal_conv1d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv along the length (no activation): x (b, l, c), w (c, k), bias (c,) -> (b, l, c)."""
    return _conv_forward(x, w, bias)


class _GatedRMSNorm(torch.autograd.Function):
    """sum over ``dim`` of rmsnorm(y * silu(z)) * weight, per group of ``group_size`` channels (z broadcasts
    to y; ``dim`` None: no sum), then the output projection ``proj_w`` (+ ``proj_b``) when one is given.

    Hand-written backward that keeps y, z and the per-group scale only and recomputes the rest: autograd
    would keep y * silu(z), its square, the normed value and the sum, and the projection would keep its
    input (the normed sum), which the backward recomputes anyway on its way to y's gradient. On the CPU in
    float32/float64, for a gate of y's shape or MedSora's (B, G, K, N, D) summed over K, medvid's kernel
    (``kernels.cpu_ops``) does the norm in one pass each way."""

    @staticmethod
    def _kernel_layout(y, z, weight, dim, proj_w):
        """(y (B, G, K, N, D), z (B, N, D)) as medvid's CPU kernel reads them, or None (its eager path):
        no sum with z of y's shape, or MedSora's (B, G, K, N, D) summed over K with z (B, 1, 1, N, D)."""
        dt = y.dtype
        if (y.device.type != "cpu" or dt not in (torch.float32, torch.float64) or z.dtype != dt
                or weight.dtype != dt or (proj_w is not None and proj_w.dtype != dt)):
            return None
        d = y.shape[-1]
        if dim is None and z.shape == y.shape:
            y5, z3 = y.reshape(1, 1, 1, -1, d), z.reshape(1, -1, d)
        elif dim is not None and y.dim() == 5 and dim % 5 == 2 and z.shape == (y.shape[0], 1, 1, y.shape[3], d):
            y5, z3 = y, z[:, 0, 0]
        else:
            return None
        if cpu_ops() is None:
            return None
        return y5.contiguous(), z3 if z3.stride(-1) == 1 else z3.contiguous()

    @staticmethod
    def forward(ctx, y, z, weight, group_size, eps, dim, proj_w=None, proj_b=None):
        ctx.group_size, ctx.dim, ctx.has_proj_b = group_size, dim, proj_b is not None
        lay = _GatedRMSNorm._kernel_layout(y, z, weight, dim, proj_w)
        ctx.kernel = lay is not None
        if ctx.kernel:  # medvid's CPU kernel: one pass, silu(z) once per token for all summed scans
            out, r = cpu_ops().norm_forward(*lay, weight, group_size, eps)
            out = out.view(y.shape) if dim is None else out
            ctx.save_for_backward(y, z, weight, r, proj_w)
            return out if proj_w is None else F.linear(out, proj_w, proj_b)
        v = (y * F.silu(z)).unflatten(-1, (-1, group_size))  # (..., groups, group_size)
        # one reading pass (pow + mean would write v**2 first)
        r = torch.linalg.vector_norm(v, dim=-1, keepdim=True).square_().div_(group_size).add_(eps).rsqrt_()
        n = v.mul_(r).flatten(-2)
        out = (n.sum(dim) if dim is not None else n).mul_(weight)
        ctx.save_for_backward(y, z, weight, r, proj_w)
        return out if proj_w is None else F.linear(out, proj_w, proj_b)

    @staticmethod
    def backward(ctx, g):
        y, z, weight, r, proj_w = ctx.saved_tensors
        if ctx.kernel:
            return _GatedRMSNorm._kernel_backward(ctx, g, y, z, weight, r, proj_w)
        gs, dim = ctx.group_size, ctx.dim
        sz = F.silu(z)
        n = (y * sz).unflatten(-1, (-1, gs)).mul_(r)  # the normed value, recomputed
        gpw = gpb = None
        if proj_w is not None:
            # Under autocast the projection ran in a lower precision; its backward runs in y's dtype.
            dtype = torch.promote_types(g.dtype, y.dtype)
            g = g.to(dtype)
            if ctx.needs_input_grad[6]:
                normed = (n.flatten(-2).sum(dim) if dim is not None else n.flatten(-2)) * weight  # its input
                gpw = (g.flatten(0, -2).transpose(0, 1) @ normed.flatten(0, -2).to(dtype)).to(proj_w.dtype)
            if ctx.has_proj_b and ctx.needs_input_grad[7]:
                gpb = g.flatten(0, -2).sum(0).to(proj_w.dtype)
            g = g @ proj_w.to(dtype)
        if dim is not None:
            g = g.unsqueeze(dim)  # the same gradient reaches every summed scan
        gw = (g * n.flatten(-2)).flatten(0, -2).sum(0) if ctx.needs_input_grad[2] else None
        gn = (g * weight).unflatten(-1, (-1, gs))
        # d/dv of v * rsqrt(mean(v^2) + eps) applied to gn: r * (gn - n * mean(gn * n))
        gv = (gn - n * (gn * n).mean(-1, keepdim=True)).mul_(r).flatten(-2)
        gy = gv * sz
        gz = None
        if ctx.needs_input_grad[1]:
            gz = torch.ops.aten.silu_backward((gv * y).sum_to_size(z.shape), z)
        return gy, gz, gw, None, None, None, gpw, gpb

    @staticmethod
    def _kernel_backward(ctx, g, y, z, weight, r, proj_w):
        y5, z3 = _GatedRMSNorm._kernel_layout(y, z, weight, ctx.dim, proj_w)
        gpw = gpb = None
        want_pw = proj_w is not None and ctx.needs_input_grad[6]
        gout = g
        if proj_w is not None:
            gout = g.to(y.dtype)  # the gradient at the projection's output
            if ctx.has_proj_b and ctx.needs_input_grad[7]:
                gpb = gout.flatten(0, -2).sum(0)
            g = gout @ proj_w
        b, gg, _, n, d = y5.shape
        gy, gz, gw, normed = cpu_ops().norm_backward(g.reshape(b, gg, n, d), y5, z3, weight, r, ctx.group_size,
                                                          want_pw)
        if want_pw:  # the projection's input, recomputed by the kernel
            gpw = gout.reshape(-1, gout.shape[-1]).transpose(0, 1) @ normed.view(-1, d)
        return (gy.view(y.shape), gz.view(z.shape), gw if ctx.needs_input_grad[2] else None, None, None, None,
                gpw, gpb)


def gated_rmsnorm(y, z, weight, group_size, eps, dim=None, proj_w=None, proj_b=None):
    """rmsnorm(y * silu(z)) * weight per group (mamba_ssm's norm_before_gate=False), summed over ``dim``,
    then projected by ``proj_w`` (+ ``proj_b``) if given (F.linear)."""
    return _GatedRMSNorm.apply(y, z, weight, group_size, eps, dim, proj_w, proj_b)


class RMSNormGated(nn.Module):
    """mamba_ssm's gated RMSNorm: norm(x * silu(z)) * weight (norm_before_gate=False), per group."""

    def __init__(self, hidden_size, eps=1e-5, norm_before_gate=False, group_size=None, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.norm_before_gate = norm_before_gate
        self.group_size = group_size or hidden_size
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))

    def forward(self, x, z=None):
        if z is not None and not self.norm_before_gate:
            return gated_rmsnorm(x, z, self.weight, self.group_size, self.eps)
        shape = x.shape
        xg = x.reshape(*shape[:-1], shape[-1] // self.group_size, self.group_size)
        xg = xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)
        x = xg.reshape(shape) * self.weight
        if z is not None and self.norm_before_gate:
            x = x * F.silu(z)
        return x


class Mamba2(nn.Module):
    """Mamba-2 mixer (B, L, d_model) -> (B, L, d_model); drop-in for mamba_ssm's ``Mamba2``."""

    def __init__(
        self,
        d_model,
        d_state=128,
        d_conv=4,
        conv_init=None,
        expand=2,
        headdim=64,
        d_ssm=None,
        ngroups=1,
        A_init_range=(1, 16),
        D_has_hdim=False,
        rmsnorm=True,
        norm_before_gate=False,
        dt_min=0.001,
        dt_max=0.1,
        dt_init_floor=1e-4,
        dt_limit=(0.0, float("inf")),
        bias=False,
        conv_bias=True,
        chunk_size=256,
        use_mem_eff_path=True,
        layer_idx=None,
        process_group=None,
        sequence_parallel=True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if process_group is not None:
            raise ValueError("Mamba2: process_group (tensor parallelism) is not supported; pass process_group=None")
        fk = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.headdim = headdim
        self.d_ssm = self.d_inner if d_ssm is None else d_ssm
        if self.d_ssm > self.d_inner:
            raise ValueError(f"Mamba2: d_ssm={self.d_ssm} exceeds d_inner=expand*d_model={self.d_inner}")
        if self.d_ssm % headdim:
            raise ValueError(
                f"Mamba2: headdim={headdim} must divide d_ssm={self.d_ssm} (= expand*d_model unless d_ssm is set); "
                f"choose a headdim that divides it"
            )
        self.nheads = self.d_ssm // headdim
        if ngroups < 1 or self.nheads % ngroups:
            raise ValueError(f"Mamba2: ngroups={ngroups} must divide the number of heads ({self.nheads})")
        if chunk_size < 1:
            raise ValueError(f"Mamba2: chunk_size must be >= 1, got {chunk_size}")
        self.ngroups = ngroups
        self.D_has_hdim, self.rmsnorm, self.norm_before_gate = D_has_hdim, rmsnorm, norm_before_gate
        self.dt_limit = tuple(dt_limit)
        self.chunk_size = chunk_size
        self.conv_init = conv_init
        self.layer_idx = layer_idx
        self.use_mem_eff_path = use_mem_eff_path  # accepted for compatibility; no effect here

        # Order of the projection: [z0, x0 (gated MLP, if d_ssm < d_inner), z, x, B, C, dt].
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias, **fk)
        conv_dim = self.d_ssm + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=conv_bias, **fk)
        self.act = nn.SiLU()
        self.dt_bias = nn.Parameter(torch.empty(self.nheads, **fk))
        self.A_log = nn.Parameter(torch.empty(self.nheads, **fk))
        self.D = nn.Parameter(torch.empty(self.d_ssm if D_has_hdim else self.nheads, **fk))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        if rmsnorm:
            self.norm = RMSNormGated(self.d_ssm, eps=1e-5, norm_before_gate=norm_before_gate,
                                     group_size=self.d_ssm // ngroups, **fk)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **fk)
        self._init_ssm(A_init_range, dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def _init_ssm(self, A_init_range, dt_min, dt_max, dt_init_floor):
        """mamba_ssm's initialisation: dt log-uniform in [dt_min, dt_max], A uniform in A_init_range."""
        if self.A_log.device.type == "meta":
            return
        if self.conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -self.conv_init, self.conv_init)
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log.copy_(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.D.fill_(1.0)

    # -- pieces shared with the spiral (spatial) variant -------------------------------------
    def split_projection(self, zxbcdt):
        """(..., d_in_proj) -> z0, x0, z, xBC, dt (views)."""
        d_mlp = (zxbcdt.shape[-1] - 2 * self.d_ssm - 2 * self.ngroups * self.d_state - self.nheads) // 2
        return torch.split(zxbcdt, [d_mlp, d_mlp, self.d_ssm, self.d_ssm + 2 * self.ngroups * self.d_state,
                                    self.nheads], dim=-1)

    def ssm(self, xBC, dt, initial_states=None, return_final_states=False, rows=None):
        """Causal conv + SSD scan on already-projected inputs: xBC (b, l, conv_dim), dt (b, l, nheads)
        -> y (b, l, d_ssm) before the gated norm. ``rows`` = (index, back, fold, length): the sequences
        are xBC's rows gathered by index, ``length`` long (see ``_CausalConvSiLU``); dt is given gathered."""
        ops = fused_ops(xBC.device)
        w = self.conv1d.weight.squeeze(1)  # (conv_dim, d_conv)
        A = -torch.exp(self.A_log if self.A_log.dtype == torch.float64 else self.A_log.float())  # fp16-safe
        D = self.D.view(self.nheads, self.headdim) if self.D_has_hdim else self.D
        length = rows[3] if rows is not None else xBC.shape[1]
        if ops is None and 1 < length <= min(self.chunk_size, ONE_CHUNK_MAX) and initial_states is None \
                and not return_final_states:
            # One chunk, no states (every MedSora scan at the benchmark's sizes): convolution, SiLU and scan
            # in one function that keeps only its inputs (``_OneChunkScan``).
            odt = torch.promote_types(xBC.dtype, w.dtype)  # the convolution's output dtype
            dtype = odt if odt in (torch.float32, torch.float64) else torch.float32
            dt = self._dt(dt).to(dtype)
            y = _OneChunkScan.apply(xBC, w, self.conv1d.bias, rows, dt, A.to(dtype), D.to(dtype), self.ngroups,
                                    self.d_state)
            return y.reshape(dt.shape[0], length, self.d_ssm).to(odt)
        if ops is not None and ops.conv1d is not None:
            xBC = ops.conv1d(conv1d_input(_sequences(xBC, rows)), w, self.conv1d.bias, activation="silu")
            xBC = xBC.transpose(1, 2)
        else:
            xBC = causal_conv1d_silu(xBC, w, self.conv1d.bias, rows)
        b, l, _ = xBC.shape
        # x, B, C: views of the activated conv output
        x, B, C = torch.split(xBC, [self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        x = x.reshape(b, l, self.nheads, self.headdim)
        B = B.reshape(b, l, self.ngroups, self.d_state)
        C = C.reshape(b, l, self.ngroups, self.d_state)
        if ops is not None and l > 1:
            x, dt, B, C = (v.contiguous() for v in (x, dt, B, C))  # the triton kernels want dense inputs
            out = fused_chunk_scan(ops.chunk_scan, x, dt, A, B, C, fused_chunk_size(self.chunk_size, l), D=D,
                                   dt_bias=self.dt_bias, dt_softplus=True, dt_limit=self.dt_limit,
                                   initial_states=initial_states, return_final_states=return_final_states)
        else:
            dt = self._dt(dt)
            dtype = xBC.dtype if xBC.dtype in (torch.float32, torch.float64) else torch.float32
            args = (x.to(dtype), dt.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype))
            kw = dict(D=D.to(dtype), initial_states=initial_states, return_final_states=return_final_states)
            # Length 1 (each joint-training image): the closed form, no chunk machinery.
            out = (ssd_chunk_scan(*args, min(self.chunk_size, CPU_BLOCK), **kw) if l > 1
                   else ssd_step(*args, **kw))
        y, state = out if return_final_states else (out, None)
        y = y.reshape(b, l, self.d_ssm).to(xBC.dtype)
        return (y, state) if return_final_states else y

    def _dt(self, dt):
        """softplus(dt + dt_bias), clamped to dt_limit when one is set."""
        dt = F.softplus(dt + self.dt_bias)
        return dt.clamp(*self.dt_limit) if self.dt_limit != (0.0, float("inf")) else dt

    def gate_norm(self, y, z):
        """Gated RMSNorm (or plain gating when rmsnorm=False)."""
        return self.norm(y, z) if self.rmsnorm else y * F.silu(z)

    def gate_norm_sum(self, y, z, dim):
        """gate_norm(y, z) summed over ``dim`` of y: several scans sharing the gate z (broadcast to y)."""
        if not self.rmsnorm or self.norm_before_gate:
            return self.gate_norm(y, z).sum(dim)
        return gated_rmsnorm(y, z, self.norm.weight, self.norm.group_size, self.norm.eps, dim)

    def gate_norm_out(self, y, z, dim=None):
        """out_proj(gate_norm(y, z)), summed over ``dim`` of y first if given (scans sharing the gate z).

        The gated RMSNorm and a plain ``nn.Linear`` out_proj are one function whose backward recomputes
        the projection's input instead of keeping it; an out_proj that was replaced or has hooks (LoRA,
        profilers) is called as a module."""
        op = self.out_proj
        if (self.rmsnorm and not self.norm_before_gate and type(op) is nn.Linear
                and not (op._forward_hooks or op._forward_pre_hooks or op._backward_hooks)):
            return gated_rmsnorm(y, z, self.norm.weight, self.norm.group_size, self.norm.eps, dim,
                                 op.weight, op.bias)
        return op(self.gate_norm(y, z) if dim is None else self.gate_norm_sum(y, z, dim))

    def forward(self, u, initial_states=None, return_final_states=False):
        """u: (B, L, d_model) -> (B, L, d_model) [, final SSM state (B, nheads, headdim, d_state)]."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"Mamba2: expected input (batch, length, {self.d_model}), got {tuple(u.shape)}")
        zxbcdt = self.in_proj(u)  # (B, L, d_in_proj)
        z0, x0, z, xBC, dt = self.split_projection(zxbcdt)
        out = self.ssm(xBC, dt, initial_states, return_final_states)
        y, state = out if return_final_states else (out, None)
        if x0.shape[-1] > 0:  # the gated-MLP part
            y = self.out_proj(torch.cat([F.silu(z0) * x0, self.gate_norm(y, z)], dim=-1))
        else:
            y = self.gate_norm_out(y, z)
        return (y, state) if return_final_states else y
