"""The `medvid` command line.

The CLI is thin: every subcommand lives in a module that offers ``configure(parser)`` to declare
its flags and ``main(args) -> int`` that calls one typed function. Modules are imported only when
their subcommand runs, so ``medvid --help`` is fast and a missing optional dependency of one
command never breaks another.

One error boundary holds for every subcommand: bad input (a ``ValueError`` such as ``ConfigError``,
``VideoReadError`` or ``CheckpointError``; a missing file or missing weights; a full disk) prints one
line on stderr, ``medvid COMMAND: <file or argument>: <problem>; <fix>``, and exits 2. Anything else
is a bug and keeps its traceback. ``--debug`` (anywhere on the line) or ``MEDVID_DEBUG=1`` shows the
traceback of bad input too.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

# name -> (module, one-line help). Order is the order of the pipeline.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("medvid.demo", "run the whole pipeline on the embedded echocardiograms (or --source DIR: your own videos)"),
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


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in ``--help``; not repeated where the help text already states it, and
    not for on/off switches (their default is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or action.nargs == 0 or "default" in text.lower() or (action.default is None and text):
            return text  # a None default is explained by the help text ("unset: ...")
        return super()._get_help_string(action)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Options declared without help text still show their default."""
    for action in parser._actions:
        if action.option_strings and action.help is None and action.nargs != 0 and action.default is not argparse.SUPPRESS:
            action.help = "(default: %(default)s)"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medvid", description=__doc__.splitlines()[0])
    from medvid import __version__

    parser.add_argument("--version", action="version", version=f"medvid {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of bad-input errors too (or set MEDVID_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        # Every subcommand's --help shows each flag's default.
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=DefaultsHelpFormatter)
        if name == only:
            mod = importlib.import_module(module)
            mod.configure(p)
            _show_defaults(p)
            p.set_defaults(_main=mod.main)
    return parser


def is_user_error(e: BaseException) -> bool:
    """Bad input the user can fix (exit 2, one line), as opposed to a bug (traceback)."""
    if isinstance(e, ValueError):  # ConfigError, VideoReadError, CheckpointError, UnicodeDecodeError...
        return True
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)):
        return True  # includes MissingWeightsError
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def error_line(e: BaseException) -> str:
    """The exception as one line; OS errors name their file."""
    if isinstance(e, OSError) and type(e).__str__ is OSError.__str__ and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        hint = " (the disk is full: free space or write elsewhere)" if e.errno == errno.ENOSPC else ""
        msg = f"{where}{e.strerror}{hint}"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())


def debug_enabled() -> bool:
    return os.environ.get("MEDVID_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or debug_enabled()
    argv = [a for a in argv if a != "--debug"]
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"medvid {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug or not is_user_error(e):
            raise
        print(f"medvid {args.command}: {error_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
