"""MedSora and STDiT: preset sizes, shapes, adaLN-Zero, the spiral spatial branch, images kept apart."""

import pytest
import torch
from einops import rearrange

from medvid.models import MODEL_PRESETS, create_model, create_model_from_config
from medvid.models.layers import Layout
from medvid.models.spiral import inverse_order, spiral_order

TINY = dict(depth=2, hidden_size=64, input_size=8, in_channels=4, d_state=16, headdim=32)
TINY_ST = dict(depth=2, hidden_size=64, input_size=8, in_channels=4, headdim=32)


def _tiny(name="medsora-s", **kw):
    return create_model(name, **((TINY if name.startswith("medsora") else TINY_ST) | kw))


@torch.no_grad()
def _wake(model, scale=0.05):
    """Make zero-initialised layers non-zero so every path shows in the output."""
    g = torch.Generator().manual_seed(3)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("name,count", [("medsora-s", 43_758_784), ("medsora-b", 86_466_304),
                                        ("medsora-l", 171_881_344), ("medsora-xl", 342_711_424)])
def test_preset_parameter_counts_on_meta(name, count):
    with torch.device("meta"):
        m = create_model(name)
    assert sum(p.numel() for p in m.parameters()) == count
    assert all(p.device.type == "meta" for p in m.parameters())
    assert (m.in_channels, m.hidden_size, m.patch_size, m.input_size, m.learn_sigma) == (16, 512, 2, 16, True)
    assert m.depth == MODEL_PRESETS[name]["depth"]


def test_block_structure_matches_reference_counts():
    with torch.device("meta"):
        m = create_model("medsora-s")
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    blk = m.blocks[0]
    assert n(blk) == 7_117_920
    assert n(blk.spatial_mamba.mixer) == n(blk.temporal_mamba) == 1_719_600
    assert n(blk.spatial_mamba.gated_fusion) == 525_312
    assert n(m) - 6 * n(blk) == 1_051_264


@pytest.mark.parametrize("name", ["medsora-s", "stdit-s"])
def test_trains_after_sampling_under_inference_mode(name):
    # Index and table caches (spiral orders, rotary tables, band masks) filled under inference_mode (a
    # sampler, validation samples) must not be inference tensors when training then saves them.
    from medvid.models import layers, spiral

    for cache in (spiral._scan_sets, layers._rotary_tables, layers._band_mask):
        cache.cache_clear()  # filled first below, under inference_mode
    m = _tiny(name)
    x, t = torch.randn(1, 3, 4, 8, 8), torch.tensor([5])
    with torch.inference_mode():
        m(x, t, num_images=1)
    _wake(m)
    m(x, t, num_images=1).sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_medsora_runs_forward_and_backward_on_the_meta_device():
    # FLOP counts (benchmarks/backbone.py) trace a step on the meta device: no data-dependent branch may
    # need values there (the SSD picks its diagonal-block form per head from the decays' values).
    with torch.device("meta"):
        m = create_model("medsora-s", input_size=16)
        out = m(torch.randn(1, 4, 16, 16, 16), torch.zeros(1))
        out.sum().backward()
    assert out.shape == (1, 4, 32, 16, 16) and m.blocks[0].spatial_mamba.mixer.in_proj.weight.grad is not None


@pytest.mark.parametrize("name", ["stdit-s", "stdit-b", "stdit-l"])
def test_stdit_presets_share_shape(name):
    with torch.device("meta"):
        m = create_model(name)
    assert (m.hidden_size, m.patch_size, m.in_channels, m.depth) == (512, 2, 16, MODEL_PRESETS[name]["depth"])


@pytest.mark.parametrize("name", ["medsora-s", "stdit-s"])
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_shapes_zero_init_and_features(name, learn_sigma):
    m = _tiny(name, learn_sigma=learn_sigma)
    x = torch.randn(2, 5, 4, 8, 8)
    t = torch.tensor([3, 700])
    out, feats = m(x, t, num_images=2, return_features=True)
    assert out.shape == (2, 5, 8 if learn_sigma else 4, 8, 8)
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: a fresh model predicts zeros
    assert len(feats) == 2 and all(f.shape == (2, 5, 16, 64) for f in feats)
    assert feats[0].abs().sum() > 0
    _wake(m)
    assert m(x, t, num_images=2).abs().max() > 0


def _naive_spiral_branch(sm, u, layout):
    """The reference's structure: four full Mamba-2 passes (in_proj ... out_proj) over permuted sequences."""
    b, f, n, d = u.shape
    x = rearrange(u, "b f (h w) d -> b f h w d", h=layout.h)
    mixer = sm.mixer

    def grouping(seq_pattern, back, cols, frames):
        seqs = rearrange(frames, seq_pattern)
        total = 0
        for k in sm.orders:
            order = spiral_order(frames.shape[1], cols, k)
            y = mixer(seqs[:, order])[:, inverse_order(order)]
            total = total + y
        return rearrange(total, back, b=frames.shape[0], f=frames.shape[1], h=layout.h)

    parts_w, parts_h = [], []
    fv = layout.video_frames
    clips = [x[:, :fv]] + [x[:, i : i + 1] for i in range(fv, f)]  # video, then each image alone
    for clip in clips:
        parts_w.append(grouping("b f h w d -> (b h) (f w) d", "(b h) (f w) d -> b f h w d", layout.w, clip))
        parts_h.append(grouping("b f h w d -> (b w) (f h) d", "(b w) (f h) d -> b f h w d", layout.h, clip))
    yw, yh = torch.cat(parts_w, 1), torch.cat(parts_h, 1)
    return rearrange(sm.gated_fusion(yw, yh), "b f h w d -> b f (h w) d")


@pytest.mark.parametrize("hw,num_images,block", [((4, 4), 2, 0), ((4, 2), 0, 1), ((2, 4), 3, 5)])
def test_spiral_branch_equals_four_full_mamba_passes(hw, num_images, block):
    m = create_model("medsora-s", **(TINY | {"depth": 6})).double()
    sm = _wake(m).blocks[block].spatial_mamba
    assert sm.orders == ((2 * block) % 16, (2 * block) % 16 + 1)
    u = torch.randn(2, 3 + num_images, hw[0] * hw[1], 64, dtype=torch.float64)
    layout = Layout(3, num_images, *hw)
    assert torch.allclose(sm(u, layout), _naive_spiral_branch(sm, u, layout), atol=1e-10)


@pytest.mark.parametrize("hw,num_images", [((4, 4), 1), ((2, 4), 0)])
def test_spiral_branch_gradients_equal_four_full_mamba_passes(hw, num_images, conv_path):
    m = create_model("medsora-s", **TINY).double()
    sm = _wake(m).blocks[1].spatial_mamba
    u = torch.randn(2, 3 + num_images, hw[0] * hw[1], 64, dtype=torch.float64, requires_grad=True)
    layout = Layout(3, num_images, *hw)
    w = torch.randn(u.shape, dtype=torch.float64)
    params = [u] + list(sm.parameters())
    ours = torch.autograd.grad((sm(u, layout) * w).sum(), params)
    ref = torch.autograd.grad((_naive_spiral_branch(sm, u, layout) * w).sum(), params)
    for a, r in zip(ours, ref):
        assert torch.allclose(a, r, atol=1e-10)


@pytest.mark.parametrize("name", ["medsora-s", "stdit-s"])
def test_images_are_not_mixed_with_the_video_or_each_other(name):
    m = _wake(_tiny(name)).eval()
    x = torch.randn(1, 6, 4, 8, 8)
    t = torch.tensor([10])
    base = m(x, t, num_images=3)
    x2 = x.clone()
    x2[:, 4] += 1.0  # change image 2 of 3
    out = m(x2, t, num_images=3)
    changed = (out - base).abs().flatten(2).amax(-1)[0]  # per frame
    assert changed[4] > 1e-3
    assert changed[[0, 1, 2, 3, 5]].max() < 1e-6
    x3 = x.clone()
    x3[:, 0] += 1.0  # change video frame 0: the other video frames see it, the images don't
    changed = (m(x3, t, num_images=3) - base).abs().flatten(2).amax(-1)[0]
    assert changed[1] > 1e-3 and changed[2] > 1e-3
    assert changed[3:].max() < 1e-6
    # without the image split, the same frames would interact
    changed = (m(x2, t, num_images=0) - m(x, t, num_images=0)).abs().flatten(2).amax(-1)[0]
    assert changed[5] > 1e-3


def test_other_resolution_and_odd_sizes():
    m = _wake(_tiny("medsora-s", patch_size=1, window_size=3, chunk_size=5)).eval()
    out = m(torch.randn(1, 3, 4, 6, 10), torch.tensor([5]), num_images=1)  # 6x10 tokens, 1 image
    assert out.shape == (1, 3, 8, 6, 10) and torch.isfinite(out).all()
    one = m(torch.randn(2, 1, 4, 8, 8), torch.tensor([1, 2]))  # a 1-frame clip
    assert one.shape == (2, 1, 8, 8, 8)


def test_config_round_trip_rebuilds_the_same_model():
    m = _wake(_tiny("medsora-s", num_classes=3, context_dim=12))
    m2 = create_model_from_config(dict(m.config))
    m2.load_state_dict(m.state_dict())
    m3 = create_model(m.config["name"], **{k: v for k, v in m.config.items() if k != "name"})
    assert m3.config == m.config == m2.config
    x, t = torch.randn(1, 2, 4, 8, 8), torch.tensor([4])
    m.eval(), m2.eval()
    assert torch.equal(m(x, t), m2(x, t))


@pytest.mark.parametrize("name", ["medsora-s", "stdit-s"])
def test_class_and_text_conditioning(name):
    m = _wake(_tiny(name, num_classes=3, context_dim=12)).eval()
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([4, 5])
    y = torch.tensor([0, 2])
    ctx = torch.randn(2, 7, 12)
    mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
    a = m(x, t, y=y, context=ctx, context_mask=mask)
    assert not torch.allclose(a, m(x, t, y=torch.tensor([1, 2]), context=ctx, context_mask=mask))
    assert not torch.allclose(a, m(x, t, y=y))  # no context: no cross-attention
    ctx2 = ctx.clone()
    ctx2[0, 5:] = 100.0  # masked-out tokens of sample 0 do not matter
    assert torch.allclose(a, m(x, t, y=y, context=ctx2, context_mask=mask), atol=1e-6)
    assert torch.allclose(m(x, t), m(x, t, y=torch.tensor([3, 3])))  # y=None is the null class
    m.train()
    torch.manual_seed(0)
    emb = m.y_embedder
    emb.dropout_prob = 1.0
    assert torch.equal(emb(y), emb.embedding_table.weight[[3, 3]])


@pytest.mark.parametrize("name", ["medsora-s", "stdit-s"])
def test_bad_input_errors(name):
    m = _tiny(name)
    x, t = torch.randn(1, 3, 4, 8, 8), torch.tensor([1])
    cases = [
        (dict(x=torch.randn(3, 4, 8, 8)), "\\(B, F, C, H, W\\)"),
        (dict(x=torch.randn(1, 3, 5, 8, 8)), "in_channels=4"),
        (dict(x=torch.randn(1, 3, 4, 8, 7)), "not divisible by patch_size"),
        (dict(num_images=4), "num_images"),
        (dict(t=torch.tensor([1, 2])), "t must have shape"),
        (dict(y=torch.tensor([0])), "num_classes"),
        (dict(context=torch.randn(1, 2, 8)), "context_dim"),
    ]
    for kw, msg in cases:
        args = dict(x=x, t=t) | kw
        with pytest.raises(ValueError, match=msg):
            m(args.pop("x"), args.pop("t"), **args)
    mc = _tiny(name, context_dim=8, num_classes=2)
    with pytest.raises(ValueError, match="context must be"):
        mc(x, t, context=torch.randn(1, 2, 9))
    with pytest.raises(ValueError, match="context_mask"):
        mc(x, t, context=torch.randn(1, 2, 8), context_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="y must be"):
        mc(x, t, y=torch.tensor([0.5]))
    with pytest.raises(ValueError, match="class ids must be in"):
        mc(x, t, y=torch.tensor([3]))


def test_bad_construction_errors():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("medsora-xxl")
    with pytest.raises(ValueError, match="unknown option"):
        create_model("stdit-s", d_state=16)
    with pytest.raises(ValueError, match="headdim"):
        create_model("medsora-s", **(TINY | {"headdim": 48}))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        create_model("medsora-s", **(TINY | {"input_size": 9}))
