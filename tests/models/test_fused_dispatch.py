"""The fused-kernel path's CPU-expressible parts: the closed form of length-1 scans, chunks sized to
the sequence, batches split under the launch-grid limit, and causal-conv1d's stride rule. The fused
kernels are replaced by fakes with mamba_ssm's and causal-conv1d's signatures that check the
kernels' preconditions and compute with the PyTorch reference."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from medvid.models import create_model, ssd_chunk_scan, ssd_scan_ref
from medvid.models import mamba2 as M



def _inputs(b=2, l=37, h=4, p=3, g=2, n=5, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    return dict(x=r(b, l, h, p), dt=torch.rand(b, l, h, generator=gen, dtype=dtype) * 0.5 + 0.01,
                A=-(torch.rand(h, generator=gen, dtype=dtype) * 2 + 0.1), B=r(b, l, g, n), C=r(b, l, g, n),
                D=r(h), initial_states=r(b, h, p, n))


# -- the closed form of length-1 scans ---------------------------------------------------------------
@pytest.mark.parametrize("with_init", [False, True])
@pytest.mark.parametrize("D_per_channel", [False, True])
def test_length_one_closed_form_equals_recurrence(with_init, D_per_channel):
    kw = _inputs(b=3, l=1, h=4, p=3, g=2, n=5)
    if D_per_channel:
        kw["D"] = torch.randn(4, 3, dtype=torch.float64)
    if not with_init:
        kw["initial_states"] = None
    y, s = M.ssd_step(**kw, return_final_states=True)
    y_ref, s_ref = ssd_scan_ref(**kw, return_final_states=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s, s_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(M.ssd_step(**kw), y_ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="length 1"):
        M.ssd_step(**_inputs(l=2))


def test_length_one_closed_form_gradients():
    kw = {k: v.requires_grad_() for k, v in _inputs(b=2, l=1).items()}
    g1 = torch.autograd.grad(M.ssd_step(**kw, return_final_states=True)[1].sum() + M.ssd_step(**kw).sum(),
                             list(kw.values()))
    g2 = torch.autograd.grad(ssd_scan_ref(**kw, return_final_states=True)[1].sum() + ssd_scan_ref(**kw).sum(),
                             list(kw.values()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# -- chunk sizing and batch splitting ----------------------------------------------------------------
@pytest.mark.parametrize("chunk,length,expected", [(256, 1, 16), (256, 4, 16), (256, 17, 32), (256, 64, 64),
                                                    (256, 100, 128), (256, 1000, 256), (64, 1000, 64), (8, 4, 8)])
def test_fused_chunk_size(chunk, length, expected):
    assert M.fused_chunk_size(chunk, length) == expected


def fake_chunk_scan(calls, limit):
    """mamba_chunk_scan_combined's signature, computed with the PyTorch scan; checks the grid limit."""

    def scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
             cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False):
        b, l = x.shape[:2]
        nchunks = -(-l // chunk_size)
        calls.append((b, l, chunk_size))
        assert b * nchunks <= limit, "grid too large: the launch would fail"
        assert all(t.is_contiguous() for t in (x, dt, B, C)), "the triton kernels want dense inputs"
        if dt_bias is not None:
            dt = dt + dt_bias
        if dt_softplus:
            dt = F.softplus(dt)
        dt = dt.clamp(*dt_limit)
        return ssd_chunk_scan(x, dt, A, B, C, chunk_size, D=D, initial_states=initial_states,
                              return_final_states=return_final_states)

    return scan


@pytest.mark.parametrize("with_init", [False, True])
def test_batches_above_the_grid_limit_are_split(monkeypatch, with_init):
    monkeypatch.setattr(M, "FUSED_GRID_LIMIT", 6)
    kw = {k: v.requires_grad_() for k, v in _inputs(b=7, l=12, h=4, p=3, g=2, n=5).items()}
    init = kw.pop("initial_states")
    init = init if with_init else None
    calls = []
    y, s = M.fused_chunk_scan(fake_chunk_scan(calls, 6), kw["x"], kw["dt"], kw["A"], kw["B"], kw["C"], 4,
                              D=kw["D"], initial_states=init, return_final_states=True)
    assert [c[0] for c in calls] == [2, 2, 2, 1]  # 3 chunks per sequence -> 2 sequences per launch
    init_ref = init if with_init else None
    y_ref, s_ref = ssd_scan_ref(kw["x"], kw["dt"], kw["A"], kw["B"], kw["C"], D=kw["D"],
                                initial_states=init_ref, return_final_states=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-12)
    params = list(kw.values()) + ([init] if with_init else [])
    ga = torch.autograd.grad((y * y_ref.detach()).sum() + s.sum(), params)
    gb = torch.autograd.grad((y_ref * y_ref.detach()).sum() + s_ref.sum(), params)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # Under the limit: one launch, outputs unchanged.
    monkeypatch.setattr(M, "FUSED_GRID_LIMIT", 65535)
    calls.clear()
    y1 = M.fused_chunk_scan(fake_chunk_scan(calls, 10**6), kw["x"], kw["dt"], kw["A"], kw["B"], kw["C"], 4,
                            D=kw["D"], initial_states=init)
    assert len(calls) == 1
    torch.testing.assert_close(y1, y, rtol=1e-12, atol=1e-12)


# -- causal-conv1d's stride rule ----------------------------------------------------------------------
def causal_conv1d_strides_ok(x: torch.Tensor) -> bool:
    """causal-conv1d's check (csrc/causal_conv1d.cpp): channel-last (stride 1 along d) needs batch and
    length strides that are multiples of 8; otherwise the length stride must be 1."""
    if x.stride(1) == 1 and x.stride(2) > 1:
        return x.stride(0) % 8 == 0 and x.stride(2) % 8 == 0
    return x.stride(2) == 1


def fake_conv1d(calls):
    def conv(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
             final_states_out=None, activation=None):
        calls.append(tuple(x.stride()))
        if not causal_conv1d_strides_ok(x):
            raise RuntimeError("causal_conv1d with channel last layout requires strides (x.stride(0) and "
                               "x.stride(2)) to be multiples of 8")
        k = weight.shape[1]
        out = F.conv1d(x, weight[:, None], bias, padding=k - 1, groups=x.shape[1])[..., : x.shape[2]]
        return F.silu(out) if activation in ("silu", "swish") else out

    return conv


# tiny_cpu (hidden 64, d_state 16, headdim 32), a width of 384 with the presets' d_state and headdim,
# and the paper's 512: the in_proj row lengths are 292, 1804 and 2320, the first two not multiples of 8.
WIDTHS = [dict(d_model=64, d_state=16, headdim=32), dict(d_model=384), dict(d_model=512)]


@pytest.mark.parametrize("shape", WIDTHS)
def test_conv_input_meets_causal_conv1d_stride_rule(shape):
    m = M.Mamba2(**shape)
    u = torch.randn(2, 9, shape["d_model"])
    _, _, _, xBC, _ = m.split_projection(m.in_proj(u))
    naive = xBC.transpose(1, 2)
    passed = M.conv1d_input(xBC)
    assert causal_conv1d_strides_ok(passed)
    assert torch.equal(passed, naive)
    # The check can fail: the plain view is refused exactly when the in_proj row length is not a multiple of 8.
    assert causal_conv1d_strides_ok(naive) == (m.in_proj.out_features % 8 == 0)
    if causal_conv1d_strides_ok(naive):
        assert passed.data_ptr() == naive.data_ptr()  # no copy when none is needed


@pytest.fixture
def fake_fused(monkeypatch):
    """Route the mixer through the fused branch on the CPU, with the fakes above."""
    calls = {"scan": [], "conv": []}
    ops = SimpleNamespace(chunk_scan=fake_chunk_scan(calls["scan"], M.FUSED_GRID_LIMIT),
                          conv1d=fake_conv1d(calls["conv"]))
    monkeypatch.setattr(M, "fused_ops", lambda device: ops)
    return calls


@pytest.mark.parametrize("shape", WIDTHS[:2])
@pytest.mark.parametrize("length", [1, 4, 37])
def test_mixer_fused_branch_equals_torch_path(fake_fused, monkeypatch, shape, length):
    torch.manual_seed(0)
    m = M.Mamba2(**shape).double()
    u = torch.randn(3, length, shape["d_model"], dtype=torch.float64, requires_grad=True)
    y_fused = m(u)
    # allow_unused: a length-1 scan from a zero state does not depend on A (exp(dt A) multiplies zero).
    params = [u, *m.parameters()]
    g_fused = torch.autograd.grad(y_fused.square().sum(), params, allow_unused=True)
    assert len(fake_fused["conv"]) == 1
    # Length 1 never reaches the scan kernel (closed form); longer ones get a chunk sized to them.
    assert [c[2] for c in fake_fused["scan"]] == ([] if length == 1 else [M.fused_chunk_size(256, length)])
    monkeypatch.setattr(M, "fused_ops", lambda device: None)
    y_ref = m(u)
    g_ref = torch.autograd.grad(y_ref.square().sum(), params, allow_unused=True)
    torch.testing.assert_close(y_fused, y_ref, rtol=1e-10, atol=1e-12)
    for a, b, p in zip(g_fused, g_ref, params):
        zero = torch.zeros_like(p)
        torch.testing.assert_close(zero if a is None else a, zero if b is None else b, rtol=1e-9, atol=1e-11)


def test_medsora_through_the_fused_branch_equals_torch_path(fake_fused, monkeypatch):
    """tiny_cpu's MedSora (width 64) with 2 joint images: every scan call site, conv strides included."""
    torch.manual_seed(0)
    m = create_model("medsora-s", depth=2, hidden_size=64, input_size=8, in_channels=4, d_state=16,
                     headdim=32).double()
    with torch.no_grad():  # adaLN-Zero would make the output exactly zero
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 5, 4, 8, 8, dtype=torch.float64)
    t = torch.tensor([3, 700])
    m.eval()
    y_fused = m(x, t, num_images=2)
    assert fake_fused["conv"] and fake_fused["scan"]
    monkeypatch.setattr(M, "fused_ops", lambda device: None)
    torch.testing.assert_close(y_fused, m(x, t, num_images=2), rtol=1e-9, atol=1e-11)
