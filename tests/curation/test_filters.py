import cv2
import numpy as np
import pytest
import scipy.ndimage

from medvid.curation import filters as F
from medvid.utils.weights import MissingWeightsError

from .conftest import moving_clip


def with_bars(clip, top=0, bottom=0, left=0, right=0):
    out = clip.copy()
    h, w = clip.shape[1:3]
    out[:, :top] = 0
    out[:, h - bottom :] = 0
    out[:, :, :left] = 0
    out[:, :, w - right :] = 0
    return out


@pytest.mark.parametrize("bars", [(20, 20, 0, 0), (0, 0, 24, 24), (12, 16, 8, 10), (10, 0, 0, 0)])
def test_content_box_matches_the_bars_drawn(bars):
    clip = moving_clip(t=8, h=120, w=160)
    top, bottom, left, right = bars
    box = F.find_content_box(with_bars(clip, *bars))
    assert box == (top, 120 - bottom, left, 160 - right)


def test_border_filter_drops_letterbox_keeps_clean(clip):
    f = F.BorderFilter(max_fraction=0.05)
    assert f(clip).keep and f(clip).score == 0.0
    r = f(with_bars(clip, top=16, bottom=16))
    assert not r.keep and r.score == pytest.approx(32 / 96) and "black borders" in r.reason


def test_border_filter_ignores_a_dark_clip_without_bars(echo_frames):
    # the echo's black background has no straight bar edge: nothing to crop
    assert F.BorderFilter()(echo_frames).keep


def write_text(frame, lines):
    out = frame.copy()
    for i, line in enumerate(lines):
        cv2.putText(out, line, (6, 18 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def test_text_filter_opencv_finds_burnt_in_text():
    clip = moving_clip(t=6, h=240, w=320)
    lines = ["PATIENT DOE JOHN 1970 MRN 0042", "CARDIO LAB 2024 GAIN 45 DEPTH 16", "HR 72 BPM FPS 30 PROBE S5",
             "SUBTITLE TEXT OVER THE IMAGE HERE", "MORE WORDS ON THIS LINE TOO", "AND ONE MORE LINE OF WORDS"]
    texty = np.stack([write_text(f, lines) for f in clip])
    f = F.TextFilter(max_words=8, engine="opencv")
    clean, dirty = f(clip), f(texty)
    assert clean.keep and clean.score <= 2
    assert not dirty.keep and dirty.score > 8 and "burnt-in text" in dirty.reason


def test_text_filter_on_the_echocardiogram_sees_its_labels(echo_frames):
    words, area = F.TextFilter(engine="opencv").measure(echo_frames[0])
    assert 5 <= words <= 40 and 0 < area < 0.1
    assert not F.TextFilter(max_words=4, engine="opencv")(echo_frames).keep


def test_text_filter_rejects_unknown_engine():
    with pytest.raises(ValueError, match="auto, tesseract or opencv"):
        F.TextFilter(engine="magic")


def test_laplacian_variance_matches_scipy(clip):
    gray = F.to_gray(clip[0])
    ref = scipy.ndimage.laplace(gray.astype(np.float64), mode="mirror").var()  # mirror = reflect-101
    inner = F.laplacian_variance(gray)
    assert inner == pytest.approx(ref, rel=1e-12)


def test_blur_filter(clip):
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in clip])
    f = F.BlurFilter(min_variance=8)
    assert f(clip).keep
    r = f(blurred)
    assert not r.keep and r.score < 8 and "blurry" in r.reason


def test_flow_magnitude_recovers_the_known_shift():
    for shift in (1, 3):
        mag = F.mean_flow_magnitude(moving_clip(t=6, h=96, w=128, shift=shift))
        assert mag == pytest.approx(shift, rel=0.25)


def test_static_filter_frozen_near_static_and_moving(clip):
    f = F.StaticFilter(min_flow=0.05)
    assert f(clip).keep
    frozen = np.repeat(clip[:1], 12, axis=0)
    r = f(frozen)
    assert not r.keep and "frozen" in r.reason
    rng = np.random.default_rng(0)
    noisy = np.clip(frozen + rng.normal(0, 1.0, frozen.shape), 0, 255).astype(np.uint8)
    r = f(noisy)
    assert not r.keep and "near-static" in r.reason


def test_jump_filter(clip):
    f = F.JumpFilter(max_jump=0.12)
    assert f(clip).keep
    jumped = clip.copy()
    jumped[8:] = moving_clip(t=8, seed=5)[:, ::-1]  # another shot, mirrored: a missed cut
    jumped[8:] = 255 - jumped[8:]
    r = f(jumped)
    assert not r.keep and "frame 8" in r.reason


def test_size_filter():
    f = F.SizeFilter(min_side=64, min_seconds=1.0, min_frames=8)
    assert f(moving_clip(t=16, h=64, w=80), fps=8).keep
    assert "short side" in f(moving_clip(t=16, h=48, w=80), fps=8).reason
    assert "frames" in f(moving_clip(t=6, h=64, w=80), fps=2).reason
    assert "duration" in f(moving_clip(t=10, h=64, w=80), fps=30).reason


def test_learned_score_hook(tmp_path, monkeypatch, clip):
    (tmp_path / "my_scorer.py").write_text(
        "import numpy as np\n"
        "def make(weights):\n"
        "    scale = float(open(weights).read())\n"
        "    return lambda frames: scale * float(np.mean(frames)) / 255\n")
    weights = tmp_path / "w.txt"
    weights.write_text("10")
    monkeypatch.syspath_prepend(str(tmp_path))
    scorer = F.load_scorer("my_scorer:make", str(weights))
    expected = 10 * clip.mean() / 255
    f = F.LearnedScoreFilter("aesthetic", scorer, min_score=expected + 1)
    r = f(clip)
    assert r.score == pytest.approx(expected) and not r.keep and "aesthetic" in r.reason
    assert F.LearnedScoreFilter("aesthetic", scorer, min_score=expected - 1)(clip).keep
    with pytest.raises(MissingWeightsError):
        F.load_scorer("my_scorer:make", str(tmp_path / "missing.bin"))
    with pytest.raises(ValueError, match="package.module:function"):
        F.load_scorer("my_scorer.make", str(weights))
