"""`medvid train-wan`: LoRA or full fine-tuning of Wan2.1 on captioned clips (the MedGen route).

    medvid train-wan --config configs/wan/lora_1.3b.yaml --out runs/wan-lora [--optim.lr 5e-5 ...] [--resume auto]
    accelerate launch --config_file configs/wan/accelerate_fsdp.yaml -m medvid train-wan --config configs/wan/full_14b.yaml --out ...

Objective: rectified flow as Wan trains it: x_t = (1 - s) x0 + s eps with s drawn from the shifted
``FlowMatchEulerDiscreteScheduler`` table, the transformer regresses the velocity eps - x0
(``medvid.t2v.wan.flow_matching_loss``). One "step" is one optimiser update
(``grad_accum`` micro-batches of ``batch_size`` clips per process). Clips of any size and length
go to the nearest (height, width, frames) bucket (``data.buckets``, ``medvid.t2v.buckets``) and each
batch holds clips of one bucket. With ``data.cache`` (a ``medvid wan-cache`` folder) the run loads
neither the VAE nor the text encoder: latents and caption embeddings come from the cache. Image-to-
video models (a WanImageToVideoPipeline folder) train with first-frame conditioning: the clip's
first frame is VAE-encoded as the pipeline's condition and CLIP-encoded for the image attention.
Validation videos (``validation.every``) go to ``RUN/validation/`` and TensorBoard (``RUN/tb``).

Outputs in ``--out``: ``step-XXXXXXXX/`` checkpoints (medvid.utils.checkpoint: trainable weights,
EMA, optimiser, LR schedule, RNG, data position, config) and, for LoRA, ``lora/`` (and
``lora-ema/``) in the diffusers format that ``WanPipeline.load_lora_weights(DIR)`` reads; for full
fine-tuning, ``transformer/`` (and ``transformer-ema/``) that ``WanTransformer3DModel.from_pretrained``
reads.

Multi-GPU: run under ``torchrun`` or ``accelerate launch``; the Accelerator picks up DDP, DeepSpeed
ZeRO or FSDP from its config (configs/wan/). Under DeepSpeed/FSDP the optimiser state is sharded and
not stored in medvid checkpoints: resuming such a run restores weights, EMA, step and data position
and restarts the optimiser moments (logged).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from medvid.config import ConfigError, load_config, to_dict
from medvid.t2v.buckets import DEFAULT_MAX_CROP, default_buckets
from medvid.t2v.wan import WAN_LORA_TARGETS
from medvid.t2v.wan_validate import WanValidationConfig
from medvid.utils.logging import get_logger, setup_logging

log = get_logger("t2v.train")


@dataclass
class WanLoraConfig:
    rank: int = 32
    """LoRA rank (MedGen / public 1.3B recipe: 32)."""
    alpha: float = 32.0
    """LoRA alpha; the update is scaled by alpha / rank."""
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(WAN_LORA_TARGETS))
    """Wan names (q, k, v, o, ffn.0, ffn.2) or diffusers module names (to_q, ffn.net.2, ...)."""


@dataclass
class WanDataConfig:
    path: str = ""
    """manifest.jsonl (medvid prepare + caption) or metadata.csv with columns video,prompt."""
    caption_field: str = "caption"
    """Manifest field used as the prompt: caption, brief_caption or detailed_caption."""
    split: str = "train"
    buckets: list[list[int]] = field(default_factory=default_buckets)
    """[height, width, frames] training shapes (multiples of 16; 4k + 1 frames); each clip goes to
    the nearest aspect ratio and the longest length it fills. Default: 480x832, 512x768 (3:2, as
    MedVideoCap-55K's 720x480), 624x624 and the two portrait shapes, at 81, 49 and 17 frames."""
    max_crop: float = DEFAULT_MAX_CROP
    """A clip whose nearest bucket would crop away more than this share of its pixels is skipped."""
    frame_stride: int = 1
    num_workers: int = 2
    cache: str = ""
    """A `medvid wan-cache` folder made from this config: train on its latents and embeddings."""


@dataclass
class WanOptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 0
    """Linear warm-up from 0, then constant."""
    grad_clip: float = 1.0
    """Max gradient norm (0 disables)."""


@dataclass
class WanTrainConfig:
    model_path: str = ""
    """Local diffusers-format Wan2.1 folder (e.g. Wan2.1-T2V-1.3B-Diffusers)."""
    mode: Literal["lora", "full"] = "lora"
    lora: WanLoraConfig = field(default_factory=WanLoraConfig)
    data: WanDataConfig = field(default_factory=WanDataConfig)
    optim: WanOptimConfig = field(default_factory=WanOptimConfig)
    validation: WanValidationConfig = field(default_factory=WanValidationConfig)
    batch_size: int = 1
    """Clips per process per micro-batch."""
    grad_accum: int = 1
    max_steps: int = 1000
    epochs: float | None = None
    """If set, overrides max_steps: epochs x clips / (batch_size x grad_accum x processes)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto = bf16 autocast on CUDA, fp32 on CPU."""
    gradient_checkpointing: bool = True
    ema_decay: float = 0.0
    """0 disables EMA; MedGen used 0.999."""
    flow_shift: float = 5.0
    """Timestep shift of the training noise levels (Wan2.1 trains with 5.0)."""
    max_sequence_length: int = 512
    """T5 tokens per prompt (Wan2.1 uses 512)."""
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    tensorboard: bool = True
    """Loss, learning rate and validation videos in RUN/tb."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_steps", "save_every", "log_every", "max_sequence_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0 (or null to use max_steps), got {self.epochs}")
        from medvid.training.config import check_adam

        try:
            check_adam(self.optim.betas, self.optim.weight_decay, self.optim.eps, self.optim.lr)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        if self.optim.grad_clip < 0 or self.optim.warmup_steps < 0:
            raise ConfigError(f"optim.grad_clip={self.optim.grad_clip} and optim.warmup_steps={self.optim.warmup_steps} "
                              "must be >= 0 (0 disables)")
        if self.validation.every < 0:
            raise ConfigError(f"validation.every must be >= 0 (0 disables), got {self.validation.every}")
        if not 0.0 <= self.data.max_crop < 1.0:
            raise ConfigError(f"data.max_crop must be in [0, 1), got {self.data.max_crop}")
        from medvid.t2v.buckets import parse_buckets

        try:
            parse_buckets(self.data.buckets)
        except ValueError as e:
            raise ConfigError(str(e)) from e


def _collate(items: list[dict]) -> dict:
    """Stack the tensors of one bucket's items; strings become lists."""
    return {k: torch.stack([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor) else [it[k] for it in items]
            for k in items[0]}


def _lr_lambda(warmup: int):
    return lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def _resolve_resume(out_dir: Path, resume: str | None) -> Path | None:
    from medvid.utils.checkpoint import latest_checkpoint

    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        return latest_checkpoint(out_dir)
    p = Path(resume)
    if not p.exists():
        raise ValueError(f"--resume {resume}: no such checkpoint folder; use --resume auto or a step-* folder")
    return p


def _data(cfg: WanTrainConfig, acc, load_dtype: torch.dtype):
    """-> (dataset, bucket name per item, pipeline or None, transformer, cache dataset or None, skipped).

    The data is checked before the DiT is loaded, so a bad file fails in seconds."""
    from medvid.t2v import wan as W
    from medvid.t2v.buckets import parse_buckets
    from medvid.t2v.wan_data import CaptionedClipDataset, assign_buckets, check_caption_lengths, read_captioned_videos

    if cfg.data.cache:
        from medvid.t2v.wan_cache import WanCacheDataset, check_cache

        check_cache(cfg.data.cache, cfg)
        cache = WanCacheDataset(cfg.data.cache, cfg.max_sequence_length)
        transformer = W.load_wan_transformer(cfg.model_path, load_dtype)
        log.info("training from the cache %s (%d clips): VAE and text encoder not loaded", cfg.data.cache, len(cache))
        return cache, cache.bucket_names(), None, transformer, cache, {}
    items = read_captioned_videos(cfg.data.path, cfg.data.caption_field, cfg.data.split)
    items, buckets, skipped = assign_buckets(items, parse_buckets(cfg.data.buckets), cfg.data.frame_stride, cfg.data.max_crop)
    pipe = W.load_wan_pipeline(cfg.model_path, dtype=load_dtype, device="cpu")  # the VAE stays fp32
    keep, too_long = check_caption_lengths(items, pipe.tokenizer, cfg.max_sequence_length)
    skipped.update(too_long)
    if not keep:
        raise ValueError(f"every caption is over max_sequence_length={cfg.max_sequence_length} tokens; raise it or "
                         "shorten the captions")
    items, buckets = [items[i] for i in keep], [buckets[i] for i in keep]
    pipe.text_encoder.to(acc.device, torch.bfloat16 if load_dtype == torch.bfloat16 else torch.float32).requires_grad_(False)
    pipe.vae.to(acc.device).requires_grad_(False)
    if getattr(pipe, "image_encoder", None) is not None:
        pipe.image_encoder.to(acc.device).requires_grad_(False)
    dataset = CaptionedClipDataset(items, buckets, cfg.data.frame_stride, seed=cfg.seed)
    counts: dict[str, int] = {}
    for b in buckets:
        counts[b.name] = counts.get(b.name, 0) + 1
    log.info("%d clip(s) in %d bucket(s): %s", len(items), len(counts), ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return dataset, [b.name for b in buckets], pipe, pipe.transformer, None, skipped


def train_wan(cfg: WanTrainConfig, out_dir: str | Path, resume: str | None = None) -> dict[str, Any]:
    """Fine-tune Wan2.1 per ``cfg``; returns ``{"step", "losses", "out_dir", "export", ...}``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType
    from diffusers import FlowMatchEulerDiscreteScheduler

    from medvid.t2v import wan as W
    from medvid.t2v.buckets import BucketBatchStream
    from medvid.utils.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state

    out_dir = Path(out_dir)
    cuda = torch.cuda.is_available()
    precision = ("bf16" if cuda else "fp32") if cfg.precision == "auto" else cfg.precision
    try:  # accelerate keeps one global state per process; let a second run choose its own precision
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=False)
    except (ImportError, AttributeError):  # pragma: no cover - older accelerate
        pass
    acc = Accelerator(
        mixed_precision="bf16" if precision == "bf16" else "no",
        gradient_accumulation_steps=cfg.grad_accum,
        step_scheduler_with_optimizer=False,  # the LR schedule counts optimiser steps, whatever the world size
        cpu=not cuda,
    )
    setup_logging(out_dir / "log.txt", rank=acc.process_index)
    sharded = acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)

    # ---- data, then the model
    torch.manual_seed(cfg.seed)
    weight_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # Frozen weights (encoders, LoRA base) and sharded full fine-tuning (the engine keeps fp32
    # masters) load in bf16; unsharded full fine-tuning keeps fp32 weights under bf16 autocast.
    load_dtype = weight_dtype if (cfg.mode == "lora" or sharded) else torch.float32
    dataset, bucket_names, pipe, transformer, cache, skipped = _data(cfg, acc, load_dtype)
    i2v = W.is_i2v(transformer)
    lora_cfg = None
    torch.manual_seed(cfg.seed)  # LoRA's A init: the same whatever was loaded before (cache or not)
    if cfg.mode == "lora":
        lora_cfg = W.add_lora(transformer, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets, cfg.lora.dropout)
        for p in transformer.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # trainable LoRA weights in fp32 over a bf16 base
    else:
        transformer.requires_grad_(True)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.to(acc.device).train()
    names = [n for n, p in transformer.named_parameters() if p.requires_grad]
    params = [p for p in transformer.parameters() if p.requires_grad]
    n_train, n_all = sum(p.numel() for p in params), sum(p.numel() for p in transformer.parameters())
    log.info("Wan %s %s fine-tuning: %d trainable of %d parameters (%.2f%%), precision %s, %d process(es)",
             "image-to-video" if i2v else "text-to-video", cfg.mode, n_train, n_all, 100.0 * n_train / n_all,
             precision, acc.num_processes)

    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                  weight_decay=cfg.optim.weight_decay)
    noise_gen = torch.Generator().manual_seed(cfg.seed + 17 * acc.process_index)
    train_sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg.flow_shift)
    if sharded and cfg.ema_decay > 0:
        raise ValueError("ema_decay > 0 is not supported with DeepSpeed/FSDP sharding (each rank would hold a full "
                         "fp32 copy); set ema_decay: 0 for sharded runs")
    stream = BucketBatchStream(bucket_names, cfg.batch_size, cfg.seed, 0, acc.process_index, acc.num_processes)
    max_steps = cfg.max_steps
    if cfg.epochs is not None:
        per_epoch = stream.batches_per_epoch()
        max_steps = max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))
        log.info("epochs=%g over %d clips (%d batches per process and epoch) -> %d steps", cfg.epochs, len(dataset),
                 per_epoch, max_steps)

    # ---- resume: weights go into the plain module, before any engine wraps or shards it
    step, position, losses, resume_state = 0, 0, [], None
    ckpt = _resolve_resume(out_dir, resume)
    if ckpt is not None:
        groups, state, saved_cfg = load_checkpoint(ckpt)
        if saved_cfg and (saved_cfg.get("mode") != cfg.mode or (cfg.mode == "lora" and saved_cfg.get("lora") != to_dict(cfg.lora))):
            raise ValueError(f"--resume {ckpt}: it was trained with mode={saved_cfg.get('mode')} lora={saved_cfg.get('lora')}, "
                             f"this run asks for mode={cfg.mode} lora={to_dict(cfg.lora)}; use the same settings or a new --out")
        with torch.no_grad():
            for n, p in zip(names, params):
                p.copy_(groups["trainable"][n])
        resume_state = (groups, state)

    if acc.distributed_type == DistributedType.DEEPSPEED:
        # No dataloader goes through accelerate, so tell DeepSpeed the micro-batch size itself.
        acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
    # The optimiser the engine returns is the one stepped and checkpointed (under FSDP/DeepSpeed it may
    # be rebuilt over the sharded parameters), so the warm-up schedule is built on it, after prepare:
    # a schedule made earlier would keep setting the learning rate of an optimiser nobody steps.
    transformer, optimizer = acc.prepare(transformer, optimizer)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.optim.warmup_steps))
    params = [p for p in transformer.parameters() if p.requires_grad]
    # EMA copies are made from the prepared model, on the device it now lives on.
    ema = {n: p.detach().float().clone() for n, p in zip(names, params)} if cfg.ema_decay > 0 else None

    if resume_state is not None:
        groups, state = resume_state
        if ema is not None and "ema" in groups:
            ema = {n: groups["ema"][n].float().to(ema[n].device) for n in names}
        if "optimizer" in groups and not sharded:
            optimizer.load_state_dict(groups["optimizer"])
        elif sharded:
            log.warning("sharded run: optimiser moments restart from zero after resume")
        lr_sched.load_state_dict(state["lr_schedule"])
        set_rng_state(groups["rng"]["global"])
        noise = groups["rng"]["noise"]
        if acc.process_index < len(noise):
            noise_gen.set_state(noise[acc.process_index].to(torch.uint8))
        else:
            log.warning("checkpoint was written by fewer processes; rank %d keeps a fresh noise seed", acc.process_index)
        step, position, losses = int(state["step"]), int(state["position"]), list(state.get("losses", []))
        log.info("resumed from %s at step %d", ckpt, step)

    stream.start = position
    # One iterator over an endless stream: the workers live as long as the run. Pinned batches let the
    # copies below overlap the previous step's kernels.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=stream, num_workers=cfg.data.num_workers,
                                         collate_fn=_collate, persistent_workers=False, pin_memory=cuda)
    batches = iter(loader)

    def trainable_state(source: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        if source is not None:
            return {n: source[n].detach().cpu() for n in names}
        if sharded:
            full = acc.get_state_dict(transformer)
            return {n: full[n].detach().cpu() for n in names}
        return {n: p.detach().cpu() for n, p in zip(names, params)}

    def export(weights: dict[str, torch.Tensor], subdir: str) -> Path:
        unwrapped = acc.unwrap_model(transformer)
        if cfg.mode == "lora":
            return W.save_lora(out_dir / subdir, W.lora_state_dict(unwrapped, weights), lora_cfg).parent
        full = {k: v.detach().cpu() for k, v in unwrapped.state_dict().items()}
        full.update(weights)
        unwrapped.save_pretrained(out_dir / subdir, state_dict=full, safe_serialization=True)
        return out_dir / subdir

    def save(step: int) -> None:
        from accelerate.utils import gather_object

        current = trainable_state()
        # Every rank's noise generator, so a resumed multi-process run draws the same noise.
        noise_states = gather_object([noise_gen.get_state()]) if acc.num_processes > 1 else [noise_gen.get_state()]
        groups: dict[str, Any] = {"trainable": current, "rng": {"global": rng_state(), "noise": list(noise_states)}}
        if ema is not None:
            groups["ema"] = trainable_state(ema)
        if not sharded:
            groups["optimizer"] = optimizer.state_dict()
        if acc.is_main_process:
            state = {"step": step, "position": position, "lr_schedule": lr_sched.state_dict(), "losses": losses[-1000:]}
            save_checkpoint(out_dir, step, groups, state=state, config=to_dict(cfg), keep_last=cfg.keep_last)
            base = "lora" if cfg.mode == "lora" else "transformer"
            export(current, base)
            if ema is not None:
                export(groups["ema"], f"{base}-ema")
        acc.wait_for_everyone()

    writer = None
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tb"))
    validator = _validator(cfg, out_dir, acc, pipe, cache, writer, sharded)

    def validate(step: int) -> None:
        if validator is not None and acc.is_main_process:
            model = acc.unwrap_model(transformer)
            with _swapped(names, params, ema):
                validator.render(model, step, "ema" if ema is not None else "model", acc.autocast)
        acc.wait_for_everyone()

    t_start, steps_timed = time.perf_counter(), 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    while step < max_steps:
        t0 = time.perf_counter()
        micro_losses = []
        for _ in range(cfg.grad_accum):
            batch = next(batches)
            position += 1
            cond = {}
            if cache is not None:
                latents = batch["latents"].to(acc.device, non_blocking=True)
                embeds = batch["text"].to(acc.device, non_blocking=True)
                if i2v:
                    cond = {"condition": batch["condition"].to(acc.device, non_blocking=True),
                            "image_embeds": batch["image"].to(acc.device, non_blocking=True)}
            else:
                with torch.no_grad():
                    video = batch["video"].to(acc.device)
                    latents = W.encode_video(pipe.vae, video)  # (B, C, f, h, w)
                    embeds = W.encode_prompts(pipe, batch["caption"], cfg.max_sequence_length)  # (B, L, D)
                    if i2v:
                        cond = {"condition": W.i2v_condition(pipe.vae, video[:, 0], video.shape[1]),
                                "image_embeds": W.encode_first_frames(pipe, video[:, 0])}
            with acc.accumulate(transformer), acc.autocast():
                loss = W.flow_matching_loss(transformer, latents, embeds, train_sched, noise_gen, **cond)
                acc.backward(loss)
                if acc.sync_gradients and cfg.optim.grad_clip > 0:
                    acc.clip_grad_norm_(params, cfg.optim.grad_clip)
                optimizer.step()  # accelerate skips it until the last micro-batch
                if acc.sync_gradients:
                    lr_sched.step()
                optimizer.zero_grad(set_to_none=True)
            micro_losses.append(loss.detach())
        step += 1
        loss_value = float(acc.gather(torch.stack(micro_losses).mean()[None]).mean())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step}; lower optim.lr or use precision: fp32")
        losses.append(loss_value)
        if ema is not None:
            with torch.no_grad():
                for n, p in zip(names, params):
                    ema[n].mul_(cfg.ema_decay).add_(p.detach().float(), alpha=1.0 - cfg.ema_decay)
        steps_timed += 1
        if writer is not None:
            writer.add_scalar("train/loss", loss_value, step)
            writer.add_scalar("train/lr", lr_sched.get_last_lr()[0], step)
        if step % cfg.log_every == 0 or step == max_steps:
            log.info("step %d/%d loss %.5f lr %.2e %.2fs/step", step, max_steps, loss_value,
                     lr_sched.get_last_lr()[0], time.perf_counter() - t0)
        if step % cfg.save_every == 0 or step == max_steps:
            save(step)
        if cfg.validation.every and (step % cfg.validation.every == 0 or step == max_steps):
            validate(step)
    seconds = (time.perf_counter() - t_start) / max(1, steps_timed)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    if writer is not None:
        writer.close()
    summary = {"step": step, "losses": losses, "out_dir": str(out_dir), "seconds_per_step": seconds,
               "peak_memory_gib": peak, "trainable_parameters": n_train, "parameters": n_all, "skipped": skipped,
               "cached": cache is not None, "image_to_video": i2v,
               "export": str(out_dir / ("lora" if cfg.mode == "lora" else "transformer"))}
    if acc.is_main_process:
        (out_dir / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=1))
    return summary


def _validator(cfg: WanTrainConfig, out_dir: Path, acc, pipe, cache, writer, sharded: bool):
    from medvid.t2v.buckets import parse_buckets
    from medvid.t2v.wan_validate import Validator, validation_specs

    v = cfg.validation
    if not v.every:
        return None
    specs = validation_specs(cfg)
    if not specs:
        raise ValueError("validation.every is set but there are no prompts; add validation.prompts or "
                         "validation.prompts_file (or set validation.every: 0)")
    if sharded:
        log.warning("validation videos are skipped under DeepSpeed/FSDP sharding; render the exported weights "
                    "with `medvid generate` instead")
        return None
    b = parse_buckets(cfg.data.buckets)[0]
    size = (v.height or b.height, v.width or b.width, v.num_frames or b.frames)
    return Validator(cfg, specs, out_dir, acc.device, size, pipe=pipe, cache=cache, writer=writer) if acc.is_main_process else None


class _swapped:
    """Context: the EMA weights in the model's trainable parameters, the trained ones restored after."""

    def __init__(self, names, params, ema):
        self.names, self.params, self.ema, self.saved = names, params, ema, None

    def __enter__(self):
        if self.ema is not None:
            with torch.no_grad():
                self.saved = [p.detach().clone() for p in self.params]
                for n, p in zip(self.names, self.params):
                    p.copy_(self.ema[n])

    def __exit__(self, *exc):
        if self.saved is not None:
            with torch.no_grad():
                for p, s in zip(self.params, self.saved):
                    p.copy_(s)
        return False


def _config_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One ``--dotted.key`` flag per config field, so every YAML key can be overridden."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            _config_flags(parser, hints[f.name], f"{key}.")
        else:
            parser.add_argument(f"--{key}", dest=f"cfg:{key}", default=argparse.SUPPRESS, metavar="VALUE",
                                help=argparse.SUPPRESS)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML file (see configs/wan/)")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, lora/, log.txt)")
    parser.add_argument("--resume", default=None,
                        help="'auto' (latest checkpoint in --out), a step number or a step-* folder; "
                             "required when --out already holds a run")
    parser.epilog = "Every config key is also a flag: --optim.lr 5e-5 --lora.rank 16 --data.path metadata.csv"
    _config_flags(parser, WanTrainConfig)


# Keys that may change when a run is resumed: how long it runs and its bookkeeping, not what it learns.
RUN_LENGTH_KEYS = ("max_steps", "epochs", "save_every", "keep_last", "log_every", "tensorboard", "validation",
                   "data.num_workers")


def main(args: argparse.Namespace) -> int:
    from medvid.config import parse_value
    from medvid.utils.runs import guard_run_folder

    overrides = {k[4:]: parse_value(v) for k, v in vars(args).items() if k.startswith("cfg:")}
    cfg = load_config(WanTrainConfig, args.config, overrides or None)
    for key, value in (("model_path", cfg.model_path), ("data.path", cfg.data.path), ("data.cache", cfg.data.cache)):
        if value and not Path(value).exists():
            raise ConfigError(f"{args.config}: {key}: {value} does not exist; fix the path or pass --{key} PATH")
    resume = guard_run_folder(args.out, args.resume, to_dict(cfg), run_length_keys=RUN_LENGTH_KEYS,
                              config_class=WanTrainConfig)
    train_wan(cfg, args.out, resume)
    return 0
