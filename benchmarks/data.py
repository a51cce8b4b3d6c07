"""Data-loading benchmark: clips/s from videos vs cached latents, and VAE encoding vs latent reads.

    python benchmarks/data.py            # default run: a few minutes on 2 CPU cores
    python benchmarks/data.py --quick    # smoke run (seconds; no full-size VAE, tiny model step)

Measures, at the MedSora protocol (16 frames every 3rd frame + flow frame, 128x128, 8 images):

1. clips/s delivered by ``ClipDataset`` (decode + resize) with 0, 1, 2 DataLoader workers, from
   synthetic H.264 videos (240x320, 150 frames) and the embedded 120-frame DICOM echo study;
2. clips/s delivered by ``LatentDataset`` from cached latents of the paper's shape
   (4 video + 8 image latents x 16 channels x 16 x 16) with 0, 1, 2 workers;
3. the cost of encoding one clip on the fly with a full-size CogVideoX VAE (CogVideoX-2b
   architecture, random weights: same FLOPs as the pretrained one) vs reading its cached latents;
4. one medsora-s training step (forward + backward + AdamW, batch 2) to express data loading
   from cached latents as a share of a step (target: under 5%).

Ratios are against the baseline in the same run (loading from videos with 0 workers). Rows with
workers "getitem" time the dataset alone (no DataLoader, no collate).
Results: benchmarks/results/data.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medvid.data import ClipDataset, LatentDataset, prepare  # noqa: E402
from medvid.data.synthetic import write_video  # noqa: E402
from medvid.latents.encode import encode  # noqa: E402
from medvid.latents.vae import VideoVAE, latent_frames  # noqa: E402


class ShapeOnlyVAE(torch.nn.Module):
    """Pools pixels to CogVideoX latent shapes (16 channels, 8x space, causal 4x time): gives a latent
    cache of the real size without paying for a real VAE."""

    config = {"scaling_factor": 1.15258426, "latent_channels": 16, "temporal_compression_ratio": 4,
              "block_out_channels": [1, 1, 1, 1]}

    def encode(self, x):  # (B, 3, T, H, W) -> (B, 16, f, H/8, W/8)
        f = latent_frames(x.shape[2])
        idx = torch.linspace(0, x.shape[2] - 1, f).round().long()
        z = F.avg_pool3d(x[:, :, idx], (1, 8, 8))
        return z.repeat(1, 6, 1, 1, 1)[:, :16]

    def decode(self, z):
        raise NotImplementedError


def time_loader(ds, workers: int, batch_size: int, max_items: int) -> float:
    """Items per second after the first batch (worker start-up excluded)."""
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, shuffle=False,
                        persistent_workers=workers > 0)
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    while n < max_items:
        for batch in it:
            n += len(batch["clip_id"])
            if n >= max_items:
                break
        it = iter(loader)  # next epoch, same workers
    dt = time.perf_counter() - t0
    return n / dt if dt > 0 else float("inf")


def medsora_step_seconds(quick: bool, frames: int, reps: int = 2) -> tuple[float, str]:
    try:
        from medvid.models import create_model
    except ImportError as e:  # pragma: no cover
        return float("nan"), f"unavailable ({e})"
    name = "medsora-s"
    model = create_model(name, depth=1, hidden_size=64) if quick else create_model(name)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    c = model.in_channels
    x = torch.randn(2, frames, c, 16, 16)
    t = torch.randint(0, 1000, (2,))
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        out = model(x, t, num_images=8)
        loss = out.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return min(times[1:]), name + (" (tiny: depth 1, hidden 64)" if quick else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small inputs, no full-size VAE")
    ap.add_argument("--clips", type=int, default=12, help="clips timed per loader setting")
    ap.add_argument("--vae", default=None, help="local CogVideoX VAE folder to time instead of a random full-size one")
    ap.add_argument("--vae-images", type=int, default=1,
                    help="images encoded with the full-size VAE (cost per image is extrapolated to 8)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "data.json"))
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    res = 64 if args.quick else 128
    n_clips = 4 if args.quick else args.clips
    work = Path(tempfile.mkdtemp(prefix="medvid-bench-data-"))
    results: dict = {"resolution": res, "protocol": "16 frames, stride 3, +1 flow frame, 8 images", "rows": []}
    try:
        src = work / "src"
        src.mkdir()
        nvid = 4 if args.quick else 6
        for i in range(nvid):
            write_video(src / f"v{i}.mp4", num_frames=150, height=240, width=320, gop=30, color=(30 * i, 60, 90))
        try:
            from pydicom.data import get_testdata_file

            shutil.copy(get_testdata_file("color3d_jpeg_baseline.dcm"), src / "echo120.dcm")
        except Exception:  # pydicom-data absent: videos only
            pass
        prepare(src, work / "prep", val_fraction=0.0, progress=False)
        clips = ClipDataset(work / "prep", resolution=res, num_images=8, clips_per_video=4)

        # Cached latents of the paper's shape, written through the real `encode` path.
        encode(work / "prep", VideoVAE(ShapeOnlyVAE()), work / "lat", resolution=res, clips_per_video=4,
               shard_size=16, progress=False)
        lat = LatentDataset(work / "lat")
        shape = tuple(lat[0]["latents"].shape)
        results["latent_shape"] = list(shape)

        rows = results["rows"]
        for w in (0, 1, 2):
            rows.append({"source": "videos", "workers": w, "clips_per_s": time_loader(clips, w, 2, n_clips)})
        for w in (0, 1, 2):
            rows.append({"source": "cached latents", "workers": w, "clips_per_s": time_loader(lat, w, 2, 400)})
        # Dataset alone (no DataLoader, no collate): what __getitem__ costs.
        for name, ds_, n in (("videos", clips, n_clips), ("cached latents", lat, 400)):
            ds_[0]
            t0 = time.perf_counter()
            for i in range(n):
                ds_[i % len(ds_)]
            rows.append({"source": name, "workers": "getitem", "clips_per_s": n / (time.perf_counter() - t0)})
        base = rows[0]["clips_per_s"]
        for r in rows:
            r["vs_videos_0_workers"] = r["clips_per_s"] / base

        # On-the-fly VAE encoding vs reading cached latents, per clip.
        read_s = 1.0 / max(r["clips_per_s"] for r in rows if r["source"] == "cached latents" and r["workers"] == 0)
        if not args.quick:
            from medvid.latents import load_vae

            if args.vae:
                vae, vname = load_vae(args.vae), args.vae
            else:
                from diffusers import AutoencoderKLCogVideoX

                vae, vname = VideoVAE(AutoencoderKLCogVideoX().eval()), "CogVideoX-2b architecture (random weights)"
            item = clips[0]
            with torch.no_grad():
                t0 = time.perf_counter()
                vae.encode(item["video"][None, :16])
                t_video = time.perf_counter() - t0
                k = max(1, min(8, args.vae_images))
                t0 = time.perf_counter()
                vae.encode_images(item["images"][None, :k])
                t_images = (time.perf_counter() - t0) * 8 / k
            results["vae"] = {
                "name": vname, "encode_video_s": t_video, "encode_8_images_s": t_images,
                "images_timed": k, "encode_clip_s": t_video + t_images, "read_cached_clip_s": read_s,
                "encode_vs_read": (t_video + t_images) / read_s,
            }

        step_s, mname = medsora_step_seconds(args.quick, frames=shape[0])
        per_step_load = 2 * read_s  # batch 2, 0 workers: the worst case, no overlap with compute
        results["train_step"] = {
            "model": mname, "batch": 2, "latent_frames": shape[0], "step_s": step_s,
            "load_batch_s_0_workers": per_step_load, "load_share_of_step": per_step_load / step_s,
            "target_share": 0.05,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nData loading at {res}x{res} (latents {results['latent_shape']})")
    print(f"{'source':<16}{'workers':>8}{'clips/s':>10}{'x videos/0w':>13}")
    for r in results["rows"]:
        print(f"{r['source']:<16}{str(r['workers']):>8}{r['clips_per_s']:>10.2f}{r['vs_videos_0_workers']:>13.1f}")
    if "vae" in results:
        v = results["vae"]
        print(f"\nOn-the-fly encoding, {v['name']}: video {v['encode_video_s']:.2f} s + 8 images "
              f"{v['encode_8_images_s']:.2f} s (timed {v['images_timed']}) = {v['encode_clip_s']:.2f} s/clip; "
              f"cached read {v['read_cached_clip_s'] * 1e3:.2f} ms/clip -> {v['encode_vs_read']:.0f}x")
    s = results["train_step"]
    print(f"\n{s['model']} training step (batch 2, {s['latent_frames']} latent frames): {s['step_s']:.2f} s; "
          f"loading a batch of cached latents: {s['load_batch_s_0_workers'] * 1e3:.2f} ms "
          f"= {100 * s['load_share_of_step']:.2f}% of a step (target < 5%)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
