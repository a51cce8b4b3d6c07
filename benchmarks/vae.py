"""Frequency-compensated VAE: reconstruction PSNR / SSIM on held-out clips after equal fine-tuning.

Data: the 120-frame echocardiogram of pydicom-data (color3d_jpeg_baseline.dcm), split in time:
frames 0-89 train, 90-119 held out (or the 30-frame embedded echo, 0-21 / 22-29, without pydicom-data).
1. A tiny CogVideoX VAE (4 blocks of 8 channels, 4 latent channels) is trained from scratch for
   --pretrain steps (L1 + 0.1 FFL, all weights): the "small base VAE".
2. From that base, the same number of fine-tuning steps (--steps), same loss, lr, data order:
     compensated : base frozen, compensation blocks trained (MedSora section 3.3),
     base-ft     : plain fine-tuning of the whole base (no compensation), for reference.
3. PSNR / SSIM of 9-frame reconstructions on held-out clips: base vs each, as ratios/deltas.

    python benchmarks/vae.py [--pretrain 150 --steps 60 --resolution 32]
Writes benchmarks/results/vae.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_split_videos(root: Path) -> tuple[Path, str]:
    import pydicom
    import pydicom.data

    from medvid.utils.video import write_mp4

    try:
        path, name = pydicom.data.get_testdata_file("color3d_jpeg_baseline.dcm"), "color3d_jpeg_baseline.dcm (120 frames)"
    except Exception:
        path, name = pydicom.data.get_testdata_file("examples_ybr_color.dcm"), "examples_ybr_color.dcm (30 frames)"
    frames = np.asarray(pydicom.dcmread(path).pixel_array)  # (T, H, W, 3) RGB already
    # store at 96 px high: decoding 480x640 frames every step would dominate the run
    import torch.nn.functional as F

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(96, 96 * x.shape[-1] // x.shape[-2]), mode="bilinear", antialias=True)
    frames = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    cut = int(len(frames) * 0.75)
    rows = []
    for split, part in (("train", frames[:cut]), ("val", frames[cut:])):
        write_mp4(part, root / f"echo_{split}.mp4", fps=30, crf=12)
        h, w = part.shape[1:3]
        rows.append({"path": f"echo_{split}.mp4", "id": f"echo_{split}", "num_frames": len(part), "fps": 30.0,
                     "height": h, "width": w, "duration": len(part) / 30, "split": split})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "manifest.jsonl", name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain", type=int, default=150)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-clips", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from medvid.latents.train_vae import train_vae
    from medvid.latents.vae_eval import evaluate_vae

    common = dict(batch_size=1, lr=args.lr, num_frames=9, frame_stride=2, resolution=args.resolution,
                  num_images=0, checkpoint_every=10**9, progress=False, log_every=10)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest, data_name = write_split_videos(work)
        t0 = time.perf_counter()
        pre = train_vae(manifest, work / "pre", vae="tiny:4", steps=args.pretrain, trainable="base", **common)
        t_pre = time.perf_counter() - t0
        base_folder = pre["vae_folder"]
        runs = {}
        for name, trainable in (("compensated", "compensation"), ("base-ft", "base")):
            t0 = time.perf_counter()
            r = train_vae(manifest, work / name, vae=base_folder, steps=args.steps, trainable=trainable, seed=1, **common)
            ev = evaluate_vae(manifest, r["vae_folder"], work / f"eval-{name}", base=base_folder, split="val",
                              num_clips=args.eval_clips, num_frames=9, frame_stride=2, resolution=args.resolution,
                              progress=False)
            runs[name] = {"train_s": time.perf_counter() - t0, "s_per_step": r["seconds_per_step"],
                          "trainable_parameters": r["trainable_parameters"], "final_loss": r["history"][-1]["loss"],
                          "first_loss": r["history"][0]["loss"], "mean": ev["mean"], "delta": ev["delta"]}
        out_png = Path(__file__).parent / "results" / "vae_side_by_side.png"
        out_png.parent.mkdir(parents=True, exist_ok=True)
        Path(work / "eval-compensated" / "side_by_side.png").replace(out_png)
    base_m = runs["compensated"]["mean"]["base"]
    print(f"\nheld-out reconstruction, {data_name}, {args.resolution}px, 9-frame clips, {args.eval_clips} clips; "
          f"base pretrained {args.pretrain} steps, then {args.steps} fine-tuning steps each")
    print(f"{'model':<22}{'PSNR dB':>9}{'SSIM':>8}{'dPSNR':>8}{'dSSIM':>8}{'params':>9}{'s/step':>8}")
    print(f"{'base (pretrained)':<22}{base_m['psnr']:>9.2f}{base_m['ssim']:>8.4f}{'':>8}{'':>8}{'':>9}{'':>8}")
    for name, r in runs.items():
        m = r["mean"]["compensated"]  # evaluate_vae's name for the evaluated folder
        print(f"{name:<22}{m['psnr']:>9.2f}{m['ssim']:>8.4f}{r['delta']['psnr']:>+8.2f}{r['delta']['ssim']:>+8.4f}"
              f"{r['trainable_parameters']:>9d}{r['s_per_step']:>8.2f}")
    result = {"data": data_name, "resolution": args.resolution, "pretrain_steps": args.pretrain,
              "finetune_steps": args.steps, "lr": args.lr, "pretrain_s": t_pre, "base": base_m, "runs": runs,
              "side_by_side": str(out_png), "note": "LPIPS skipped (no lpips/torchvision/backbone weights offline)"}
    out = Path(__file__).parent / "results" / "vae.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
