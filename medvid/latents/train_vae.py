"""``medvid train-vae``: fine-tune the frequency-compensation modules of the video VAE (Eq. 16).

The base VAE stays frozen; only the compensation blocks train (``trainable="compensation"``, the
paper's recipe). ``trainable="base"`` / ``"both"`` exist for comparisons (plain fine-tuning of the
base with the same loss and step budget, see benchmarks/vae.py).

Without pretrained weights (``--vae tiny[:N]``, a random CogVideoX-family VAE) the compensation
blocks alone cannot learn anything: the frozen random base encodes nothing worth compensating. That
combination is refused; ``--from-scratch`` (``train_vae_from_scratch``) is the recipe for it: the
base trains first (``OUT/base``, lr 1e-3), then the compensation blocks on the frozen result (lr
1e-4), and ``OUT/vae`` is the compensated VAE, as after fine-tuning a pretrained one.

The VAE folder records what it was trained with (``OUT/vae/medvid_training.json``: resolution,
frames, stride); ``vae-eval`` and ``encode`` take their defaults from it.

Loss (Eq. 16): L1 + LPIPS (skipped with a note when its weights are absent) + 0.1 * focal frequency
loss, on reconstructions of clips of ``num_frames`` frames (default 17: 1, 1 + 8k or 8k frames come
back from the CogVideoX VAE with the same count, see ``check_round_trip_frames``) and, with ``num_images > 0``, of single frames encoded alone.
Optimiser: Adam, lr 2e-7, betas (0.5, 0.9) (the paper's values; tiny demo VAEs need a larger lr).

Speed on a CPU: batches of 2 or more clips take PyTorch's oneDNN 3D convolution (a batch of one
falls back to a reference ``slow_conv3d``, ~6x slower per clip), and ``precision="bf16"`` autocasts
the round trip to bfloat16 (~1.6x on CPUs with AVX-512 BF16; the loss and the optimiser stay fp32).
``lr_schedule="cosine"``: 5 % linear warm-up, then cosine decay to 0 over ``steps``.

Checkpoints: ``OUT/checkpoints/step-XXXXXXXX`` (trainable weights, optimiser, RNG, step) every
``checkpoint_every`` steps; ``resume="auto"`` continues from the newest one exactly (data order is a
function of the step). The result is one VAE folder ``OUT/vae`` that ``load_vae`` opens, with its
latent scale fitted to the training clips (``medvid.latents.scale``: latents of mean 0, std 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from medvid.utils.host import fused_optimizer_ok, reuse_freed_memory
from medvid.utils.logging import get_logger

log = get_logger("train_vae")

TRAINABLE = ("compensation", "base", "both")
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """Multiplier of the base lr at ``step`` (0-based) of ``steps``."""
    if schedule == "constant":
        return 1.0
    warm = max(1, round(0.05 * steps))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def _open_base(vae: Any):
    """"tiny" / "tiny:N" -> a tiny random CogVideoX VAE (N down blocks, default 4); else load_vae."""
    from medvid.latents.vae import VideoVAE, load_vae, tiny_vae

    if isinstance(vae, VideoVAE):
        return vae
    if isinstance(vae, str) and vae.startswith("tiny"):
        n = int(vae.split(":", 1)[1]) if ":" in vae else 4
        return tiny_vae(num_blocks=n)
    return load_vae(vae)


def check_round_trip_frames(num_frames: int) -> None:
    """CogVideoX encodes in chunks of 8 frames: 1, 1 + 8k and 8k frames decode back to the same
    count (17 -> 5 latents -> 17); other counts do not (5 -> 2 latents -> 8, 13 -> 4 -> 16)."""
    if num_frames < 1 or not (num_frames == 1 or num_frames % 8 == 0 or (num_frames - 1) % 8 == 0):
        raise ValueError(
            f"--num-frames {num_frames}: the CogVideoX VAE reconstructs 1, 1 + 8k (9, 17, 49) or 8k (8, 16) "
            "frames with the same count; pick one of those"
        )


def reconstruct(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Differentiable round trip in diffusers layout: (B, 3, T, H, W) -> same, posterior mean, no clamp."""
    z = module.encode(x).latent_dist.mode()
    return module.decode(z).sample


def _is_random(vae: Any) -> bool:
    return isinstance(vae, str) and vae.startswith("tiny")


def train_vae(
    source: str | Path,
    out: str | Path,
    *,
    vae: Any = "tiny",
    steps: int = 1000,
    batch_size: int = 1,
    lr: float = 2e-7,
    betas: tuple[float, float] = (0.5, 0.9),
    num_frames: int = 17,
    frame_stride: int = 3,
    resolution: int = 128,
    num_images: int = 0,
    ffl_weight: float = 0.1,
    lpips_weights: str | None = None,
    trainable: str = "compensation",
    dropout: float = 0.2,
    checkpoint_every: int = 100,
    keep_last: int = 2,
    resume: str = "auto",
    seed: int = 0,
    log_every: int = 10,
    device: str = "cpu",
    progress: bool = True,
    precision: str = "fp32",
    lr_schedule: str = "constant",
    fit_scale_clips: int = 64,
) -> dict[str, Any]:
    """Fine-tune on the train split of ``source`` (manifest / prepared folder); write ``out/vae``.

    Then fit the latent scale (``medvid.latents.scale``) on ``fit_scale_clips`` training clips and
    store it in ``out/vae`` (0 keeps the base's factors)."""
    from tqdm import tqdm

    from medvid.data.datasets import ClipDataset
    from medvid.losses import PerceptualLoss, vae_reconstruction_loss
    from medvid.latents.fcvae import CompensationConfig, FrequencyCompensatedVAE
    from medvid.utils.checkpoint import (latest_checkpoint, load_checkpoint, rng_state, save_checkpoint,
                                         set_rng_state)

    if trainable not in TRAINABLE:
        raise ValueError(f"--trainable {trainable!r}: use one of {TRAINABLE}")
    if precision not in PRECISIONS or lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"--precision {precision!r} / --lr-schedule {lr_schedule!r}: use one of {PRECISIONS} / "
                         f"{LR_SCHEDULES}")
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"--steps {steps}, --batch-size {batch_size}, --lr {lr}: need steps, batch size >= 1, lr > 0")
    check_round_trip_frames(num_frames)
    if _is_random(vae) and trainable == "compensation":
        raise ValueError(
            f"--vae {vae} is a random VAE: training only its frequency-compensation modules cannot learn (the frozen "
            "random base encodes nothing to compensate). Use --from-scratch (base first, then compensation), "
            "or --trainable base --lr 1e-3, or give pretrained weights (a diffusers VAE folder)"
        )
    if _is_random(vae) and lr < 1e-5:
        log.warning("--lr %g on a random VAE (--vae %s): that is a fine-tuning rate for pretrained weights and will "
                    "barely move a random one; from scratch use --from-scratch or --lr 1e-3", lr, vae)
    out = Path(out)
    torch.manual_seed(seed)
    config = {"source": str(source), "vae": vae if isinstance(vae, str) else "in-memory", "steps": steps,
              "batch_size": batch_size, "lr": lr, "betas": list(betas), "num_frames": num_frames,
              "frame_stride": frame_stride, "resolution": resolution, "num_images": num_images,
              "ffl_weight": ffl_weight, "trainable": trainable, "dropout": dropout, "seed": seed,
              "precision": precision, "lr_schedule": lr_schedule}
    base = _open_base(vae)
    on = trainable != "base"  # "base": plain fine-tuning of the base, no compensation blocks
    if isinstance(base.vae, FrequencyCompensatedVAE):  # a compensated folder: continue its blocks
        model = base.vae.to(device)
        if not on:
            raise ValueError(f"--vae {vae}: already frequency-compensated; --trainable base needs a plain base VAE")
    else:
        model = FrequencyCompensatedVAE(base.vae, CompensationConfig(dropout=dropout, encoder=on, decoder=on)).to(device)
    if trainable in ("base", "both"):
        model.base.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    if torch.device(device).type == "cpu":
        reuse_freed_memory()  # the VAE's activations are tens of MB: not page-faulted anew every step
    opt = torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=fused_optimizer_ok(model))
    perceptual = PerceptualLoss(lpips_weights)

    ds = ClipDataset(str(source), split="train", num_frames=num_frames, frame_stride=frame_stride,
                     resolution=resolution, extra_flow_frame=False, num_images=num_images, seed=seed)
    ckpt_dir = out / "checkpoints"
    start = 0
    history: list[dict[str, float]] = []
    found = latest_checkpoint(ckpt_dir) if resume == "auto" else (Path(resume) if resume not in ("none", "") else None)
    if found is not None:
        groups, state, old_cfg = load_checkpoint(found)
        if old_cfg and {k: old_cfg.get(k) for k in ("vae", "trainable", "resolution")} != \
                {k: config[k] for k in ("vae", "trainable", "resolution")}:
            raise ValueError(f"{found}: made with another --vae/--trainable/--resolution; use a new --out or --resume none")
        trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
        sd = {k: v for k, v in groups["weights"].items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected or (trainable_names - set(sd)):
            raise ValueError(f"{found}: weights do not fit this model (unexpected {unexpected})")
        opt.load_state_dict(groups["optimizer"])
        set_rng_state(groups["rng"])
        start = int(state["step"])
        history = list(state.get("history", []))
        log.info("resumed from %s at step %d", found, start)

    def batch_at(step: int) -> dict[str, torch.Tensor]:
        items = []
        for j in range(batch_size):
            k = step * batch_size + j
            ds.set_epoch(k // len(ds))
            items.append(ds[k % len(ds)])
        return {"video": torch.stack([it["video"] for it in items]),
                "images": torch.stack([it["images"] for it in items])}

    def save(step: int) -> Path:
        weights = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        return save_checkpoint(ckpt_dir, step, {"weights": weights, "optimizer": opt.state_dict(), "rng": rng_state()},
                               state={"step": step, "history": history}, config=config, keep_last=keep_last)

    model.train()
    amp = (torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if precision == "bf16"
           else contextlib.nullcontext())
    t0, timed = time.perf_counter(), 0
    bar = tqdm(range(start, steps), desc="train-vae", unit="step", disable=not progress, initial=start, total=steps)
    for step in bar:
        batch = batch_at(step)
        video = batch["video"].to(device).permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(lr_schedule, step, steps)
        with amp:
            recon = reconstruct(model, video)
        terms = vae_reconstruction_loss(recon.float().transpose(1, 2), video.transpose(1, 2), perceptual, ffl_weight)
        if num_images:
            imgs = batch["images"].to(device).flatten(0, 1)[:, :, None]  # (B*N, 3, 1, H, W): each alone
            with amp:
                img_recon = reconstruct(model, imgs)
            img_terms = vae_reconstruction_loss(img_recon.float().transpose(1, 2), imgs.transpose(1, 2),
                                                perceptual, ffl_weight)
            terms = {k: (terms[k] + img_terms[k]) / 2 for k in terms}
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        timed += 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            row = {"step": step + 1, **{k: round(float(v.detach()), 6) for k, v in terms.items()}}
            history.append(row)
            bar.set_postfix(loss=row["loss"])
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            save(step + 1)
    elapsed = time.perf_counter() - t0
    folder = out / "vae"
    model.eval()
    if trainable == "base":
        model.base.save_pretrained(str(folder), safe_serialization=True)
    else:
        model.save_pretrained(folder)
    from medvid.utils.settings import write_vae_settings

    write_vae_settings(folder, {k: config[k] for k in ("resolution", "num_frames", "frame_stride", "num_images",
                                                       "trainable", "vae", "steps", "lr", "source")})
    scale = None
    if fit_scale_clips:
        # Training moved the latents away from whatever scale the base had: fit it to the data now.
        from medvid.latents.scale import fit_latent_scale
        from medvid.latents.vae import VideoVAE

        scale = fit_latent_scale(folder, source, num_clips=fit_scale_clips, num_frames=num_frames,
                                 frame_stride=frame_stride, resolution=resolution, num_images=num_images, seed=seed,
                                 progress=progress, vae=VideoVAE(model.base if trainable == "base" else model))
    (out / "history.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
    summary = {"steps": steps, "resumed_from": start, "vae_folder": str(folder), "history": history,
               "seconds_per_step": elapsed / max(timed, 1), "perceptual": perceptual.note or "LPIPS on",
               "trainable_parameters": sum(p.numel() for p in params)}
    if scale is not None:
        summary["latent_scale"] = {k: scale[k] for k in ("scaling_factor", "shift_factor", "latents_before")}
    ds.close()
    return summary


def train_vae_from_scratch(
    source: str | Path,
    out: str | Path,
    *,
    vae: Any = "tiny",
    steps: int = 1000,
    compensation_steps: int | None = None,
    lr: float = 1e-3,
    compensation_lr: float = 1e-4,
    checkpoint_every: int = 100,
    **common: Any,
) -> dict[str, Any]:
    """A VAE without pretrained weights: the base from scratch (``out/base``), then its compensation
    modules on the frozen base (``out``); ``out/vae`` is the result. ``compensation_steps`` defaults to
    a quarter of ``steps`` (the demo's split). Both phases resume."""
    if compensation_steps is None:
        compensation_steps = max(1, steps // 4)
    out = Path(out)
    base = train_vae(source, out / "base", vae=vae, steps=steps, lr=lr, trainable="base",
                     checkpoint_every=checkpoint_every, **{**common, "fit_scale_clips": 0})
    fc = train_vae(source, out, vae=base["vae_folder"], steps=compensation_steps, lr=compensation_lr,
                   trainable="compensation", checkpoint_every=checkpoint_every, **common)
    return {**fc, "base": {k: v for k, v in base.items() if k != "history"}, "base_history": base["history"]}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="manifest.jsonl or a `medvid prepare` folder (train split is used)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints/, vae/, history.json")
    parser.add_argument("--vae", required=True,
                        help="base VAE: a local diffusers folder, or 'tiny[:N]' (random, N down blocks; needs --from-scratch)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="no pretrained weights: train the base (lr 1e-3, --steps) into OUT/base, then the "
                             "compensation modules on it (--compensation-lr, --compensation-steps) into OUT/vae")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--compensation-steps", type=int, default=None,
                        help="with --from-scratch: steps of the compensation phase (default: a quarter of --steps)")
    parser.add_argument("--compensation-lr", type=float, default=1e-4, help="with --from-scratch: lr of the compensation phase")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--lr", type=float, default=None,
                        help="Adam learning rate; unset: 2e-7 (the paper's, for pretrained weights), 1e-3 with --from-scratch")
    parser.add_argument("--beta1", type=float, default=0.5)
    parser.add_argument("--beta2", type=float, default=0.9)
    parser.add_argument("--num-frames", type=int, default=17, help="frames per clip: 1, 1 + 8k or 8k")
    parser.add_argument("--frame-stride", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--num-images", type=int, default=0, help="single frames per clip trained alone")
    parser.add_argument("--ffl-weight", type=float, default=0.1, help="lambda of Eq. 16")
    parser.add_argument("--lpips-weights", default=None, help="local torchvision alexnet .pth for LPIPS")
    parser.add_argument("--trainable", choices=TRAINABLE, default="compensation")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="bf16: autocast the VAE to bfloat16 (faster on CPUs with AVX-512 BF16 and on GPUs)")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                        help="cosine: 5%% warm-up then cosine decay to 0")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--resume", default=None,
                        help="'auto' (newest checkpoint in OUT), a step number, or a path; required when OUT holds a run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fit-scale-clips", type=int, default=64,
                        help="training clips whose latents fit the VAE's scaling/shift factors after training (0: keep the base's)")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from medvid.utils.runs import guard_run_folder

    # The keys train_vae stores in each checkpoint's config.yaml that decide what is learnt.
    config = {"source": str(args.source), "vae": args.vae, "batch_size": args.batch_size, "lr": args.lr or 2e-7,
              "betas": [args.beta1, args.beta2], "num_frames": args.num_frames, "frame_stride": args.frame_stride,
              "resolution": args.resolution, "num_images": args.num_images, "ffl_weight": args.ffl_weight,
              "trainable": args.trainable, "seed": args.seed}
    # --from-scratch: two stages (OUT/base, then OUT), each resumable; only the folder is guarded.
    resume = guard_run_folder(args.out, args.resume, None if args.from_scratch else config,
                              ckpt_dir=Path(args.out) / "checkpoints", only_new_keys=True)
    args.resume = "none" if resume is None else resume
    common = dict(batch_size=args.batch_size, betas=(args.beta1, args.beta2), num_frames=args.num_frames,
                  frame_stride=args.frame_stride, resolution=args.resolution, num_images=args.num_images,
                  ffl_weight=args.ffl_weight, lpips_weights=args.lpips_weights, resume=args.resume, seed=args.seed,
                  device=args.device, progress=not args.no_progress, precision=args.precision,
                  lr_schedule=args.lr_schedule, fit_scale_clips=args.fit_scale_clips)
    if args.from_scratch:
        if args.trainable != "compensation":
            raise ValueError("--from-scratch trains the base, then the compensation; drop --trainable")
        summary = train_vae_from_scratch(
            args.source, args.out, vae=args.vae, steps=args.steps, compensation_steps=args.compensation_steps,
            lr=args.lr or 1e-3, compensation_lr=args.compensation_lr, checkpoint_every=args.checkpoint_every,
            **common)
        summary.pop("base_history")
    else:
        summary = train_vae(args.source, args.out, vae=args.vae, steps=args.steps, lr=args.lr or 2e-7,
                            trainable=args.trainable, checkpoint_every=args.checkpoint_every, **common)
    summary.pop("history")
    print(json.dumps(summary, indent=1))
    return 0
