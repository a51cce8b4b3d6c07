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
