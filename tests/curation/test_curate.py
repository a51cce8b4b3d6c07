import json
import shutil

import cv2
import numpy as np
import pytest

from medvid.curation import curate as C
from medvid.curation.manifest import read_manifest
from medvid.utils.video import write_mp4

from .conftest import moving_clip

FPS = 10.0


def small_cfg(**kw):
    base = dict(min_side=64, min_seconds=0.5, min_frames=8, blur_min_variance=12.0, min_scene_seconds=0.5,
                max_clip_seconds=10.0, text_max_words=20, text_engine="opencv", val_fraction=0.0)
    base.update(kw)
    return C.CurateConfig(**base)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    good = moving_clip(t=20, h=96, w=128, seed=1)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in moving_clip(t=16, h=96, w=128, seed=2)])
    blurred = (blurred * np.array([0.3, 0.6, 1.0])).astype(np.uint8)
    frozen = np.repeat(np.clip(moving_clip(t=1, h=96, w=128, seed=3) * np.array([1.2, 0.5, 0.3]), 0, 255)
                       .astype(np.uint8), 20, axis=0)
    write_mp4(np.concatenate([good, blurred, frozen]), root / "long.mp4", fps=FPS)
    write_mp4(good, root / "sub" / "copy.mp4", fps=FPS)  # the first shot again: a duplicate
    boxed = moving_clip(t=16, h=96, w=128, seed=5)
    boxed[:, :16] = 0
    boxed[:, -16:] = 0
    write_mp4(boxed, root / "letterbox.mp4", fps=FPS)
    (root / "broken.mp4").write_bytes(b"\x00\x01 not a video at all" * 50)
    return root


def test_curate_end_to_end_and_resume(src, tmp_path, monkeypatch):
    out = tmp_path / "out"
    report = C.curate(src, out, small_cfg(), progress=False)
    kept = {r["id"]: r for r in read_manifest(out / "manifest.jsonl")}
    removed = {r["id"]: r for r in map(json.loads, (out / "removed.jsonl").read_text().splitlines())}
    assert set(kept) == {"long-000", "letterbox-000"}
    assert removed["long-001"]["filter"] == "blur" and removed["long-001"]["score"] < 12
    assert removed["long-002"]["filter"] == "static"
    assert removed["sub_copy-000"]["filter"] == "duplicate" and "long-000" in removed["sub_copy-000"]["reason"]
    assert not (out / "clips" / "sub_copy-000.mp4").exists()
    assert [e["source"] for e in report["errors"]] == ["broken.mp4"]
    assert report["removed_by_filter"] == {"blur": 1, "static": 1, "duplicate": 1}
    # the letterbox was cropped away (80 rows remain), the long recording cut at the shot changes
    box = kept["letterbox-000"]
    assert box["crop"] == [16, 80, 0, 128] and (box["height"], box["width"]) == (64, 128)
    assert (kept["long-000"]["start_frame"], kept["long-000"]["end_frame"]) == (0, 20)
    rec = kept["long-000"]
    for key in ("path", "id", "num_frames", "fps", "height", "width", "duration", "split", "file_name",
                "resolution", "blur_score", "static_score", "text_score"):
        assert key in rec, key
    assert rec["resolution"] == "128x96" and rec["num_frames"] == 20 and rec["split"] == "train"
    assert (out / rec["path"]).is_file()
    assert report["timing"]["blur"]["clips_per_second"] > 0

    # resume: finished sources are not processed again; only the broken file is retried
    calls = []
    real = C.process_source
    monkeypatch.setattr(C, "process_source", lambda *a: calls.append(a[1]) or real(*a))
    again = C.curate(src, out, small_cfg(), progress=False)
    assert calls == ["broken.mp4"] and again["resumed_sources"] == 3
    assert {r["id"] for r in read_manifest(out / "manifest.jsonl")} == set(kept)
    # a changed threshold invalidates the saved results
    calls.clear()
    C.curate(src, out, small_cfg(blur_min_variance=0.0), progress=False)
    assert len(calls) == 4


def test_border_drop_and_parallel_workers(src, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(src / "letterbox.mp4", one)
    shutil.copy(src / "long.mp4", one)
    report = C.curate(one, tmp_path / "out", small_cfg(border_action="drop", workers=2), progress=False)
    removed = [json.loads(x) for x in (tmp_path / "out" / "removed.jsonl").read_text().splitlines()]
    assert {r["id"]: r["filter"] for r in removed}["letterbox-000"] == "border"
    assert report["kept"] == 1 and report["errors"] == []


def test_echocardiogram_passes_the_default_filters(tmp_path):
    from pydicom.data import get_testdata_file

    shutil.copy(get_testdata_file("examples_ybr_color.dcm"), tmp_path / "echo.dcm")
    report = C.curate(tmp_path / "echo.dcm", tmp_path / "out", C.CurateConfig(val_fraction=0.0, text_engine="opencv"),
                       progress=False)
    assert report["kept"] == 1, report
    rec = read_manifest(tmp_path / "out" / "manifest.jsonl")[0]
    assert (rec["num_frames"], rec["width"], rec["height"]) == (30, 320, 240)


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="crop, drop or off"):
        C.CurateConfig(border_action="cut")
    with pytest.raises(ValueError, match="unknown filter"):
        C.CurateConfig(disable=["sharpness"])
    with pytest.raises(ValueError, match="no such file or folder"):
        C.curate(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no videos found"):
        C.curate(tmp_path / "empty", tmp_path / "out")


def test_cli(src, tmp_path, capsys):
    from medvid.cli import main

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(src / "letterbox.mp4", one)
    rc = main(["curate", str(one), str(tmp_path / "out"), "--set", "min_side=64", "--set", "min_seconds=0.5",
               "--border-action", "drop"])
    assert rc == 0 and '"border": 1' in capsys.readouterr().out
    assert main(["curate", str(one), str(tmp_path / "out"), "--set", "blurr=3"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["curate", str(one), str(tmp_path / "out"), "--set", "blur"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_learned_score_from_config(src, tmp_path, monkeypatch):
    from medvid.config import from_dict

    (tmp_path / "brightness_scorer.py").write_text(
        "import numpy as np\ndef make(weights):\n    return lambda frames: float(np.mean(frames)) / 25.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"0")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(src / "letterbox.mp4", one)
    cfg = from_dict(C.CurateConfig, {**C.to_dict(small_cfg()), "learned_scores": [
        {"name": "aesthetic", "factory": "brightness_scorer:make", "weights": str(weights), "min_score": 0.0}]})
    C.curate(one, tmp_path / "out", cfg, progress=False)
    rec = read_manifest(tmp_path / "out" / "manifest.jsonl")[0]
    assert 2 < rec["aesthetic_score"] < 8  # mean grey of the cropped texture / 25.5
    cfg.learned_scores[0].min_score = 9.0
    C.curate(one, tmp_path / "out2", cfg, progress=False)
    removed = json.loads((tmp_path / "out2" / "removed.jsonl").read_text())
    assert removed["filter"] == "aesthetic" and "< 9.0" in removed["reason"]


def test_crop_found_on_small_analysis_frames_maps_to_full_size(src, tmp_path):
    from medvid.curation.reader import open_source

    one = tmp_path / "raw"
    one.mkdir()
    shutil.copy(src / "letterbox.mp4", one)
    out = one / "curated"  # inside the source folder: a rerun must not curate its own clips
    C.curate(one, out, small_cfg(analysis_max_side=64, min_side=32), progress=False)
    rec = read_manifest(out / "manifest.jsonl")[0]
    assert rec["crop"] == [16, 80, 0, 128] and (rec["height"], rec["width"]) == (64, 128)
    clip = open_source(out / rec["path"])
    assert (clip.num_frames, clip.height, clip.width) == (16, 64, 128)
    report = C.curate(one, out, small_cfg(analysis_max_side=64, min_side=32), progress=False)
    assert report["sources"] == 1 and report["resumed_sources"] == 1
