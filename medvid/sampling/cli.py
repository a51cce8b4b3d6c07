"""`medvid sample --checkpoint DIR --num N --out DIR [--seed S --sampler ddim|ddpm|dpm++ --steps K --cfg W]`."""

from __future__ import annotations

import argparse
import sys

from medvid.diffusion.samplers import SAMPLERS
from medvid.utils.sharding import add_shard_arguments


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a run folder (its latest checkpoint) or a step-* folder")
    parser.add_argument("--num", type=int, required=True, help="number of videos")
    parser.add_argument("--out", required=True, help="output folder (mp4, gif, npz per video, contact_sheet.png)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's sample.steps, 250)")
    parser.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    parser.add_argument("--batch-size", type=int, default=4, help="videos generated at once (bounds memory)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--caption", default=None, help="text-conditioned checkpoints: the prompt")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--class-id", type=int, default=None, help="class-conditional checkpoints: the class")
    parser.add_argument("--vae", default=None, help="override the VAE recorded in the checkpoint")
    parser.add_argument("--fps", type=float, default=None,
                        help="unset: the run's sample.fps if set, else its clips' rate (the videos' fps / frame stride), else 8")
    parser.add_argument("--frames", type=int, default=None, help="1: still images (PNG) instead of videos")
    parser.add_argument("--clip-denoised", default="auto",
                        help="clamp the sampler's x_0 estimates: auto (the largest |latent| seen in training, "
                             "recorded in the checkpoint), none, or a number")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="the network's precision: auto = bf16 autocast on CUDA, fp32 on the CPU")
    add_shard_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from medvid.sampling.generate import sample_videos

    try:
        paths = sample_videos(args.checkpoint, args.num, args.out, seed=args.seed, sampler=args.sampler,
                              steps=args.steps, cfg_scale=args.cfg, eta=args.eta, batch_size=args.batch_size,
                              use_ema=not args.no_ema, device=args.device, caption=args.caption,
                              negative_prompt=args.negative_prompt, class_id=args.class_id, vae=args.vae, fps=args.fps,
                              frames=args.frames, clip_denoised=args.clip_denoised, precision=args.precision,
                              shard=args.shard, merge=args.merge)
    except ValueError as e:
        print(f"medvid sample: {e}", file=sys.stderr)
        return 2
    print(f"{len(paths)} {'image' if args.frames == 1 else 'video'}(s) in {args.out}")
    return 0
