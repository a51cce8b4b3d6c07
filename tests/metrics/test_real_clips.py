"""`medvid evaluate --real PREPARED`: real clips cut at the samples' protocol, refusals, reference rows."""

import json

import numpy as np
import pytest

from medvid import cli
from medvid.data import prepare
from medvid.data.synthetic import write_video
from medvid.metrics.evaluate import evaluate
from medvid.utils.video import save_npz


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("realclips")
    src = root / "src"
    src.mkdir()
    for i in range(2):
        write_video(src / f"v{i}.mp4", num_frames=60, height=48, width=64, fps=30)
    prepare(src, root / "prep", holdout_tail=0.5, progress=False)
    return root / "prep"


def _fakes(folder, n=4, size=16, frames=8, protocol=None, fps=10.0, vae=None):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        save_npz(rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8), folder / f"video_{i:04d}.npz", fps=fps)
    if protocol is not None:
        (folder / "samples.json").write_text(json.dumps({"fps": fps, "protocol": protocol, "vae": vae}))
    return folder


def test_prepared_real_is_cut_at_the_samples_protocol_with_reference_rows(prepared, tmp_path):
    fake = _fakes(tmp_path / "fake", protocol={"num_frames": 8, "frame_stride": 3, "resolution": 16, "fps": 10.0},
                  vae="tiny-random(seed=0)")
    out = tmp_path / "out"
    res = evaluate(prepared, fake, ["fd_effnet_frame", "dynamic_degree"], out, num_clips=4, bootstrap=0,
                   effnet_resolution=32, report=True)
    assert res["settings"]["clip_length"] == 8 and res["settings"]["fps"] == 10.0
    assert res["settings"]["real_protocol"] == {**res["settings"]["real_protocol"], "split": "val", "frame_stride": 3,
                                                "resolution": 16, "clips": 4}
    clips = sorted((out / "real_val").glob("clip_*.npz"))
    assert len(clips) == 4
    with np.load(clips[0]) as z:
        assert z["frames"].shape == (8, 16, 16, 3) and float(z["fps"]) == 10.0
    # Only held-out frames (the second half of each video: frames 30-59) are in the real clips.
    ids = json.loads((out / "real_val" / "clips.json").read_text())["clip_ids"]
    assert all(i.split("@")[0].endswith(".tail") for i in ids)
    assert (out / "feature_cache").is_dir()  # the cache defaults into the output folder
    refs = res["references"]
    assert len(refs) == 3 and all("fd_effnet_frame" in r["metrics"] for r in refs.values())
    trip = sorted((out / "ref_vae_round_trip").glob("clip_*.npz"))
    assert len(trip) == 4 and np.load(trip[0])["frames"].shape == (8, 16, 16, 3)
    noisy = next(r for k, r in refs.items() if "noise" in k)["metrics"]["fd_effnet_frame"]["value"]
    copy = next(r for k, r in refs.items() if "noise" not in k)["metrics"]["fd_effnet_frame"]["value"]
    assert noisy > copy
    html = (out / "report.html").read_text()
    assert "Against reference rows" in html and "trivial baseline" in html and "through the VAE" in html
    # A stride that disagrees with the samples is refused with both values.
    with pytest.raises(ValueError, match="--frame-stride 1 disagrees.*--frame-stride 3"):
        evaluate(prepared, fake, ["fd_effnet_frame"], tmp_path / "o2", frame_stride=1, num_clips=2)


def test_mismatched_real_and_fake_are_refused(prepared, tmp_path, capsys):
    fake = _fakes(tmp_path / "fake", fps=10.0)
    raw = prepared.parent / "src"  # 64x48 videos at 30 fps against 16 px fakes
    argv = ["evaluate", "--real", str(raw), "--fake", str(fake), "--metrics", "fd_effnet_frame", "--out",
            str(tmp_path / "o"), "--num-clips", "2", "--clip-length", "8"]
    assert cli.main(argv) == 2
    assert "64x48 pixels but --fake clips are 16x16" in capsys.readouterr().err
    # A prepared folder without a samples.json needs the stride and size.
    assert cli.main(["evaluate", "--real", str(prepared), "--fake", str(fake), "--out", str(tmp_path / "o"),
                     "--metrics", "fd_effnet_frame"]) == 2
    assert "--frame-stride and --resolution" in capsys.readouterr().err
    # Same size, other frame rate: refused too.
    same = _fakes(tmp_path / "same", size=16, fps=30.0)
    real = _fakes(tmp_path / "real", size=16, fps=10.0)
    with pytest.raises(ValueError, match="frames/s"):
        evaluate(real, same, ["fd_effnet_frame"], None, num_clips=2, clip_length=8)
