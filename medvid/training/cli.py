"""`medvid train --config FILE [--key value ...] --out DIR [--resume auto]`.

Every field of ``TrainConfig`` is a dotted flag overriding the YAML (``--optim.ema_decay 0.999``,
``--model.overrides.depth 2``); the resolved config is written to ``OUT/config.yaml`` and into
every checkpoint. Under ``torchrun --nproc_per_node N -m medvid train ...`` the run uses DDP.
"""

from __future__ import annotations

import argparse
import sys

from medvid.config import ConfigError, load_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, log.txt, tb/, samples/")
    parser.add_argument("--resume", default=None, help="'auto' (latest checkpoint in --out) or a checkpoint folder")
    parser.allow_abbrev = False
    parser.epilog = ("Any other --dotted.key VALUE overrides the config file, e.g. --optim.ema_decay 0.999 "
                     "--data.latent_dir D --optim.phases '[{lr: 1e-4, batch_size: 2}]' (YAML values).")
    known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        # Unknown --dotted.key VALUE pairs are config overrides, not errors.
        ns, extras = known(args, namespace)
        ns.overrides = list(getattr(ns, "overrides", None) or []) + list(extras)
        return ns, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def main(args: argparse.Namespace) -> int:
    from medvid.training.config import TrainConfig
    from medvid.training.trainer import TrainingDivergedError, train

    from medvid.flow.alignment import check_feature_recipe

    try:
        cfg = load_config(TrainConfig, args.config, list(getattr(args, "overrides", []) or []))
        check_feature_recipe(cfg.align)  # the trainer checks again and records an allowed mismatch
    except (ConfigError, ValueError) as e:
        print(f"medvid train: {e}", file=sys.stderr)
        return 2
    try:
        path = train(cfg, args.out, resume=args.resume)
    except TrainingDivergedError as e:
        print(f"medvid train: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0
