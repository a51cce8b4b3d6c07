"""The `medvid` command line.

The CLI is thin: every subcommand lives in a module that offers ``configure(parser)`` to declare
its flags and ``main(args) -> int`` that calls one typed function. Modules are imported only when
their subcommand runs, so ``medvid --help`` is fast and a missing optional dependency of one
command never breaks another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Order is the order of the pipeline.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("medvid.demo", "run the whole pipeline on the embedded echocardiograms"),
    "prepare": ("medvid.data.prepare", "scan videos and write a manifest + report"),
    "curate": ("medvid.curation.curate", "cut raw footage into clean clips with filters"),
    "caption": ("medvid.vlm.caption", "caption clips with a vision-language model"),
    "train-vae": ("medvid.latents.train_vae", "fine-tune the frequency-compensated video VAE"),
    "vae-eval": ("medvid.latents.vae_eval", "PSNR/SSIM of VAE reconstructions, base vs compensated"),
    "fit-latent-scale": ("medvid.latents.scale", "fit a VAE's latent scaling/shift to training clips (mean 0, std 1)"),
    "encode": ("medvid.latents.encode", "encode clips to cached VAE latents"),
    "flow-features": ("medvid.flow.cache", "cache optical-flow representation features"),
    "train": ("medvid.training.cli", "train a video diffusion model (MedSora / STDiT)"),
    "sample": ("medvid.sampling.cli", "sample videos from a checkpoint"),
    "wan-cache": ("medvid.t2v.wan_cache", "precompute Wan VAE latents and UMT5 embeddings for train-wan"),
    "train-wan": ("medvid.t2v.wan_train", "LoRA / full fine-tuning of Wan2.1 on captioned clips"),
    "export-lora": ("medvid.t2v.wan_lora", "rewrite a Wan LoRA in the original Wan / ComfyUI or diffusers layout"),
    "generate": ("medvid.t2v.generate", "text-to-video generation (MedSora or Wan)"),
    "evaluate": ("medvid.metrics.cli", "FVD, CD-FVD, FID, IS, consistency... and report.html"),
    "judge": ("medvid.vlm.judge", "score generated videos with a vision-language model"),
    "serve": ("medvid.serve.cli", "local web app: prompt in, teaching video out (queue + gallery)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medvid", description=__doc__.splitlines()[0])
    from medvid import __version__

    parser.add_argument("--version", action="version", version=f"medvid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == only:
            mod = importlib.import_module(module)
            mod.configure(p)
            p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args._main(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
