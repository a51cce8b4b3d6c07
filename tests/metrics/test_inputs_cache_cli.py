"""Video folders, clip selection, the content-hash feature cache, the offline metrics and the CLI."""

import json
import time

import numpy as np
import pytest

from medvid.metrics.evaluate import evaluate
from medvid.metrics.inputs import fingerprint, list_videos, select_clips
from medvid.utils.video import save_npz, write_gif, write_mp4

from .conftest import moving_video


def test_folder_kinds_and_duplicates(tmp_path):
    v = moving_video(0, t=12)
    save_npz(v, tmp_path / "a.npz")
    write_mp4(v, tmp_path / "a.mp4")  # same video as a.npz: the npz wins
    write_gif(v, tmp_path / "a.gif")
    write_mp4(v, tmp_path / "b.mp4")
    frames = tmp_path / "c"
    frames.mkdir()
    from PIL import Image

    for i, f in enumerate(v[:5]):
        Image.fromarray(f).save(frames / f"{i}.png")
    (tmp_path / "samples.json").write_text("{}")
    Image.fromarray(v[0]).save(tmp_path / "contact_sheet.png")
    srcs = list_videos(tmp_path)
    assert [(s.name, s.kind) for s in srcs] == [("a", "npz"), ("b", "video"), ("c", "frames")]
    assert [s.num_frames for s in srcs] == [12, 12, 5]
    np.testing.assert_array_equal(srcs[2].read([1, 3]), v[[1, 3]])


def test_select_clips_protocol(tmp_path):
    for i, t in enumerate([20, 16, 40, 8]):
        save_npz(moving_video(i, t=t), tmp_path / f"v{i}.npz")
    srcs = list_videos(tmp_path)
    clips, dropped = select_clips(srcs, 10, 16, random_start=True, seed=3)
    assert dropped == 1 and len(clips) == 3
    assert all(0 <= c.start <= c.source.num_frames - 16 for c in clips)
    starts = {c.source.name: c.start for c in clips}
    # seeded, and different seeds give different starts for the 40-frame video
    assert len({c.start for s in range(10) for c in select_clips(srcs, 10, 16, True, seed=s)[0] if c.source.name == "v2"}) > 1
    assert {c.source.name: c.start for c in select_clips(srcs, 10, 16, True, seed=3)[0]} == starts
    gen, dropped = select_clips(srcs, 2, 16, random_start=False)
    assert [(c.source.name, c.start) for c in gen] == [("v0", 0), ("v1", 0)] and dropped == 0


def test_fingerprint_follows_content(tmp_path):
    save_npz(moving_video(0), tmp_path / "a.npz")
    fp = fingerprint(list_videos(tmp_path))
    assert fp == fingerprint(list_videos(tmp_path))
    save_npz(moving_video(1), tmp_path / "a.npz")
    assert fp != fingerprint(list_videos(tmp_path))


def test_npz_without_frames_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "x.npz", latents=np.zeros(3))
    with pytest.raises(ValueError, match="no 'frames' array"):
        list_videos(tmp_path)[0].num_frames


def _demo_sets(tmp_path, n=8, size=32):
    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir(), fake.mkdir()
    for i in range(n):
        save_npz(moving_video(i, t=16, h=size, w=size), real / f"r{i}.npz")
        save_npz(moving_video(i + 0.3, t=16, h=size, w=size, speed=0.1) // 2 + 40, fake / f"f{i}.npz")
    return real, fake


def test_offline_metrics_and_real_feature_cache(tmp_path):
    real, fake = _demo_sets(tmp_path, n=4)
    kw = dict(cache_dir=tmp_path / "cache", bootstrap=20, effnet_resolution=32)
    t0 = time.time()
    first = evaluate(real, fake, ["fd_effnet_frame", "fd_effnet_clip"], None, **kw)
    t_first = time.time() - t0
    m = first["metrics"]
    assert m["fd_effnet_frame"]["num_real"] == 64 and m["fd_effnet_clip"]["num_real"] == 4
    assert m["fd_effnet_frame"]["value"] > 0 and m["fd_effnet_clip"]["value"] > 0
    assert first["cache"]["misses"] == 2 and first["cache"]["hits"] == 0
    # same real set, other generated set: real features come from the cache
    fake2 = tmp_path / "fake2"
    fake2.mkdir()
    for i in range(4):
        save_npz(moving_video(i + 0.6, t=16, h=32, w=32), fake2 / f"f{i}.npz")
    second = evaluate(real, fake2, ["fd_effnet_frame"], None, **kw)
    assert second["cache"]["hits"] == 1 and second["cache"]["misses"] == 1
    again = evaluate(real, fake, ["fd_effnet_frame", "fd_effnet_clip"], None, **kw)
    assert again["cache"]["hits"] == 2
    assert again["metrics"]["fd_effnet_clip"]["value"] == pytest.approx(m["fd_effnet_clip"]["value"], rel=1e-12)
    # identical sets: distance 0
    same = evaluate(real, real, ["fd_effnet_frame"], None, cache_dir=None, bootstrap=0, effnet_resolution=32)
    assert abs(same["metrics"]["fd_effnet_frame"]["value"]) < 1e-6
    assert t_first < 60


def test_cli_writes_metrics_and_report(tmp_path, capsys):
    from medvid.cli import main

    real, fake = _demo_sets(tmp_path, n=3)
    out = tmp_path / "out"
    rc = main(["evaluate", "--real", str(real), "--fake", str(fake), "--metrics", "fd_effnet_clip,fvd,motion_smoothness",
               "--out", str(out), "--cache-dir", "none", "--bootstrap", "5", "--effnet-resolution", "32"])
    assert rc == 0
    res = json.loads((out / "metrics.json").read_text())
    assert "fd_effnet_clip" in res["metrics"] and "fvd" in res["skipped"]
    assert (out / "report.html").stat().st_size > 1000
    assert "fd_effnet_clip" in capsys.readouterr().out


def test_motion_is_the_mean_grey_step_of_each_clip(tmp_path):
    import cv2

    real, fake = _demo_sets(tmp_path, n=3)
    res = evaluate(real, fake, ["motion"], None, cache_dir=None, bootstrap=10, num_clips=3)["metrics"]["motion"]

    def by_hand(folder):  # OpenCV's BT.601 grey conversion, frame by frame
        vals = []
        for p in sorted(folder.glob("*.npz")):
            f = np.load(p)["frames"][:16]
            g = np.stack([cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY).astype(float) for x in f])
            vals.append(np.abs(np.diff(g, axis=0)).mean())
        return float(np.mean(vals))

    assert res["value"] == pytest.approx(by_hand(fake), abs=0.6)  # cv2 rounds grey to integers
    assert res["real"]["value"] == pytest.approx(by_hand(real), abs=0.6)
    assert res["real"]["value"] > res["value"] > 0  # the fake set moves at a tenth of the speed, half the contrast
