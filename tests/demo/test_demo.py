"""The demo end to end at a minimal budget, on the real echocardiogram that ships with pydicom-data."""

import json

import numpy as np
import pytest

from medvid.demo.pipeline import DemoConfig, run_demo


def tiny_demo_config(**over) -> DemoConfig:
    return DemoConfig(**{**dict(minutes=0.1, resolution=32, clips_per_video=2, vae_channels=8, model_depth=2,
                                model_width=48, batch_size=2, sample_num=2, sample_steps=2, real_clips=2,
                                min_vae_steps=1, min_fc_steps=1, min_train_steps=2, fixed_seconds=0), **over})


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


DEMO_SCRIPT = """
import os, signal, sys
import torch
torch.set_num_threads({threads})  # as in the test process: same float reductions
import medvid.demo.pipeline as pipeline
from medvid.training.trainer import Trainer
sys.path.insert(0, {here!r})
from test_demo import tiny_demo_config

pipeline._steps_for = lambda seconds, per_step, lo, hi: lo  # step counts independent of the clock
kill_at = {kill_at}
if kill_at:
    write = Trainer.write_metrics

    def write_then_die(self, row):
        write(self, row)
        if row["step"] == kill_at:  # mid-training, after the probe's checkpoint (step 4)
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer.write_metrics = write_then_die
pipeline.run_demo({out!r}, tiny_demo_config(min_train_steps=7))
"""


@pytest.mark.slow
def test_demo_killed_mid_training_resumes_to_the_same_result(tmp_path):
    """A real demo process is killed during MedSora training; running the demo again resumes the run
    from its last checkpoint and ends with the same losses and weights as an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import torch

    from medvid.demo.pipeline import train_config
    from medvid.training import train
    from medvid.utils.checkpoint import latest_checkpoint, load_checkpoint

    out = tmp_path / "demo"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}

    def demo(kill_at):
        code = DEMO_SCRIPT.format(threads=torch.get_num_threads(), here=str(Path(__file__).parent), kill_at=kill_at,
                                  out=str(out))
        return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                              timeout=1200)

    p = demo(kill_at=6)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    run = out / "medsora"
    assert latest_checkpoint(run).name == "step-00000004"  # the probe's checkpoint; steps 5-6 are lost
    assert not (out / ".stages" / "train.json").exists()
    p = demo(kill_at=0)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["stages"]["train"]["steps"] == 7 and latest_checkpoint(run).name == "step-00000007"
    # The uninterrupted reference: the same config, 7 steps in one go.
    cfg = tiny_demo_config(min_train_steps=7)
    stages = summary["stages"]
    ref = tmp_path / "ref"
    train(train_config(cfg, stages["encode"]["latent_dir"], stages["flow"]["features_dir"], 7), ref)
    rows = lambda d: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["step"] for r in rows(run)] == list(range(1, 8))
    assert rows(run) == rows(ref)  # same losses, grad norms and lr, bit for bit
    a, _, _ = load_checkpoint(run)
    b, _, _ = load_checkpoint(ref)
    for group in ("model", "ema"):
        for k in a[group]:
            assert torch.equal(a[group][k], b[group][k]), (group, k)


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
