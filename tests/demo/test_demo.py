"""The demo end to end at a minimal budget, on the real echocardiogram that ships with pydicom-data."""

import json

import numpy as np
import pytest

from medvid.demo.pipeline import DemoConfig, run_demo


def tiny_demo_config() -> DemoConfig:
    return DemoConfig(minutes=0.1, resolution=32, clips_per_video=2, vae_channels=8, model_depth=2,
                      model_width=48, batch_size=2, sample_num=2, sample_steps=2, real_clips=2, min_vae_steps=1,
                      min_fc_steps=1, min_train_steps=2, fixed_seconds=0)


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(out, tiny_demo_config())
    stages = summary["stages"]
    assert list(stages) == ["data", "vae", "encode", "flow", "train", "sample", "evaluate"]
    # The held-out video is later heartbeats of the study, never seen in training.
    echo = stages["data"]["echo"]
    assert echo["train_frames"] + echo["heldout_frames"] == echo["frames"]
    assert stages["data"]["prepare"] == {**stages["data"]["prepare"], "train": 1, "val": 1}
    # Videos people can open, a contact sheet and a report.
    assert len(stages["sample"]["videos"]) == 2
    for p in stages["sample"]["videos"]:
        assert p.endswith(".mp4")
    assert (out / "samples" / "contact_sheet.png").is_file()
    html = (out / "report.html").read_text()
    assert "fd_effnet_frame" in html and "<table" in html
    assert "id='references'" in html and "through the VAE" in html and "round-trip strip" in html
    # The samples name their checkpoint, so the report shows the run's configuration and curves.
    sidecar = json.loads((out / "samples" / "samples.json").read_text())
    assert sidecar["checkpoint"].startswith(str(out / "medsora"))
    assert "medsora-s" in html and "<svg" in html
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert np.isfinite(metrics["fd_effnet_frame"]["value"])
    # The comparison table: the samples, the two reference rows, the VAE round trip of the held-out
    # clips, and the real clips' motion; every clip row has the motion statistic.
    table = stages["evaluate"]["comparison"]
    assert len(table) == 5 and "held-out clips through the VAE (the ceiling)" in table
    assert all(np.isfinite(row["motion"]) for row in table.values())
    assert table["training clips + noise sigma 0.3 (trivial baseline)"]["motion"] > table["real held-out clips"]["motion"]
    # v prediction, and the checkpoint records the latents' range the samplers clamp to.
    from medvid.utils.checkpoint import load_checkpoint

    _, state, _ = load_checkpoint(out / "medsora")
    assert state["diffusion"]["prediction"] == "v" and state["latent_absmax"] > 0
    # The MedSora run trained with the alignment term, from the flow-feature cache.
    assert stages["train"]["steps"] >= 2
    # A second call resumes: every stage is already done and nothing is recomputed.
    again = run_demo(out, tiny_demo_config())
    assert again["stages"]["train"] == stages["train"]
    assert (out / ".stages" / "evaluate.json").is_file()


def test_demo_config_rejects_bad_budget():
    with pytest.raises(ValueError, match="--minutes"):
        DemoConfig(minutes=0)
    with pytest.raises(ValueError, match="multiple of 16"):
        DemoConfig(resolution=40)


def _own_videos(folder):
    """A user's folder: an mp4, a DICOM cine loop, a folder of frames, and files the demo must skip."""
    from PIL import Image

    from medvid.data.synthetic import index_frame, write_dicom, write_video

    folder.mkdir(parents=True)
    write_video(folder / "laparoscopy.mp4", num_frames=40, height=48, width=64)
    frames = np.stack([index_frame(i, 40, 40) for i in range(24)])
    write_dicom(folder / "cine.dcm", frames[..., 0].astype(np.uint16) * 16, bits_stored=12)
    (folder / "frames").mkdir()
    for i in range(20):
        Image.fromarray(index_frame(i, 32, 32)).save(folder / "frames" / f"{i:04d}.png")
    (folder / "notes.txt").write_text("not a video")
    return folder


def test_demo_source_splits_each_video_in_time(tmp_path):
    from medvid.data.manifest import read_manifest
    from medvid.demo.source import prepare_source

    src = _own_videos(tmp_path / "mine")
    res = prepare_source(src, tmp_path / "run", holdout_tail=0.25)
    entries = read_manifest(res["prepared"])
    by_video = {}
    for e in entries:
        by_video.setdefault(e["video"], {})[e["split"]] = (e["start_frame"], e["end_frame"])
    assert by_video == {"laparoscopy": {"train": (0, 30), "val": (30, 40)}, "cine": {"train": (0, 18), "val": (18, 24)},
                        "frames": {"train": (0, 15), "val": (15, 20)}}
    # Resumable: a second call probes nothing again.
    assert prepare_source(src, tmp_path / "run")["prepare"]["probed"] == 0


def test_demo_source_without_usable_video_names_what_was_skipped(tmp_path, capsys):
    from medvid import cli
    from medvid.data.synthetic import write_video

    src = tmp_path / "bad"
    src.mkdir()
    (src / "notes.txt").write_text("hello")
    (src / "broken.mp4").write_bytes(b"\x00" * 100)
    write_video(src / "one_frame.avi", num_frames=1, height=32, width=32, kind="avi")
    assert cli.main(["demo", "--source", str(src), "--out", str(tmp_path / "run")]) == 2
    msg = capsys.readouterr().out
    assert "no usable video" in msg
    for name, why in (("notes.txt", "unknown extension"), ("broken.mp4", ""), ("one_frame.avi", "too short")):
        assert name in msg and why in msg
    assert not (tmp_path / "run" / ".stages" / "data.json").exists()
    assert cli.main(["demo", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    assert "not a folder" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_runs_on_own_videos_and_refuses_another_source(tmp_path):
    src = _own_videos(tmp_path / "mine")
    out = tmp_path / "demo"
    cfg = tiny_demo_config()
    cfg.source = str(src)
    summary = run_demo(out, cfg)
    stages = summary["stages"]
    assert stages["data"]["prepare"]["train"] == 3 and stages["data"]["prepare"]["val"] == 3
    assert len(stages["sample"]["videos"]) == 2 and (out / "report.html").is_file()
    # The same folder resumes; the embedded data (or another folder) into it is refused.
    assert run_demo(out, cfg)["stages"]["train"] == stages["train"]
    from medvid.demo.source import SourceError

    with pytest.raises(SourceError, match="another --out"):
        run_demo(out, tiny_demo_config())
