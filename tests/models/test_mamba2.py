"""Mamba-2: the chunked SSD scan against the step-by-step recurrence, the mixer against transformers."""

import pytest
import torch

from medvid.models import Mamba2, ssd_chunk_scan, ssd_scan_ref


def _inputs(b=2, l=37, h=4, p=3, g=2, n=5, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    return dict(
        x=r(b, l, h, p),
        dt=torch.rand(b, l, h, generator=gen, dtype=dtype) * 0.5 + 0.01,
        A=-(torch.rand(h, generator=gen, dtype=dtype) * 2 + 0.1),
        B=r(b, l, g, n),
        C=r(b, l, g, n),
        D=r(h),
        initial_states=r(b, h, p, n),
    )


def _recurrence(x, dt, A, B, C, D, initial_states):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t,  y_t = C_t h_t + D x_t, one head and one step at a time."""
    b, l, h, p = x.shape
    g = B.shape[2]
    states = [initial_states[:, head] for head in range(h)]  # each (b, p, n)
    ys = []
    for t in range(l):
        y_t = []
        for head in range(h):
            gi = head // (h // g)
            states[head] = torch.exp(dt[:, t, head] * A[head])[:, None, None] * states[head] + (
                dt[:, t, head, None, None] * x[:, t, head, :, None] * B[:, t, gi, None, :])
            y_t.append((states[head] * C[:, t, gi, None, :]).sum(-1) + D[head] * x[:, t, head])
        ys.append(torch.stack(y_t, dim=1))
    return torch.stack(ys, dim=1), torch.stack(states, dim=1)


@pytest.mark.parametrize("chunk", [1, 4, 8, 16, 37, 256])
@pytest.mark.parametrize("with_init", [False, True])
def test_chunked_scan_equals_recurrence(chunk, with_init):
    a = _inputs()
    init = a["initial_states"] if with_init else torch.zeros_like(a["initial_states"])
    y_ref, s_ref = _recurrence(a["x"], a["dt"], a["A"], a["B"], a["C"], a["D"], init)
    y, s = ssd_chunk_scan(a["x"], a["dt"], a["A"], a["B"], a["C"], chunk, D=a["D"],
                          initial_states=a["initial_states"] if with_init else None, return_final_states=True)
    assert (y - y_ref).abs().max() < 1e-10
    assert (s - s_ref).abs().max() < 1e-10
    y2, s2 = ssd_scan_ref(a["x"], a["dt"], a["A"], a["B"], a["C"], a["D"],
                          a["initial_states"] if with_init else None, return_final_states=True)
    assert (y2 - y_ref).abs().max() < 1e-10 and (s2 - s_ref).abs().max() < 1e-10


@pytest.mark.parametrize("chunk", [5, 16])
def test_chunked_scan_gradients_equal_recurrence(chunk):
    a = {k: v.requires_grad_() for k, v in _inputs(l=23).items()}
    w = torch.randn(a["x"].shape, dtype=torch.float64)
    names = ["x", "dt", "A", "B", "C", "D", "initial_states"]
    y_ref, _ = _recurrence(*[a[k] for k in names])
    g_ref = torch.autograd.grad((y_ref * w).sum(), [a[k] for k in names])
    y = ssd_chunk_scan(a["x"], a["dt"], a["A"], a["B"], a["C"], chunk, D=a["D"], initial_states=a["initial_states"])
    g = torch.autograd.grad((y * w).sum(), [a[k] for k in names])
    for name, gr, gc in zip(names, g_ref, g):
        assert (gr - gc).abs().max() < 1e-10, name


def test_scan_per_channel_D_and_length_one():
    a = _inputs(l=1)
    D = torch.randn(4, 3, dtype=torch.float64)
    y = ssd_chunk_scan(a["x"], a["dt"], a["A"], a["B"], a["C"], 8, D=D)
    y_ref = ssd_scan_ref(a["x"], a["dt"], a["A"], a["B"], a["C"], D)
    assert y.shape == (2, 1, 4, 3) and (y - y_ref).abs().max() < 1e-12


def _hf_mixer(m: Mamba2):
    transformers = pytest.importorskip("transformers")
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    cfg = transformers.Mamba2Config(
        hidden_size=m.d_model, state_size=m.d_state, expand=m.expand, head_dim=m.headdim, num_heads=m.nheads,
        n_groups=m.ngroups, conv_kernel=m.d_conv, chunk_size=m.chunk_size, layer_norm_epsilon=1e-5,
        use_bias=False, use_conv_bias=True, num_hidden_layers=1)
    ref = Mamba2Mixer(cfg, layer_idx=0)
    ref.load_state_dict(m.state_dict())  # same parameter names as mamba_ssm: loads strictly
    return ref


@pytest.mark.parametrize("ngroups,length,chunk", [(1, 40, 16), (2, 21, 8), (1, 7, 256)])
def test_mixer_equals_transformers_torch_path(ngroups, length, chunk):
    # On a CPU without mamba_ssm, transformers' Mamba2Mixer runs its PyTorch fallback (torch_forward).
    torch.manual_seed(1)
    m = Mamba2(d_model=32, d_state=16, headdim=8, ngroups=ngroups, chunk_size=chunk)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref = _hf_mixer(m)
    u = torch.randn(2, length, 32)
    out, out_ref = m(u), ref(u)
    assert out.shape == u.shape
    assert torch.allclose(out, out_ref, atol=2e-5, rtol=1e-4), (out - out_ref).abs().max()
    # and a change to the weights is visible to the comparison
    with torch.no_grad():
        m.A_log.add_(0.5)
    assert not torch.allclose(m(u), out_ref, atol=2e-5, rtol=1e-4)


def test_parameter_names_and_count_match_mamba_ssm():
    m = Mamba2(d_model=512, d_state=128, d_conv=4, expand=2, headdim=64)
    names = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert names == {
        "in_proj.weight": (2320, 512), "conv1d.weight": (1280, 1, 4), "conv1d.bias": (1280,), "dt_bias": (16,),
        "A_log": (16,), "D": (16,), "norm.weight": (1024,), "out_proj.weight": (512, 1024)}
    assert sum(p.numel() for p in m.parameters()) == 1_719_600
    assert torch.all(-torch.exp(m.A_log) <= -1) and torch.all(-torch.exp(m.A_log) >= -16)
    dt = torch.nn.functional.softplus(m.dt_bias)
    assert torch.all(dt >= 1e-4 - 1e-7) and torch.all(dt <= 0.1 + 1e-6)


def test_mixer_float64_matches_recurrence_and_final_state(conv_path):
    torch.manual_seed(2)
    m = Mamba2(d_model=16, d_state=8, headdim=4, chunk_size=4).double()
    u = torch.randn(1, 11, 16, dtype=torch.float64)
    y, state = m(u, return_final_states=True)
    # same thing through the reference recurrence
    zxbcdt = m.in_proj(u)
    _, _, z, xBC, dt = m.split_projection(zxbcdt)
    xBC = torch.nn.functional.silu(m.conv1d(xBC.transpose(1, 2))[..., :11].transpose(1, 2))
    x, B, C = xBC.split([32, 8, 8], dim=-1)
    ys, s_ref = ssd_scan_ref(x.view(1, 11, 8, 4), torch.nn.functional.softplus(dt + m.dt_bias), -torch.exp(m.A_log),
                             B.view(1, 11, 1, 8), C.view(1, 11, 1, 8), m.D, return_final_states=True)
    y_ref = m.out_proj(m.norm(ys.reshape(1, 11, 32), z))
    assert (y - y_ref).abs().max() < 1e-10 and (state - s_ref).abs().max() < 1e-10


def test_bad_arguments():
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(d_model=48, headdim=64)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2(d_model=32, headdim=16, ngroups=3)
    with pytest.raises(ValueError, match="expected input"):
        Mamba2(d_model=32, headdim=16)(torch.randn(2, 5, 31))


def test_fused_kernels_only_on_cuda_and_only_in_kernels_module():
    from pathlib import Path

    import medvid.models as models
    from medvid.models.kernels import fused_ops

    assert fused_ops(torch.device("cpu")) is None
    for f in Path(models.__file__).parent.glob("*.py"):
        if f.name != "kernels.py":
            text = f.read_text()
            assert "import mamba_ssm" not in text and "from mamba_ssm" not in text, f


@pytest.mark.parametrize("length", [1, 3, 17])
def test_causal_conv_equals_torch_conv1d_with_gradients(length):
    from medvid.models.mamba2 import causal_conv1d

    x = torch.randn(2, length, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, length, 6, dtype=torch.float64)
    ours = causal_conv1d(x, w, b)
    ref = torch.nn.functional.conv1d(x.transpose(1, 2), w[:, None], b, padding=3, groups=6)[..., :length].transpose(1, 2)
    assert torch.allclose(ours, ref, atol=1e-12)
    for a, r in zip(torch.autograd.grad(ours, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
        assert torch.allclose(a, r, atol=1e-12)


@pytest.mark.parametrize("batch,fold", [(1, 1), (2, 2), (2, 3)])
def test_conv_silu_of_gathered_rows_equals_torch_with_gradients(batch, fold, conv_path):
    # MedSora's spiral scans: the convolution reads rows of the projection gathered by an index (each row
    # ``fold`` times), gathers them again in its backward and sends the gradient back through the inverse.
    from medvid.models.mamba2 import causal_conv1d_silu

    gen = torch.Generator().manual_seed(fold)
    m, c, length = 12, 6, 4
    src = torch.randn(batch, m, c + 3, generator=gen, dtype=torch.float64, requires_grad=True)
    x = src[..., :c]  # a strided view, as xBC is of the projection
    index = torch.cat([torch.randperm(m, generator=gen) for _ in range(fold)])
    back = torch.argsort(index) if fold == 1 else torch.cat(
        [torch.argsort(index[i * m:(i + 1) * m]) + i * m for i in range(fold)])
    w = torch.randn(c, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, generator=gen, dtype=torch.float64, requires_grad=True)
    seqs = x[:, index].reshape(-1, length, c)  # (batch * fold * m / length, length, c)
    ref = torch.nn.functional.silu(torch.nn.functional.conv1d(
        seqs.transpose(1, 2), w[:, None], b, padding=3, groups=c)[..., :length].transpose(1, 2))
    ours = causal_conv1d_silu(x, w, b, (index, back, fold, length))
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-12)
    g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    for a, r in zip(torch.autograd.grad(ours, (src, w, b), g), torch.autograd.grad(ref, (src, w, b), g)):
        assert torch.allclose(a, r, atol=1e-12)
    plain = causal_conv1d_silu(seqs, w, b)  # no rows: the sequences themselves
    assert torch.allclose(plain, ref, atol=1e-12)


@pytest.mark.parametrize("group_size,dim,proj,z_shape", [
    (8, None, None, (2, 1, 1, 5, 8)), (4, 2, None, (2, 1, 1, 5, 8)), (8, None, "bias", (2, 2, 2, 5, 8)),
    (4, 2, "no bias", (2, 1, 1, 5, 8)), (4, None, "no bias", (2, 2, 2, 5, 8))])
def test_gated_rmsnorm_forward_and_backward_equal_autograd_of_the_formula(group_size, dim, proj, z_shape, conv_path):
    # With a projection (the mixer's out_proj folded in), its input is recomputed in the backward. A gate
    # of y's shape (the mixer) or broadcast over the summed scans (MedSora) takes the CPU kernel.
    from medvid.models.mamba2 import gated_rmsnorm

    gen = torch.Generator().manual_seed(4)
    y = torch.randn(2, 2, 2, 5, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    z = torch.randn(z_shape, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, generator=gen, dtype=torch.float64, requires_grad=True)
    pw = torch.randn(3, 8, generator=gen, dtype=torch.float64, requires_grad=True) if proj else None
    pb = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True) if proj == "bias" else None
    v = (y * torch.nn.functional.silu(z)).unflatten(-1, (-1, group_size))
    ref = (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5)).flatten(-2)
    ref = (ref.sum(dim) if dim is not None else ref) * w
    if proj:
        ref = torch.nn.functional.linear(ref, pw, pb)
    out = gated_rmsnorm(y, z, w, group_size, 1e-5, dim, pw, pb)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-12)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    inputs = [t for t in (y, z, w, pw, pb) if t is not None]
    for a, r in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        assert torch.allclose(a, r, atol=1e-12)


def test_out_proj_with_hooks_or_replaced_is_called_as_a_module():
    # The gated norm and out_proj are one function only for a plain Linear without hooks: a hook (a
    # profiler, feature extraction) still sees the call, and a replaced out_proj (LoRA) is used.
    torch.manual_seed(7)
    m = Mamba2(d_model=16, d_state=8, headdim=4).double()
    u = torch.randn(2, 6, 16, dtype=torch.float64)
    fused = m(u)
    seen = []
    handle = m.out_proj.register_forward_hook(lambda mod, a, o: seen.append(a[0].shape))
    hooked = m(u)
    handle.remove()
    assert seen == [(2, 6, 32)] and torch.allclose(fused, hooked, atol=1e-12)

    class Scaled(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    plain = m.out_proj
    m.out_proj = Scaled(32, 16, bias=False).double()
    m.out_proj.weight.data.copy_(plain.weight)
    assert torch.allclose(m(u), 2 * fused, atol=1e-12)


@pytest.mark.parametrize("limit", [0.0, 4.0, float("inf")])  # every head full, mixed, every head factored
def test_diagonal_blocks_factored_and_full_agree(limit, monkeypatch):
    import medvid.models.mamba2 as mm

    monkeypatch.setitem(mm.FACTORED_RANGE, torch.float64, limit)
    a = {k: v.requires_grad_() for k, v in _inputs(l=23).items()}
    with torch.no_grad():
        a["dt"][..., 1] *= 6  # head 1 decays fast: its spread exceeds 4 while the others stay under it
    spread = (torch.cumsum(a["dt"] * a["A"], 1).amax(1) - torch.cumsum(a["dt"] * a["A"], 1).amin(1)).amax(0)
    assert limit != 4.0 or bool((spread > limit).any() and (spread <= limit).any())
    w = torch.randn(a["x"].shape, dtype=torch.float64)
    names = ["x", "dt", "A", "B", "C", "D", "initial_states"]
    y_ref, _ = _recurrence(*[a[k] for k in names])
    g_ref = torch.autograd.grad((y_ref * w).sum(), [a[k] for k in names])
    y = ssd_chunk_scan(a["x"], a["dt"], a["A"], a["B"], a["C"], 16, D=a["D"], initial_states=a["initial_states"])
    g = torch.autograd.grad((y * w).sum(), [a[k] for k in names])
    assert (y - y_ref).abs().max() < 1e-10
    for name, gr, gc in zip(names, g_ref, g):
        assert (gr - gc).abs().max() < 1e-10, name


def test_float32_scan_with_fast_and_slow_decays_matches_float64_recurrence():
    # fp32 heads whose decay spreads over a chunk far beyond exp's range take the (T x T) path; the rest
    # the factored one; both agree with the float64 recurrence to float32 rounding.
    a = _inputs(b=2, l=128, h=4, p=8, g=1, n=16, dtype=torch.float64, seed=3)
    a["dt"][..., 0], a["A"][0] = 3.0, -1.0  # spread 127 * 3 >> 120: exp(+-spread/2) overflows float32
    a["dt"][..., 1] = 0.01
    y_ref = ssd_scan_ref(a["x"], a["dt"], a["A"], a["B"], a["C"], a["D"])
    f = {k: v.float() for k, v in a.items()}
    y = ssd_chunk_scan(f["x"], f["dt"], f["A"], f["B"], f["C"], 128, D=f["D"])
    assert torch.isfinite(y).all()
    err = (y.double() - y_ref).abs().max() / y_ref.abs().max()
    assert err < 1e-5, err


def _mixer_reference(m: Mamba2, u):
    """The mixer from its definition: torch's conv1d, SiLU, the step-by-step recurrence, gated norm."""
    l = u.shape[1]
    _, _, z, xBC, dt = m.split_projection(m.in_proj(u))
    xBC = torch.nn.functional.silu(m.conv1d(xBC.transpose(1, 2))[..., :l].transpose(1, 2))
    gn = m.ngroups * m.d_state
    x, B, C = xBC.split([m.d_ssm, gn, gn], dim=-1)
    D = m.D.view(m.nheads, m.headdim) if m.D_has_hdim else m.D
    y = ssd_scan_ref(x.reshape(*x.shape[:2], m.nheads, m.headdim), torch.nn.functional.softplus(dt + m.dt_bias),
                     -torch.exp(m.A_log), B.reshape(*B.shape[:2], m.ngroups, m.d_state),
                     C.reshape(*C.shape[:2], m.ngroups, m.d_state), D)
    return m.out_proj(m.norm(y.reshape(*y.shape[:2], m.d_ssm), z))


@pytest.mark.parametrize("ngroups,length,chunk,d_has_hdim", [(1, 12, 16, False), (2, 9, 256, True),
                                                             (1, 40, 16, False)])
def test_mixer_gradients_equal_recurrence(ngroups, length, chunk, d_has_hdim, monkeypatch, conv_path):
    # Lengths within one chunk take _OneChunkScan (SiLU recomputed in its backward); longer ones the
    # chunked scan. Both against autograd through the definition, in float64.
    import medvid.models.mamba2 as mm

    calls = []
    real = mm._OneChunkScan.apply
    monkeypatch.setattr(mm._OneChunkScan, "apply", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(5)
    m = Mamba2(d_model=16, d_state=8, headdim=4, ngroups=ngroups, chunk_size=chunk, D_has_hdim=d_has_hdim).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    u = torch.randn(2, length, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, length, 16, dtype=torch.float64)
    params = [u] + list(m.parameters())
    g = torch.autograd.grad((m(u) * w).sum(), params)
    assert bool(calls) == (length <= chunk)
    g_ref = torch.autograd.grad((_mixer_reference(m, u) * w).sum(), params)
    names = ["u"] + [n for n, _ in m.named_parameters()]
    for name, a, b in zip(names, g, g_ref):
        assert (a - b).abs().max() < 1e-10, name


def test_mixer_trains_under_bf16_autocast_close_to_float32():
    # The scan's autograd functions take lower-precision matmul outputs under autocast and return each
    # input's own dtype; gradients stay within bf16 rounding of the float32 ones.
    torch.manual_seed(6)
    m = Mamba2(d_model=32, d_state=16, headdim=8, chunk_size=64)
    u = torch.randn(2, 24, 32)
    g32 = torch.autograd.grad(m(u).square().mean(), list(m.parameters()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(u).float().square().mean()
    g16 = torch.autograd.grad(loss, list(m.parameters()))
    for (name, p), a, b in zip(m.named_parameters(), g32, g16):
        assert b.dtype == p.dtype and torch.isfinite(b).all(), name
        assert (a - b).norm() <= 0.1 * a.norm() + 1e-6, (name, ((a - b).norm() / a.norm()).item())
