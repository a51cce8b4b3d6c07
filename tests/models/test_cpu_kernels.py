"""medvid's CPU kernels (models/csrc/mamba_cpu.cpp) against torch's conv1d and SiLU."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import medvid.models.kernels as kernels


@pytest.fixture(scope="module")
def ops():
    if os.environ.get("MEDVID_CPU_KERNELS") == "0":
        pytest.skip("MEDVID_CPU_KERNELS=0")
    ops = kernels.cpu_ops()
    # On a machine like CI's (g++ and ninja present) the kernels must build: a silent fallback to the
    # eager path would hide a broken build behind slower training.
    assert ops is not None, "medvid's CPU kernels did not build (see the log for the compiler's error)"
    return ops


def _reference(x, index, length, w, b, activation):
    """torch's conv1d over the gathered sequences (and SiLU)."""
    c = x.shape[-1]
    seqs = (x if index is None else x[index]).reshape(-1, length, c)
    out = F.conv1d(seqs.transpose(1, 2), w[:, None], b, padding=w.shape[1] - 1, groups=c)[..., :length]
    out = out.transpose(1, 2)
    return F.silu(out) if activation else out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k,length,gathered,bias,activation", [
    (4, 7, True, True, True), (4, 2, True, False, True), (3, 5, False, True, False), (4, 1, False, True, True),
    (2, 9, True, True, False)])
def test_forward_and_backward_equal_torch(ops, dtype, k, length, gathered, bias, activation):
    gen = torch.Generator().manual_seed(k * 10 + length)
    rows, c, fold = 6 * length, 11, 2
    src = torch.randn(rows, c + 5, generator=gen, dtype=dtype) * 3
    x = src[:, 2:2 + c]  # rows with a stride, as the projection's xBC slice
    index = torch.cat([torch.randperm(rows, generator=gen) for _ in range(fold)]) if gathered else None
    nseq = (fold * rows if gathered else rows) // length
    w = torch.randn(c, k, generator=gen, dtype=dtype)
    b = torch.randn(c, generator=gen, dtype=dtype) if bias else None
    # the reference in float64 from the same values (float32 sums over positions round differently)
    xd, wd, bd = (None if t is None else t.detach().double().requires_grad_() for t in (x, w, b))
    wanted = [t for t in (xd, wd, bd) if t is not None]
    ref = _reference(xd, index, length, wd, bd, activation)
    ours = ops.forward(x, index, nseq, length, w, b, activation)

    def close(a, r):
        scale = 1e-12 if dtype == torch.float64 else 2e-6
        torch.testing.assert_close(a.double(), r.detach(), atol=scale * r.abs().max().item(), rtol=scale)

    close(ours.view_as(ref), ref)
    g = torch.randn(ref.shape, generator=gen, dtype=dtype)
    grads = torch.autograd.grad(ref, wanted, g.double())
    gxs, gw, gb = ops.backward(g.reshape(-1, c), x, index, nseq, length, w, b, activation)
    if gathered:  # the gathered rows' gradient summed back into x's rows
        back = torch.cat([torch.argsort(index[i * rows:(i + 1) * rows]) + i * rows for i in range(fold)])
        gx = ops.fold_rows(gxs.view(1, -1, c), back, fold)[0]
    else:
        gx = gxs
    assert gx.dtype == gw.dtype == dtype
    close(gx, grads[0])
    close(gw, grads[1])
    if bias:
        close(gb, grads[2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_silu_over_the_whole_range_and_nan(ops, dtype):
    # The kernel's exp is its own (vectorisable) series: SiLU and its gradient agree with torch's to
    # rounding from -1000 to 1000, and a NaN stays NaN (training must see divergence).
    v = torch.cat([torch.linspace(-1000, 1000, 2001, dtype=dtype), torch.linspace(-30, 30, 6001, dtype=dtype),
                   torch.tensor([0.0, -0.0, float("nan"), 1e-30, -1e-30], dtype=dtype)])
    x = v[:, None].contiguous()  # one channel, each value its own length-1 sequence
    w = torch.ones(1, 1, dtype=dtype)
    out = ops.forward(x, None, len(v), 1, w, None, True)[:, 0]
    tol = dict(atol=1e-30, rtol=4e-7) if dtype == torch.float32 else dict(atol=1e-300, rtol=1e-14)
    torch.testing.assert_close(out, F.silu(v), equal_nan=True, **tol)
    g = torch.ones_like(x)
    gx = ops.backward(g, x, None, len(v), 1, w, None, True)[0][:, 0]
    ref = torch.ops.aten.silu_backward(torch.ones_like(v), v)
    # where the derivative crosses zero (v ~ -1.28) relative error is meaningless: absolute, one ulp of 1
    torch.testing.assert_close(gx, ref, equal_nan=True, rtol=tol["rtol"],
                               atol=1.2e-7 if dtype == torch.float32 else 2.3e-16)
    assert torch.isnan(out[-3]) and torch.isnan(gx[-3])


def test_bad_inputs_are_refused_with_a_message(ops):
    x = torch.randn(8, 4)
    w = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="w: \\(C, K\\) of x's dtype"):
        ops.forward(x, None, 2, 4, w.double(), None, True)
    with pytest.raises(RuntimeError, match="nseq \\* len"):
        ops.forward(x, None, 3, 4, w, None, True)
    with pytest.raises(RuntimeError, match="unit channel stride"):
        ops.forward(x.t(), None, 1, 4, torch.randn(8, 3), None, True)


def test_switched_off_by_the_environment():
    code = "import medvid.models.kernels as k; print(k.cpu_ops() is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ | {"MEDVID_CPU_KERNELS": "0"})
    assert out.stdout.strip() == "True"


def test_the_mixer_uses_the_kernels_on_cpu_float32_and_float64_only(ops, monkeypatch):
    from medvid.models.mamba2 import Mamba2

    calls = []
    real = ops.forward
    monkeypatch.setattr(kernels, "_CPU", type("Spy", (), {
        "forward": staticmethod(lambda *a: calls.append(a[0].dtype) or real(*a)),
        **{name: staticmethod(getattr(ops, name)) for name in ("backward", "fold_rows", "norm_forward",
                                                                 "norm_backward")}}))
    m = Mamba2(d_model=16, d_state=8, headdim=4)
    u = torch.randn(2, 6, 16)
    m(u).sum().backward()
    m.double()(u.double())
    assert calls[0] == torch.float32 and torch.float64 in calls
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 projections: the eager convolution
        m.float()(u)
    assert calls == []


def test_gated_norm_kernel_in_float32_matches_float64_formula(ops):
    # MedSora's layout: four scans as (B, G=2 groupings, K=2 directions, N, D), the gate a strided view of
    # the projection shared by all four; groups of 16 channels.
    gen = torch.Generator().manual_seed(9)
    y = torch.randn(2, 2, 2, 7, 32, generator=gen)
    zsrc = torch.randn(2, 7, 40, generator=gen)
    z = zsrc[..., 3:35]
    w = torch.randn(32, generator=gen)
    go = torch.randn(2, 2, 7, 32, generator=gen)
    out, r = ops.norm_forward(y, z, w, 16, 1e-5)
    gy, gz, gw, normed = ops.norm_backward(go, y, z, w, r, 16, True)

    yd, zd, wd = (t.double().requires_grad_() for t in (y, z, w))
    v = (yd * F.silu(zd[:, None, None])).unflatten(-1, (-1, 16))
    ref = ((v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5)).flatten(-2).sum(2)) * wd
    grads = torch.autograd.grad(ref, (yd, zd, wd), go.double())
    for a, b in [(out, ref), (normed, ref), (gy, grads[0]), (gz, grads[1]), (gw, grads[2])]:
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b.detach(), atol=2e-6 * b.abs().max().item(), rtol=2e-6)
    with pytest.raises(RuntimeError, match="group size must divide D"):
        ops.norm_forward(y, z, w, 5, 1e-5)
