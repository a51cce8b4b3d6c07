"""``medvid evaluate --real DIR --fake DIR --metrics LIST --out DIR [--i3d PATH ...]``.

Writes ``metrics.json`` and a self-contained ``report.html``. Metrics whose weights are not given
are reported as skipped with the file they need; ``--metrics offline`` runs only what needs no
downloaded weights (EfficientNet-Lite0 distances, dynamic degree with DIS flow, blend motion
smoothness).
"""

from __future__ import annotations

import argparse
import json
import sys

from medvid.metrics.evaluate import ALL_METRICS, DEFAULT_METRICS, evaluate

__all__ = ["configure", "main", "evaluate"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--real", default=None,
                   help="a `medvid prepare` folder (its --real-split is cut into clips at the samples' frames, stride and "
                        "size, and reference rows are added), or a folder of real videos (files, frame folders, .npz); "
                        "without it only per-video scores run")
    p.add_argument("--real-split", default="val", help="with a prepared --real: the split to compare with (held-out)")
    p.add_argument("--frame-stride", type=int, default=None,
                   help="with a prepared --real: stride of the real clips (unset: the samples' samples.json)")
    p.add_argument("--resolution", type=int, default=None,
                   help="with a prepared --real: size of the real clips (unset: the samples' samples.json)")
    p.add_argument("--allow-few", action="store_true",
                   help="compute Fréchet distances from fewer samples than feature dimensions (with a warning)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="compare real and generated clips of different frame size or frame rate")
    p.add_argument("--no-references", action="store_true",
                   help="with a prepared --real: skip the reference rows (training clips, noisy copy, VAE round trip)")
    p.add_argument("--fake", required=True, help="folder of generated videos (e.g. the output of medvid sample)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated from {', '.join(ALL_METRICS)}; or 'all' / 'offline' / 'medgen' "
                        "(subject/background consistency, motion smoothness, imaging quality)")
    p.add_argument("--out", required=True, help="output folder for metrics.json and report.html")
    p.add_argument("--i3d", default=None, help="i3d_torchscript.pt (FVD)")
    p.add_argument("--inception", default=None, help="inception-2015-12-05.pt (FID, IS)")
    p.add_argument("--videomae", default=None, help="VideoMAE-v2 SSv2 model folder or TorchScript (CD-FVD)")
    p.add_argument("--clip", default=None, help="CLIP model folder or TorchScript (FC, background consistency)")
    p.add_argument("--dino", default=None, help="DINO ViT-B/16 model folder or TorchScript (subject consistency)")
    p.add_argument("--raft", default=None, help="RAFT weights for dynamic degree (default: DIS flow, named as such)")
    p.add_argument("--interpolator", default=None, help="TorchScript frame interpolator (AMT-S) for motion smoothness")
    p.add_argument("--musiq", default=None,
                   help="MUSIQ weights for imaging quality (pyiqa's musiq_spaq_ckpt .pth, or TorchScript)")
    p.add_argument("--num-clips", type=int, default=2048, help="clips per side (StyleGAN-V: 2048)")
    p.add_argument("--clip-length", type=int, default=None,
                   help="frames per clip; unset: the frames the samples were trained with (samples.json), else 16")
    p.add_argument("--max-fid-frames", type=int, default=50000, help="generated frames for FID/IS (StyleGAN-V: 50000)")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples for the intervals (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default="default",
                   help="feature cache folder ('default': OUT/feature_cache); 'none' disables caching")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto",
                   help="where FVD/FID/IS/CD-FVD feature networks run: auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--effnet-resolution", type=int, default=224)
    p.add_argument("--fps", type=float, default=None, help="frame rate for dynamic degree (default: from the files, else 8)")
    p.add_argument("--no-report", action="store_true", help="write metrics.json only")


def main(args: argparse.Namespace) -> int:
    try:
        res = _run(args)
    except ValueError as e:
        print(f"medvid evaluate: {e}", file=sys.stderr)
        return 2
    for name, r in res["metrics"].items():
        ci = r.get("ci")
        print(f"{name:24s} {r['value']:.4f}" + (f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    for name, why in res["skipped"].items():
        print(f"{name:24s} skipped: {why}")
    for row, ref in res.get("references", {}).items():
        vals = ", ".join(f"{m}={r['value']:.4f}" for m, r in ref["metrics"].items())
        print(f"reference: {row}: {vals}")
    print(json.dumps({"metrics_json": f"{args.out}/metrics.json"}))
    return 0


def _run(args: argparse.Namespace) -> dict:
    return evaluate(
        args.real, args.fake, args.metrics, args.out, i3d=args.i3d, inception=args.inception, videomae=args.videomae,
        clip=args.clip, dino=args.dino, raft=args.raft, interpolator=args.interpolator, musiq=args.musiq,
        num_clips=args.num_clips,
        clip_length=args.clip_length, max_fid_frames=args.max_fid_frames, bootstrap=args.bootstrap, seed=args.seed,
        cache_dir=None if args.cache_dir.lower() == "none" else args.cache_dir, batch_size=args.batch_size,
        effnet_resolution=args.effnet_resolution, fps=args.fps, report=not args.no_report, device=args.device,
        real_split=args.real_split, frame_stride=args.frame_stride, resolution=args.resolution,
        allow_few=args.allow_few, allow_mismatch=args.allow_mismatch, references=not args.no_references,
    )
