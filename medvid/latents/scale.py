"""Latent scale: fit a VAE's ``scaling_factor`` and ``shift_factor`` to the data it will encode.

Diffusion noise schedules assume data of zero mean and unit variance. A VAE trained or fine-tuned
here does not have latents of that scale: a tiny CogVideoX VAE trained from scratch kept the
pretrained ``scaling_factor`` 1.15258 and gave cached latents of std 0.36 and mean 0.19, so the
noise schedule saw the data at about 1/8 of its intended signal-to-noise ratio. Following Stable
Diffusion's recipe (Rombach et al. 2022, Sec. 4.3.2: "rescale the latent by the component-wise
standard deviation" of a batch of training latents) with one global scalar each:

    shift_factor   = mean(z)        over every element of the posterior means z of training clips
    scaling_factor = 1 / std(z)

so ``VideoVAE.encode`` returns ``(z - shift_factor) * scaling_factor`` (mean 0, std 1 on the data)
and ``decode`` undoes it exactly (diffusers' convention for ``shift_factor``).

Both factors are written into the VAE folder's ``config.json`` (the diffusers keys, so
``load_vae`` / ``build_vae`` and diffusers pipelines read them) and, with how they were fitted,
into ``latent_scale.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from medvid.utils.logging import get_logger

log = get_logger("latents")

SCALE_FILE = "latent_scale.json"
# `medvid encode` warns when its cached latents fall outside these (see warn_if_off_scale).
MEAN_TOLERANCE = 0.25
STD_RANGE = (0.5, 2.0)


class RunningMoments:
    """Mean and standard deviation over every element seen, in float64 (global and per channel)."""

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.sumsq = 0.0
        self.ch_sum: torch.Tensor | None = None
        self.ch_sumsq: torch.Tensor | None = None
        self.ch_count = 0

    def update(self, z: torch.Tensor) -> None:
        """``z``: latents ``(..., C, h, w)`` (channel axis third from last)."""
        z = z.detach().double().cpu()
        if z.numel() == 0:
            return
        self.count += z.numel()
        self.sum += float(z.sum())
        self.sumsq += float((z * z).sum())
        per = z.movedim(-3, 0).flatten(1)  # (C, everything else)
        if self.ch_sum is None:
            self.ch_sum, self.ch_sumsq = per.sum(1), (per * per).sum(1)
        else:
            self.ch_sum += per.sum(1)
            self.ch_sumsq += (per * per).sum(1)
        self.ch_count += per.shape[1]

    @property
    def mean(self) -> float:
        return self.sum / max(self.count, 1)

    @property
    def std(self) -> float:
        return math.sqrt(max(self.sumsq / max(self.count, 1) - self.mean**2, 0.0))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mean": self.mean, "std": self.std, "count": self.count}
        if self.ch_sum is not None:
            m = self.ch_sum / self.ch_count
            out["channel_mean"] = [round(float(v), 6) for v in m]
            out["channel_std"] = [round(float(v), 6) for v in (self.ch_sumsq / self.ch_count - m * m).clamp_min(0).sqrt()]
        return out


def off_scale(mean: float, std: float) -> bool:
    """True when latents of this mean/std are far from the (0, 1) the noise schedule assumes."""
    return abs(mean) > MEAN_TOLERANCE or not STD_RANGE[0] <= std <= STD_RANGE[1]


def scale_warning(mean: float, std: float, vae_hint: str = "VAE_DIR") -> str | None:
    """A warning naming the fix when latents are off scale; ``None`` when they are fine."""
    if not off_scale(mean, std):
        return None
    return (
        f"the cached latents have mean {mean:.3f} and std {std:.3f}, far from the (0, 1) the diffusion "
        f"noise schedule assumes (|mean| <= {MEAN_TOLERANCE}, std in [{STD_RANGE[0]}, {STD_RANGE[1]}]): the "
        f"model would see the data at the wrong signal-to-noise ratio. Fit the VAE's latent scale with "
        f"`medvid fit-latent-scale {vae_hint} --data MANIFEST`, then encode again into a new folder"
    )


def collect_raw_latents(
    vae: Any,
    source: Any,
    *,
    num_clips: int = 64,
    num_frames: int = 16,
    frame_stride: int = 3,
    resolution: int = 128,
    num_images: int = 0,
    split: str = "train",
    seed: int = 0,
    batch_size: int = 2,
    progress: bool = False,
) -> RunningMoments:
    """Moments of the *unscaled* posterior means of ``num_clips`` training clips.

    Clips are drawn as training draws them (``ClipDataset``, flips included), cycling through
    epochs so a video contributes several windows when ``num_clips`` exceeds the number of videos.
    ``vae``: a ``VideoVAE``; its current scaling and shift are undone, so the result does not depend
    on them.
    """
    from medvid.data.datasets import ClipDataset

    if num_clips < 1:
        raise ValueError(f"num_clips={num_clips}: need at least one clip to fit the latent scale")
    ds = ClipDataset(source, split=split, num_frames=num_frames, frame_stride=frame_stride, resolution=resolution,
                     extra_flow_frame=False, num_images=num_images, seed=seed)
    moments = RunningMoments()
    was_training = vae.training
    vae.eval()
    try:
        from tqdm import tqdm

        for lo in tqdm(range(0, num_clips, batch_size), desc="fit latent scale", unit="batch", disable=not progress):
            items = []
            for k in range(lo, min(lo + batch_size, num_clips)):
                ds.set_epoch(k // len(ds))
                items.append(ds[k % len(ds)])
            video = torch.stack([it["video"] for it in items])  # (B, T, 3, R, R)
            with torch.no_grad():
                z = vae.encode(video)  # (B, F, C, h, w), posterior mean
                moments.update(z / vae.scaling_factor + vae.shift_factor)
                if num_images:
                    zi = vae.encode_images(torch.stack([it["images"] for it in items]))  # (B, N, C, h, w)
                    moments.update(zi / vae.scaling_factor + vae.shift_factor)
    finally:
        ds.close()
        vae.train(was_training)
    return moments


def factors_from(moments: RunningMoments) -> tuple[float, float]:
    """``(scaling_factor, shift_factor)`` that map these raw latents to mean 0, std 1."""
    if moments.count == 0 or not moments.std > 0 or not math.isfinite(moments.std):
        raise ValueError(f"cannot fit a latent scale: latents have std {moments.std} over {moments.count} values")
    return 1.0 / moments.std, moments.mean


def write_latent_scale(folder: str | os.PathLike, scaling_factor: float, shift_factor: float,
                       record: dict[str, Any]) -> Path:
    """Set the factors in ``folder/config.json`` (diffusers keys) and write ``latent_scale.json``."""
    from medvid.data.manifest import write_json

    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json; give a VAE folder written by `medvid train-vae` or diffusers")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    previous = {"scaling_factor": cfg.get("scaling_factor"), "shift_factor": cfg.get("shift_factor")}
    cfg["scaling_factor"], cfg["shift_factor"] = float(scaling_factor), float(shift_factor)
    write_json(cfg_path, cfg)
    doc = {"scaling_factor": float(scaling_factor), "shift_factor": float(shift_factor),
           "convention": "latents = (posterior_mean - shift_factor) * scaling_factor",
           "previous": previous, **record}
    write_json(folder / SCALE_FILE, doc)
    return folder / SCALE_FILE


def fit_latent_scale(
    vae_dir: str | os.PathLike,
    data: Any,
    *,
    num_clips: int = 64,
    num_frames: int = 16,
    frame_stride: int = 3,
    resolution: int = 128,
    num_images: int = 0,
    seed: int = 0,
    batch_size: int = 2,
    device: str = "cpu",
    progress: bool = True,
    vae: Any = None,
) -> dict[str, Any]:
    """Fit and store the latent scale of the VAE folder ``vae_dir`` on the train split of ``data``.

    ``vae``: the same VAE already in memory (``medvid train-vae`` passes its model) to skip loading.
    Returns what was written to ``latent_scale.json``.
    """
    from medvid.latents.vae import VideoVAE, load_vae

    folder = Path(vae_dir)
    if (folder / "vae" / "config.json").is_file() and not (folder / "config.json").is_file():
        folder = folder / "vae"
    if vae is None:
        vae = load_vae(folder, device=device)
    elif not isinstance(vae, VideoVAE):
        vae = VideoVAE(vae)
    moments = collect_raw_latents(vae, data, num_clips=num_clips, num_frames=num_frames, frame_stride=frame_stride,
                                  resolution=resolution, num_images=num_images, seed=seed, batch_size=batch_size,
                                  progress=progress)
    scaling, shift = factors_from(moments)
    stats = moments.summary()
    record = {
        "fitted_on": {"data": str(data), "split": "train", "num_clips": num_clips, "num_frames": num_frames,
                      "frame_stride": frame_stride, "resolution": resolution, "num_images": num_images,
                      "seed": seed, "posterior": "mean"},
        "raw_latents": stats,
        "latents_before": {"mean": (stats["mean"] - vae.shift_factor) * vae.scaling_factor,
                           "std": stats["std"] * abs(vae.scaling_factor)},
    }
    write_latent_scale(folder, scaling, shift, record)
    # The in-memory VAE encodes with the new factors from now on, as a reload would.
    vae.scaling_factor, vae.shift_factor = scaling, shift
    if hasattr(vae.vae, "register_to_config"):
        vae.vae.register_to_config(scaling_factor=scaling, shift_factor=shift)
    elif hasattr(getattr(vae.vae, "base", None), "register_to_config"):
        vae.vae.base.register_to_config(scaling_factor=scaling, shift_factor=shift)
    log.info("latent scale of %s: shift %.5f, scaling %.5f (raw latents mean %.4f, std %.4f over %d clips)",
             folder, shift, scaling, stats["mean"], stats["std"], num_clips)
    return json.loads((folder / SCALE_FILE).read_text(encoding="utf-8"))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("vae_dir", metavar="VAE_DIR", help="VAE folder (config.json + safetensors) to fit in place")
    parser.add_argument("--data", required=True, help="manifest.jsonl or a `medvid prepare` folder (train split)")
    parser.add_argument("--num-clips", type=int, default=64, help="training clips to encode (posterior mean)")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--frame-stride", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--num-images", type=int, default=0, help="single frames per clip encoded alone and included")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    try:
        doc = fit_latent_scale(
            args.vae_dir, args.data, num_clips=args.num_clips, num_frames=args.num_frames,
            frame_stride=args.frame_stride, resolution=args.resolution, num_images=args.num_images, seed=args.seed,
            batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"medvid fit-latent-scale: {e}")
        return 2
    before = doc["latents_before"]
    print(f"latents before: mean {before['mean']:.4f}, std {before['std']:.4f}")
    print(f"scaling_factor {doc['scaling_factor']:.6f}, shift_factor {doc['shift_factor']:.6f} written to "
          f"{Path(args.vae_dir)}; latents made with this VAE earlier must be encoded again")
    return 0
