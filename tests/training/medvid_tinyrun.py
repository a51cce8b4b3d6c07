"""Tiny real data for the training and sampling tests: synthetic clips -> manifest -> a tiny random
CogVideoX VAE -> cached latents (`medvid encode`); and a tiny training config."""

import json

import numpy as np

from medvid.utils.video import write_mp4

TINY_MODEL = {"depth": 2, "hidden_size": 32, "input_size": 8, "in_channels": 4, "d_state": 8, "headdim": 16,
              "patch_size": 2}


def _synthetic_videos(folder, n=6, frames=12, size=32):
    rows = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        vid = np.zeros((frames, size, size, 3), np.uint8)
        for t in range(frames):
            cy, cx = size / 2 + 6 * np.sin(0.4 * t + i), size / 2 + 6 * np.cos(0.3 * t + 2 * i)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)
            vid[t, ..., 0] = (255 * blob).astype(np.uint8)
            vid[t, ..., 1] = (40 * i + 30 * blob).astype(np.uint8)
            vid[t, ..., 2] = 80
        p = folder / f"clip{i}.mp4"
        write_mp4(vid, p, fps=8)
        rows.append({"path": p.name, "id": f"clip{i}", "num_frames": frames, "fps": 8.0, "height": size,
                     "width": size, "duration": frames / 8, "split": "train", "caption": f"blob {i}"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def make_tiny_data(root):
    """{"manifest", "latent_dir", "vae"}: 6 clips of 8 frames at 32 px + 2 images -> latents (4, 4, 8, 8)."""
    from medvid.latents import tiny_vae
    from medvid.latents.encode import encode

    manifest = _synthetic_videos(root)
    vae = tiny_vae(seed=0, num_blocks=3)
    encode(manifest, vae, root / "latents", splits=("train",), num_frames=8, frame_stride=1, resolution=32,
           num_images=2, hflip=False, clips_per_video=1, progress=False)
    return {"manifest": manifest, "latent_dir": root / "latents", "vae": vae, "root": root}


def tiny_config(latent_dir, **over):
    """A TrainConfig for a 2-block medsora-s on the tiny latents; ``over`` are dotted overrides."""
    from medvid.config import apply_overrides, from_dict
    from medvid.training.config import TrainConfig

    base = {
        "model": {"name": "medsora-s", "overrides": dict(TINY_MODEL)},
        "data": {"source": "latents", "latent_dir": str(latent_dir)},
        "optim": {"phases": [{"until_epoch": 1, "lr": 1e-3, "batch_size": 4}, {"lr": 3e-4, "batch_size": 2}],
                  "clip_from_epoch": 1, "ema_warmup": True},
        "epochs": 3, "log_every": 1, "ckpt_every": 2, "keep_last": None, "tensorboard": False, "progress": False,
        "device": "cpu", "seed": 0,
    }
    return from_dict(TrainConfig, apply_overrides(base, over))
