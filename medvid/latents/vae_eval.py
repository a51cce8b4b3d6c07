"""``medvid vae-eval``: reconstruction quality of the base VAE vs the frequency-compensated VAE.

On held-out clips (the ``val`` split by default) both VAEs reconstruct the same ``num_frames``
frames (encode -> posterior mean -> decode); PSNR and SSIM per frame come from
``medvid.metrics.reconstruction`` (Wang et al. SSIM, tested against OpenCV there), LPIPS where its
weights exist. Written: ``OUT/vae_eval.json`` (per-clip and mean values, deltas) and
``OUT/side_by_side.png`` (rows: original, base, compensated for the first clips).

The base defaults to the compensated folder's own base weights (compensation switched off), so
the comparison isolates the compensation modules. Resolution, frames and stride default to what
the VAE was trained with (``medvid_training.json`` in its folder, see ``medvid.utils.settings``);
an explicit resolution or stride that disagrees is refused. ``num_clips`` clips are cut, spread
over the split's videos (several windows per video when there are fewer videos than clips).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from medvid.data.manifest import write_json
from medvid.utils.logging import get_logger

log = get_logger("vae_eval")


def _base_only(folder: Path):
    """The diffusers base VAE stored in a compensated folder, without its compensation."""
    import diffusers

    from medvid.latents.vae import VideoVAE

    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cls = getattr(diffusers, cfg.get("_class_name", "AutoencoderKLCogVideoX"))
    return VideoVAE(cls.from_pretrained(str(folder)), source=f"{folder} (base only)").eval()


def evaluate_vae(
    source: str | os.PathLike,
    vae: str | os.PathLike,
    out: str | os.PathLike,
    *,
    base: str | os.PathLike | None = None,
    split: str = "val",
    num_clips: int = 8,
    num_frames: int | None = None,
    frame_stride: int | None = None,
    resolution: int | None = None,
    lpips_weights: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """PSNR / SSIM (and LPIPS where available) of ``base`` vs ``vae`` on ``num_clips`` clips."""
    from tqdm import tqdm

    from medvid.data.datasets import ClipDataset
    from medvid.latents.vae import load_vae
    from medvid.losses import PerceptualLoss
    from medvid.metrics.reconstruction import psnr, ssim
    from medvid.utils.video import contact_sheet

    from medvid.latents.train_vae import check_round_trip_frames
    from medvid.utils.settings import pick, vae_settings

    rec = vae_settings(vae)
    where = f"the VAE {vae}"
    resolution = pick("--resolution", resolution, rec.get("resolution"), 128, where)
    frame_stride = pick("--frame-stride", frame_stride, rec.get("frame_stride"), 3, where)
    num_frames = num_frames or rec.get("num_frames") or 17  # a causal VAE takes other lengths: not refused
    check_round_trip_frames(num_frames)
    if num_clips < 1:
        raise ValueError(f"--num-clips {num_clips}: ask for at least one clip")
    vae_path = Path(vae)
    comp = load_vae(vae_path)
    base_vae = load_vae(base) if base is not None else _base_only(vae_path)
    perceptual = PerceptualLoss(lpips_weights)
    kw = dict(split=split, num_frames=num_frames, frame_stride=frame_stride, resolution=resolution,
              extra_flow_frame=False, num_images=0, hflip=False, seed=seed)
    num_videos = len(ClipDataset(str(source), **kw).entries)
    per_video = -(-num_clips // num_videos)  # ceil: windows spread over each video's length
    ds = ClipDataset(str(source), clips_per_video=per_video, **kw)
    # Video by video in turn (window 0 of every video, then window 1, ...), so the first clips cover all videos.
    order = [v * per_video + k for k in range(per_video) for v in range(num_videos)][:num_clips]
    n = len(order)
    per_clip, sheets = [], []
    for i, index in enumerate(tqdm(order, desc="vae-eval", unit="clip", disable=not progress)):
        item = ds[index]
        x = item["video"][None]  # (1, T, 3, H, W) in [-1, 1]
        row: dict[str, Any] = {"clip_id": item["clip_id"]}
        recons = []
        for name, model in (("base", base_vae), ("compensated", comp)):
            with torch.no_grad():
                r = model.decode(model.encode(x))  # (1, T, 3, H, W), clamped to [-1, 1]
            a, b = (r[0] + 1) / 2, (x[0] + 1) / 2  # [0, 1]
            row[name] = {"psnr": float(psnr(a, b).mean()), "ssim": float(ssim(a, b).mean())}
            if perceptual.available:
                row[name]["lpips"] = float(perceptual(r, x))
            recons.append(r[0])
        per_clip.append(row)
        if i < 3:
            sheets += [x[0], recons[0], recons[1]]
    distinct = len({c["clip_id"] for c in per_clip})
    if distinct < n:
        log.warning("%s: only %d distinct clips of %d asked for in split %r (the videos are short); the rest repeat",
                    source, distinct, n, split)
    metrics = ("psnr", "ssim") + (("lpips",) if perceptual.available else ())
    mean = {name: {m: sum(c[name][m] for c in per_clip) / n for m in metrics} for name in ("base", "compensated")}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = contact_sheet(sheets, out / "side_by_side.png", max_frames=6)
    result = {
        "vae": str(vae_path), "base": str(base) if base else f"{vae_path} (base only)", "split": split,
        "clips": n, "distinct_clips": distinct, "num_frames": num_frames, "frame_stride": frame_stride,
        "resolution": resolution, "mean": mean,
        "delta": {m: mean["compensated"][m] - mean["base"][m] for m in metrics},
        "lpips": "on" if perceptual.available else perceptual.note, "per_clip": per_clip,
        "psnr_ssim_source": "medvid.metrics.reconstruction", "side_by_side": str(png),
        "side_by_side_rows": "per clip: original, base, compensated",
    }
    write_json(out / "vae_eval.json", result)
    ds.close()
    return result


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="manifest.jsonl or a `medvid prepare` folder")
    parser.add_argument("--vae", required=True, help="compensated VAE folder (from `medvid train-vae`)")
    parser.add_argument("--base", default=None, help="base VAE folder (default: the compensated folder's own base)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--num-clips", type=int, default=8, help="clips cut from the split (several per video if needed)")
    parser.add_argument("--num-frames", type=int, default=None,
                        help="frames per clip (1, 1 + 8k or 8k); unset: what the VAE was trained with, else 17")
    parser.add_argument("--frame-stride", type=int, default=None, help="unset: what the VAE was trained with, else 3")
    parser.add_argument("--resolution", type=int, default=None, help="unset: what the VAE was trained with, else 128")
    parser.add_argument("--lpips-weights", default=None)
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    try:
        r = evaluate_vae(args.source, args.vae, args.out, base=args.base, split=args.split, num_clips=args.num_clips,
                         num_frames=args.num_frames, frame_stride=args.frame_stride, resolution=args.resolution,
                         lpips_weights=args.lpips_weights, progress=not args.no_progress)
    except ValueError as e:
        print(f"medvid vae-eval: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: r[k] for k in ("clips", "mean", "delta", "lpips", "side_by_side")}, indent=1))
    return 0
