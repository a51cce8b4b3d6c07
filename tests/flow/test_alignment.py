import numpy as np
import pytest
import torch
from PIL import Image

from medvid.flow.alignment import (AlignConfig, AlignmentLoss, build_alignment, flow_targets,
                                   layer_for_block, resample_plane)


def test_block_to_layer_mapping_follows_the_reference():
    assert [layer_for_block(i, 12, 12) for i in range(12)] == list(range(12))
    assert [layer_for_block(i, 6, 12) for i in range(6)] == [0, 2, 4, 6, 8, 10]  # round(i*12/depth)
    assert [layer_for_block(i, 24, 12) for i in range(24)] == [i // 2 for i in range(24)]  # floor(i/(depth/12))
    assert [layer_for_block(i, 2, 7) for i in range(2)] == [0, 4]  # round(3.5) -> 4 (Python rounds half to even)


def _pil_resize(plane: np.ndarray, n: int, d: int) -> np.ndarray:
    """PIL's bilinear resize of a float image (antialiased when shrinking), (tokens, C) -> (n, d)."""
    return np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize((d, n), Image.BILINEAR))


def _layer_norm(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / np.sqrt(x.var() + 1e-5)  # torch's LayerNorm eps, no affine


def _numpy_reference(block_feats, target_feats, t, num_images, alpha, margin, pooling="frame"):
    """Eq. 14-15 written out: r = 1 - Pearson correlation (np.corrcoef) over the pooled tokens."""
    depth, num_layers = len(block_feats), len(target_feats)
    b, f, n, d = block_feats[0].shape
    f_lat = f - num_images
    terms = []
    for i, h in enumerate(block_feats):
        j = {6: [0, 2, 4, 6, 8, 10], 2: [0, 4]}[depth][i] if depth != num_layers else i
        y = target_feats[j].numpy().astype(np.float64)
        h = h.detach().numpy().astype(np.float64)
        group = y.shape[1] // f_lat
        for s in range(b):
            g = 1.0 / (t[s].item() + 1.0)
            # (f_lat, n, d): consecutive-group mean of the flow frames, resized to the block's plane
            target = np.stack([_pil_resize(y[s, k * group:(k + 1) * group].mean(0), n, d) for k in range(f_lat)])
            if pooling == "frame":  # per channel, over the n tokens of one latent frame
                for k in range(f_lat):
                    for c in range(d):
                        terms.append(g * (1.0 - np.corrcoef(h[s, k, :, c], target[k, :, c])[0, 1]))
            elif pooling == "sample":  # per channel, over all f_lat * n tokens of the sample
                for c in range(d):
                    terms.append(g * (1.0 - np.corrcoef(h[s, :f_lat, :, c].ravel(), target[:, :, c].ravel())[0, 1]))
            else:  # token: per token, over the d channels, after a LayerNorm
                for k in range(f_lat):
                    for tok in range(n):
                        rho = np.corrcoef(_layer_norm(h[s, k, tok]), _layer_norm(target[k, tok]))[0, 1]
                        terms.append(g * (1.0 - rho))
    return alpha * max(np.mean(terms) - margin, 0.0)


@pytest.mark.parametrize("pooling", ["sample", "frame", "token"])
@pytest.mark.parametrize("depth,num_layers", [(2, 7), (3, 3)])
def test_loss_equals_an_independent_computation(depth, num_layers, pooling):
    b, f_lat, num_images, n, d = 2, 2, 1, 4, 8
    shapes = [(16, 6), (4, 10), (5, 8)][:num_layers] + [(16, 6)] * max(0, num_layers - 3)
    target = [torch.randn(b, 8, tok, c) for tok, c in shapes]  # F_video = 8 -> f_latent = 2
    # block features correlated with their targets, so r is far from 1 and the hinge is active
    blocks = []
    for i in range(depth):
        j = layer_for_block(i, depth, num_layers)
        base = resample_plane(target[j].reshape(b, 2, 4, *target[j].shape[2:]).mean(2), n, d)
        h = torch.randn(b, f_lat + num_images, n, d)
        h[:, :f_lat] += 3 * base
        blocks.append(h)
    t = torch.tensor([0, 37])
    loss = AlignmentLoss(alpha=0.1, margin=0.01, pooling=pooling)(blocks, target, t, num_images)
    ref = _numpy_reference(blocks, target, t, num_images, 0.1, 0.01, pooling)
    assert ref > 0
    np.testing.assert_allclose(loss.item(), ref, rtol=1e-4, atol=1e-6)


def test_poolings_differ_and_sample_is_the_default():
    target = [torch.randn(2, 4, 6, 5)]
    blocks = [torch.randn(2, 2, 6, 5) + resample_plane(target[0].reshape(2, 2, 2, 6, 5).mean(2), 6, 5)]
    t = torch.tensor([0, 0])
    losses = {p: AlignmentLoss(1.0, 0.0, pooling=p)(blocks, target, t).item() for p in ("sample", "frame", "token")}
    assert len({round(v, 6) for v in losses.values()}) == 3
    assert AlignmentLoss(1.0, 0.0)(blocks, target, t).item() == losses["sample"]
    assert AlignConfig().pooling == "sample"
    assert build_alignment(AlignConfig(enabled=True, pooling="token")).loss.pooling == "token"
    with pytest.raises(ValueError, match="pooling"):
        AlignConfig(pooling="batch")
    with pytest.raises(ValueError, match="pooling"):
        AlignmentLoss(pooling="channel")


def test_images_are_masked_and_hinge_and_gradient():
    target = [torch.randn(1, 4, 9, 5)]
    h = resample_plane(target[0].mean(1, keepdim=True).repeat(1, 4, 1, 1), 6, 4)[:, :1]  # exactly aligned
    h = torch.cat([h, torch.randn(1, 3, 6, 4)], 1).requires_grad_(True)  # 1 video latent + 3 images
    loss_fn = AlignmentLoss(alpha=1.0, margin=0.0)
    t = torch.tensor([0])
    # f_latent = 1: mean over all 4 flow frames; perfectly aligned video frame -> r = 0
    assert loss_fn([h], target, t, num_images=3).item() == pytest.approx(0.0, abs=1e-5)
    h2 = h.detach().clone()
    h2[:, 1:] = torch.randn(1, 3, 6, 4) * 100  # images change: loss must not
    assert loss_fn([h2], target, t, 3).item() == pytest.approx(0.0, abs=1e-5)
    noisy = (h.detach() + torch.randn_like(h) * 2).requires_grad_(True)
    loss = loss_fn([noisy], target, t, 3)
    loss.backward()
    assert loss.item() > 0 and noisy.grad[:, 1:].abs().max() == 0 and noisy.grad[:, :1].abs().max() > 0
    # a margin above the residual switches the term off
    assert AlignmentLoss(1.0, margin=10.0)([noisy], target, t, 3).item() == 0.0
    # g(t) = 1/(t+1): late timesteps weigh less
    assert loss_fn([noisy], target, torch.tensor([99]), 3).item() == pytest.approx(loss.item() / 100, rel=1e-4)


def test_global_frame_mix_reproduces_the_reference_mean():
    y = torch.randn(1, 16, 4, 3)
    from medvid.flow.alignment import mix_frames

    g = mix_frames(y, 4, "global")
    torch.testing.assert_close(g, y.mean(1, keepdim=True).expand(1, 4, 4, 3))  # 1x1 conv of 1/16s
    torch.testing.assert_close(mix_frames(y, 4)[:, 1], y[:, 4:8].mean(1))


def test_aligner_from_cache_and_on_the_fly():
    cfg = AlignConfig(enabled=True, alpha=0.1, repnet="effnet-lite0")
    assert build_alignment(AlignConfig(enabled=False)) is None
    aligner = build_alignment(cfg, torch.nn.Linear(2, 2))
    video = torch.rand(1, 5, 3, 32, 32) * 2 - 1  # T+1 = 5 frames -> 4 flow fields
    blocks = [torch.randn(1, 2 + 1, 4, 16, requires_grad=True) for _ in range(2)]  # 2 video latents + 1 image
    t = torch.tensor([3])
    on_the_fly = aligner(blocks, {"video": video}, t, num_images=1)
    feats = flow_targets(video, aligner._flow, aligner._repnet)
    assert len(feats) == 7 and feats[0].shape == (1, 4, 256, 16)
    cached = aligner(blocks, {"flow_features": [f.half() for f in feats], "video": None}, t, 1)
    torch.testing.assert_close(cached, on_the_fly, atol=1e-3, rtol=1e-2)
    on_the_fly.backward()
    assert blocks[0].grad is not None
    with pytest.raises(ValueError, match="flow_features"):
        aligner(blocks, {}, t, 1)
    with pytest.raises(ValueError, match="alpha"):
        AlignConfig(alpha=-1)


def test_with_the_medsora_backbone_when_present():
    models = pytest.importorskip("medvid.models")
    try:
        model = models.create_model("medsora-s", depth=2, hidden_size=64, input_size=8, in_channels=4,
                                    d_state=16, headdim=32)
    except Exception as e:  # the backbone lands separately
        pytest.skip(f"medvid.models.create_model unavailable: {e}")
    x = torch.randn(1, 2 + 1, 4, 8, 8)
    t = torch.tensor([10])
    _, feats = model(x, t, num_images=1, return_features=True)
    assert len(feats) == 2 and feats[0].shape[:2] == (1, 3)
    target = [torch.randn(1, 8, 16, 24) for _ in range(7)]
    loss = AlignmentLoss(0.1)(feats, target, t, num_images=1)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in model.parameters())
