"""Settings flow from stage to stage: unset flags follow the record, disagreeing ones are refused."""

import json

import pytest

from medvid.training.builders import follow_latents
from medvid.training.config import DataConfig
from medvid.utils.settings import SettingsMismatch, pick, run_protocol


def test_pick():
    assert pick("--resolution", None, 64, 128, "x") == 64
    assert pick("--resolution", None, None, 128, "x") == 128
    assert pick("--resolution", 64, 64, 128, "x") == 64
    assert pick("--resolution", 32, None, 128, "x") == 32
    with pytest.raises(SettingsMismatch, match="--resolution 32 disagrees with the VAE v.*--resolution 64"):
        pick("--resolution", 32, 64, 128, "the VAE v")


def _latents(tmp_path, fps=30.0):
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "manifest.jsonl").write_text("".join(
        json.dumps({"path": f"v{i}.mp4", "id": f"v{i}", "num_frames": 40, "fps": fps, "height": 8, "width": 8}) + "\n"
        for i in range(3)))
    lat = tmp_path / "lat"
    lat.mkdir()
    (lat / "meta.json").write_text(json.dumps({"manifest": str(tmp_path / "prep" / "manifest.jsonl"),
                                               "protocol": {"num_frames": 8, "frame_stride": 2, "resolution": 64}}))
    return lat


def test_train_data_follows_the_latents(tmp_path):
    lat = _latents(tmp_path)
    d = DataConfig(latent_dir=str(lat))  # defaults 16 / 3 / 128
    follow_latents(d)
    assert (d.num_frames, d.frame_stride, d.resolution) == (8, 2, 64)
    with pytest.raises(SettingsMismatch, match="data.resolution 96 disagrees .* resolution 64"):
        follow_latents(DataConfig(latent_dir=str(lat), resolution=96))


def test_run_protocol_gives_the_clip_frame_rate(tmp_path):
    lat = _latents(tmp_path, fps=30.0)
    proto = run_protocol({"data": {"source": "latents", "latent_dir": str(lat), "num_frames": 16, "frame_stride": 3,
                                   "resolution": 128}})
    assert (proto["num_frames"], proto["frame_stride"], proto["resolution"]) == (8, 2, 64)
    assert proto["source_fps"] == 30.0 and proto["fps"] == 15.0
