
import numpy as np
import pytest
import torch

from medvid.utils.video import save_npz


def square_video(color, t=16, size=48, step=2) -> np.ndarray:
    """A saturated square moving right on black: easy to find in a screenshot."""
    v = np.zeros((t, size, size, 3), np.uint8)
    for k in range(t):
        x = (4 + step * k) % (size - 16)
        v[k, 16:32, x : x + 16] = color
    return v


@pytest.fixture
def run_and_folders(tmp_path):
    """A training run (checkpoint + TensorBoard scalars), real videos, and a `medvid sample` folder."""
    from torch.utils.tensorboard import SummaryWriter

    from medvid.utils.checkpoint import save_checkpoint

    run = tmp_path / "run"
    save_checkpoint(run, 200, {"model": {"w": torch.zeros(2)}}, state={"step": 200},
                    config={"model": {"name": "medsora-s"}, "optim": {"lr": 0.0001}})
    w = SummaryWriter(str(run / "tb"))
    for s in range(0, 200, 10):
        w.add_scalar("train/loss", 1.0 / (1 + s / 50), s)
    w.close()
    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir(), fake.mkdir()
    for i in range(3):
        save_npz(square_video((255, 0, 0), step=2 + i), real / f"echo_{i}.npz")
        save_npz(square_video((0, 255, 0), step=1 + i), fake / f"video_{i:04d}.npz")
    import json

    (fake / "samples.json").write_text(json.dumps({"checkpoint": str(run), "sampler": "ddim", "steps": 50}))
    (fake / "judge.json").write_text(json.dumps([
        {"video": "video_0000.mp4", "prompt": "apical four-chamber view", "reasons": "valves visible",
         "scores": {"text_alignment": 4, "medical_plausibility": 3, "visual_quality": 5}},
        {"video": "video_0001.mp4", "prompt": "parasternal long axis", "reasons": {"visual_quality": "blurry"},
         "scores": {"text_alignment": 2, "medical_plausibility": 3, "visual_quality": 1}},
    ]))
    return run, real, fake
