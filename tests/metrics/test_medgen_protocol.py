"""MedGen's evaluation protocol: per-video VBench scores without a real set, imaging quality with a
MUSIQ stand-in, the prompt table of the report, and still-image sets."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from medvid.metrics.evaluate import evaluate
from medvid.metrics.vbench import imaging_quality_video, quality_frames
from medvid.utils.video import write_mp4


class Brightness(nn.Module):
    """MUSIQ's call (1, 3, H, W) in [0, 1] -> a 0..100 score; here 100 x mean brightness."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean() * 100.0


@pytest.fixture()
def musiq(tmp_path):
    p = tmp_path / "musiq.pt"
    torch.jit.script(Brightness()).save(str(p))
    return p


def videos(folder, levels, prompts=None, size=(24, 32)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, level in enumerate(levels):
        f = np.full((12, *size, 3), level, np.uint8)
        f[:, :, : size[1] // 2] = max(0, level - 40)  # two-tone, drifting nowhere: smooth
        write_mp4(f, folder / f"v{i}.mp4", fps=8)
        if prompts:
            (folder / f"v{i}.json").write_text(json.dumps({"name": f"v{i}", "prompt": prompts[i]}))
    return folder


def test_imaging_quality_follows_vbench_preprocessing(musiq):
    frames = np.random.default_rng(0).integers(0, 256, (3, 600, 40, 3), dtype=np.uint8)
    x = quality_frames(frames)
    assert x.shape == (3, 3, 512, 34) and float(x.max()) <= 1.0  # longer side 600 -> 512, 40 * 512/600 -> 34
    small = frames[:, :100]
    s, n = imaging_quality_video(small, torch.jit.load(str(musiq)))
    assert n == 3
    np.testing.assert_allclose(s / n, small.astype(np.float64).mean() / 255.0, rtol=1e-5)  # mean score / 100


def test_medgen_protocol_without_real_videos_reports_prompts_beside_videos(tmp_path, musiq):
    prompts = ["an echocardiogram, apical four-chamber view", "colonoscopy <with> a polyp & bleeding"]
    fake = videos(tmp_path / "gen", [120, 200], prompts)
    (fake / "judge.json").write_text(json.dumps([{"video": "v0.mp4", "prompt": prompts[0], "scores": {"text_alignment": 4}},
                                                 {"video": "v1.mp4", "prompt": prompts[1], "scores": {"text_alignment": 2}}]))
    res = evaluate(None, fake, "medgen", tmp_path / "out", musiq=musiq, num_clips=8, clip_length=8, bootstrap=0,
                   cache_dir=None)
    iq = res["metrics"]["imaging_quality"]
    assert set(iq["per_video"]) == {"v0", "v1"} and iq["per_video"]["v1"] > iq["per_video"]["v0"]
    assert "real" not in iq and res["real"] is None
    assert "motion_smoothness_blend" in res["metrics"]  # no AMT-S weights: the named stand-in
    assert set(res["skipped"]) == {"subject_consistency", "background_consistency"}  # no DINO / CLIP given
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Generated videos and their prompts" in html
    assert "an echocardiogram, apical four-chamber view" in html and "colonoscopy &lt;with&gt; a polyp &amp; bleeding" in html
    assert "judge: text_alignment" in html
    row = html[html.index("id='prompts'"):]
    assert row.index("v0") < row.index(prompts[0][:20]) < row.index("v1")  # each prompt in its video's row

    res = evaluate(None, fake, "imaging_quality,fvd", None, num_clips=8, clip_length=8, bootstrap=0, cache_dir=None)
    assert "MUSIQ" in res["skipped"]["imaging_quality"] and "--real" in res["skipped"]["fvd"]


def test_still_images_are_scored_with_frame_metrics(tmp_path):
    from PIL import Image

    real = videos(tmp_path / "real", [60, 90, 120, 150], size=(32, 32))
    gen = tmp_path / "images"
    gen.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(gen / f"img{i}.png")
        (gen / f"img{i}.json").write_text(json.dumps({"prompt": f"chest x-ray {i}"}))
    res = evaluate(real, gen, "fd_effnet_frame,fvd,motion_smoothness", tmp_path / "out", num_clips=8, clip_length=8,
                   bootstrap=0, cache_dir=None, effnet_resolution=64)
    fd = res["metrics"]["fd_effnet_frame"]
    assert fd["num_fake"] == 6 and fd["num_real"] == 4 * 12 and fd["value"] > 0  # every image, every real frame
    assert res["fake"]["image_set"] and "image set" in res["skipped"]["fvd"] and "motion_smoothness" in res["skipped"]
    assert "chest x-ray 3" in (tmp_path / "out" / "report.html").read_text()
