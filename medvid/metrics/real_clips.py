"""Real clips cut the way the generated ones were made, and the reference rows that read a number.

``medvid evaluate --real PREPARED`` (a ``medvid prepare`` folder, with ``--real-split``, ``val`` by
default) cuts its real clips here with ``ClipDataset``: the frames, stride and size of the model's
training clips (recorded in the samples' ``samples.json`` by ``medvid sample``), no flip, windows
spread over each video of the split. Comparing 64-px, 10-fps generated clips with 720p clips at the
camera's frame rate measures the resizing and the frame spacing, not the model.

When the prepared folder also has a training split, the report carries reference rows computed
with the same protocol against the same held-out clips:

* training clips vs held-out: what a perfect copy of the training data scores (a floor);
* training clips + Gaussian noise (sigma 0.3 in [-1, 1]): a trivial baseline (a ceiling);
* the VAE round trip of the held-out clips (when the samples name a VAE): what the latent space
  alone costs, so samples can be no better than this row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medvid.utils.logging import get_logger

log = get_logger("metrics")

NOISE_SIGMA = 0.3


def is_prepared(path: str | Path | None) -> bool:
    """A ``medvid prepare`` folder (or its manifest.jsonl)."""
    if path is None:
        return False
    p = Path(path)
    return (p.is_dir() and (p / "manifest.jsonl").is_file()) or (p.is_file() and p.name.endswith(".jsonl"))


def samples_sidecar(fake_dir: str | Path) -> dict[str, Any]:
    """``samples.json`` written by ``medvid sample`` beside the videos (``{}`` when absent)."""
    f = Path(fake_dir) / "samples.json"
    try:
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def cut_real_clips(
    prepared: str | Path,
    split: str,
    out_dir: str | Path,
    *,
    num_clips: int,
    num_frames: int,
    frame_stride: int,
    resolution: int,
    seed: int = 0,
    noise: float = 0.0,
    fps: float | None = None,
) -> tuple[Path, int]:
    """Write up to ``num_clips`` distinct clips of ``split`` as ``clip_XXX.npz``; -> (folder, count).

    Windows are spread over every video of the split (video by video in turn); a window that repeats
    an earlier one (a short split) is dropped, since duplicates would shrink the covariance.
    The folder is reused when it already holds clips of the same protocol.
    """
    from medvid.data.datasets import ClipDataset
    from medvid.utils.video import save_npz, to_uint8

    out_dir = Path(out_dir)
    protocol = {"prepared": str(Path(prepared).resolve()), "split": split, "num_clips": num_clips,
                "num_frames": num_frames, "frame_stride": frame_stride, "resolution": resolution, "seed": seed,
                "noise": noise, "fps": fps}
    marker = out_dir / "clips.json"
    if marker.is_file():
        old = json.loads(marker.read_text(encoding="utf-8"))
        if old.get("protocol") == protocol:
            return out_dir, int(old["count"])
    kw = dict(split=split, num_frames=num_frames, frame_stride=frame_stride, resolution=resolution,
              extra_flow_frame=False, num_images=0, hflip=False, seed=seed)
    num_videos = len(ClipDataset(str(prepared), **kw).entries)
    per_video = -(-num_clips // num_videos)
    ds = ClipDataset(str(prepared), clips_per_video=per_video, **kw)
    order = [v * per_video + k for k in range(per_video) for v in range(num_videos)]
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("clip_*.npz"):
        old.unlink()
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    for index in order:
        if len(seen) >= num_clips:
            break
        spec = ds.clip_spec(index)
        if spec["clip_id"] in seen:
            continue
        video = ds[index]["video"].numpy()  # (T, 3, R, R) in [-1, 1]
        if noise:
            video = np.clip(video + rng.normal(0, noise, video.shape), -1, 1)
        meta = {"fps": fps} if fps else {}
        save_npz(to_uint8(video), out_dir / f"clip_{len(seen):03d}.npz", **meta)
        seen.add(spec["clip_id"])
    ds.close()
    if len(seen) < num_clips:
        log.warning("%s: split %r gives %d distinct %d-frame clips at stride %d, not the %d asked for",
                    prepared, split, len(seen), num_frames, frame_stride, num_clips)
    marker.write_text(json.dumps({"protocol": protocol, "count": len(seen), "clip_ids": sorted(seen)}, indent=1))
    return out_dir, len(seen)


def vae_round_trip(clips_dir: str | Path, vae: Any, out_dir: str | Path, fps: float | None = None) -> Path:
    """Encode and decode every ``clip_*.npz`` of ``clips_dir`` through ``vae`` (a path/name or loaded VAE)."""
    import torch

    from medvid.training.builders import build_vae
    from medvid.utils.video import save_npz, to_uint8

    model = vae if hasattr(vae, "decode") else build_vae(vae, torch.device("cpu"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(clips_dir).glob("clip_*.npz")):
        target = out_dir / f.name
        if target.is_file():
            continue
        frames = np.load(f)["frames"]  # (T, H, W, 3) uint8
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[None] / 127.5 - 1  # (1, T, 3, H, W)
        with torch.no_grad():
            r = model.decode(model.encode(x))[0].clamp(-1, 1)
        save_npz(to_uint8(r.numpy()), target, **({"fps": fps} if fps else {}))
    return out_dir
