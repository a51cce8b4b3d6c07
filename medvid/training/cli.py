"""`medvid train --config FILE [--key value ...] --out DIR [--resume auto]`.

Every field of ``TrainConfig`` is a dotted flag overriding the YAML (``--optim.ema_decay 0.999``,
``--model.overrides.depth 2``); the resolved config is written to ``OUT/config.yaml`` and into
every checkpoint. Under ``torchrun --nproc_per_node N -m medvid train ...`` the run uses DDP.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from medvid.config import load_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, log.txt, tb/, samples/")
    parser.add_argument("--resume", default=None,
                        help="'auto' (latest checkpoint in --out), a step number or a checkpoint folder; "
                             "required when --out already holds a run")
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


# Keys that may change when a run is resumed: how long it runs and its bookkeeping, not what it learns.
RUN_LENGTH_KEYS = ("epochs", "max_steps", "ckpt_every", "log_every", "keep_last", "progress", "tensorboard",
                   "device", "data.num_workers", "sample")


def main(args: argparse.Namespace) -> int:
    from medvid.config import to_dict
    from medvid.training.builders import check_config
    from medvid.training.config import TrainConfig
    from medvid.training.trainer import TrainingDivergedError, train
    from medvid.utils.runs import guard_run_folder

    from medvid.flow.alignment import check_feature_recipe

    cfg = load_config(TrainConfig, args.config, list(getattr(args, "overrides", []) or []))
    check_config(cfg, args.config)
    check_feature_recipe(cfg.align)  # the trainer checks again and records an allowed mismatch
    if cfg.data.source == "latents" and Path(cfg.data.latent_dir).is_dir():
        from medvid.training.builders import follow_latents

        follow_latents(cfg.data)  # compare with the stored config as the trainer will resolve it
    resume = guard_run_folder(args.out, args.resume, to_dict(cfg), run_length_keys=RUN_LENGTH_KEYS,
                              config_class=TrainConfig)
    try:
        path = train(cfg, args.out, resume=resume)
    except TrainingDivergedError as e:
        print(f"medvid train: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0
