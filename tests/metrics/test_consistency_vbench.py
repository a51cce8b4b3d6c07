"""Frame consistency, VBench-style dimensions: formulas vs direct loops, static-video limits,
and the CLIP / DINO / VideoMAE loaders with tiny random Hugging Face models."""

import numpy as np
import pytest
import torch

from medvid.metrics.consistency import fc_all_pairs, fc_consecutive
from medvid.metrics.evaluate import evaluate
from medvid.metrics.vbench import blend_interpolator, dynamic_degree_video, motion_smoothness_video, vbench_consistency
from medvid.utils.video import save_npz

from .conftest import moving_video


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_fc_variants_vs_loops():
    e = np.random.default_rng(0).standard_normal((6, 5))
    assert fc_consecutive(e) == pytest.approx(np.mean([_cos(e[i], e[i - 1]) for i in range(1, 6)]))
    pairs = [_cos(e[i], e[j]) for i in range(6) for j in range(6) if i != j]
    assert fc_all_pairs(e) == pytest.approx(np.mean(pairs))
    assert fc_consecutive(np.ones((4, 3))) == pytest.approx(1.0)


def test_vbench_consistency_vs_loop():
    f = np.random.default_rng(1).standard_normal((5, 4))
    s, n = vbench_consistency(f)
    ref = [(max(0, _cos(f[i - 1], f[i])) + max(0, _cos(f[0], f[i]))) / 2 for i in range(1, 5)]
    assert n == 4 and s == pytest.approx(sum(ref))


def _dis():
    from medvid.flow.estimators import build_flow_estimator

    return build_flow_estimator("dis")


def test_dynamic_degree_static_vs_moving():
    flow = _dis()
    static = np.repeat(moving_video(0, t=1, h=64, w=64), 16, axis=0)
    assert not dynamic_degree_video(static, 8.0, flow)
    # 64 px: threshold 6 * 64/256 = 1.5 px per pair; shift the pattern 4 px per frame
    base = moving_video(0, t=1, h=64, w=96)[0]
    moving = np.stack([np.roll(base, 4 * k, axis=1)[:, :64] for k in range(16)])
    assert dynamic_degree_video(moving, 8.0, flow)


def test_motion_smoothness_limits():
    static = np.repeat(moving_video(0, t=1), 9, axis=0)
    s, n = motion_smoothness_video(static, blend_interpolator)
    assert n == 4 and s == 0.0  # (255 - 0) / 255 = 1
    v = moving_video(0, t=9) // 2 * 2  # even values: the blend is an integer, no rounding ties
    s, n = motion_smoothness_video(v, blend_interpolator)
    assert s / n > 1.0
    odd = v[1:-1:2].astype(float)
    mid = (v[0:-2:2].astype(float) / 255 + v[2::2].astype(float) / 255) / 2
    assert s / n == pytest.approx(np.abs(np.round(mid * 255) - odd).mean(), rel=1e-5)


def _tiny_clip(path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16, projection_dim=8)
    CLIPVisionModelWithProjection(cfg).save_pretrained(path)
    return path


def _tiny_dino(path):
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                    image_size=32, patch_size=16)
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(path)
    return path


def test_static_video_frame_consistency_is_one(tmp_path):
    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir(), fake.mkdir()
    for i in range(3):
        save_npz(moving_video(i, t=16), real / f"r{i}.npz")
        save_npz(np.repeat(moving_video(i, t=1), 16, axis=0), fake / f"f{i}.npz")  # static
    clip, dino = _tiny_clip(tmp_path / "clip"), _tiny_dino(tmp_path / "dino")
    res = evaluate(real, fake, ["fc", "subject_consistency", "background_consistency"], None,
                   clip=clip, dino=dino, cache_dir=None, bootstrap=10)
    m = res["metrics"]
    for k in ("fc_consecutive", "fc_all_pairs", "subject_consistency", "background_consistency"):
        assert m[k]["value"] == pytest.approx(1.0, abs=1e-5), k
        assert m[k]["num_videos"] == 3
    assert m["fc_consecutive"]["real"]["value"] < 1 - 1e-4  # moving real videos are less consistent


def test_clip_features_equal_hf_image_embeds(tmp_path):
    from transformers import CLIPVisionModelWithProjection

    from medvid.nets.vision import CLIP_MEAN, CLIP_STD, ClipImageNet

    path = _tiny_clip(tmp_path / "clip")
    net = ClipImageNet(path)
    frames = torch.from_numpy(moving_video(0, t=2, h=32, w=32))  # already 32 px: no resize
    ref = CLIPVisionModelWithProjection.from_pretrained(path).eval()
    x = (frames.permute(0, 3, 1, 2).float() / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(net(frames), ref(pixel_values=x).image_embeds)


def test_cdfvd_features_are_the_classifier_input(tmp_path):
    """VideoMAENet returns what VideoMAEForVideoClassification feeds its classifier: fc_norm(mean tokens)."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    from medvid.nets.vision import VideoMAENet

    cfg = VideoMAEConfig(image_size=16, patch_size=8, num_frames=16, tubelet_size=2, hidden_size=16,
                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, use_mean_pooling=True,
                         num_labels=3)
    VideoMAEForVideoClassification(cfg).save_pretrained(tmp_path / "vmae")
    net = VideoMAENet(tmp_path / "vmae")
    clips = torch.from_numpy(np.stack([moving_video(0, h=16, w=16), moving_video(1, h=16, w=16)]))  # (2, 16, 16, 16, 3)
    ref = VideoMAEForVideoClassification.from_pretrained(tmp_path / "vmae").eval()
    seen = {}
    ref.classifier.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    with torch.no_grad():
        ref(pixel_values=clips.permute(0, 1, 4, 2, 3).float() / 255)  # (B, T, 3, H, W) in [0, 1]
    torch.testing.assert_close(net(clips), seen["x"])
