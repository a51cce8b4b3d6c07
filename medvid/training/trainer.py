"""The training loop: ``train(cfg, out_dir, resume=...) -> last checkpoint``.

What makes a run safe to leave alone for days:

* The data order is a function of (seed, epoch) only and the position inside the epoch is saved, so a
  resumed run sees exactly the batches the uninterrupted run would have seen. Timesteps and noise come
  from a dedicated generator drawn once per optimiser step for the whole global batch (every rank draws
  the same numbers and takes its rows), so 1 process, N processes and gradient accumulation all train
  on the same (x0, t, noise) triples.
* Checkpoints (``medvid.utils.checkpoint``) hold model, EMA, optimiser, step, epoch, data position,
  every rank's RNG states and the resolved config; they are written atomically by rank 0.
* A non-finite loss or gradient skips the step (reported); ``optim.max_nan_skips`` in a row stop the
  run with the last good checkpoint untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, default_collate

from medvid.config import save_yaml, to_dict
from medvid.diffusion import GaussianDiffusion
from medvid.training.builders import (
    build_dataset,
    build_model,
    build_vae,
    enable_grad_checkpointing,
    epoch_order,
    vae_spec_for,
)
from medvid.training.config import TrainConfig
from medvid.training.distributed import DistInfo, cleanup, init_distributed, max_across, sum_across
from medvid.training.ema import EMA
from medvid.utils.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from medvid.utils.host import fused_optimizer_ok, reuse_freed_memory
from medvid.utils.logging import LOGGER_NAME, get_logger, setup_logging

log = get_logger("train")


class TrainingDivergedError(RuntimeError):
    """The loss stayed non-finite for ``optim.max_nan_skips`` consecutive steps."""


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | Path, info: DistInfo):
        self.cfg, self.info, self.out = cfg, info, Path(out_dir)
        self.device = info.device
        if self.device.type == "cpu":
            reuse_freed_memory()  # large tensors are not page-faulted anew every step (medvid.utils.host)
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        root_logger = logging.getLogger(LOGGER_NAME)
        before = set(root_logger.handlers)
        setup_logging(self.out / "log.txt", rank=info.rank)
        # This run's own handlers (log.txt), removed when the run ends so a later run in the same
        # process does not write into this run's log.
        self.own_handlers = [h for h in root_logger.handlers if h not in before]
        # Before anything costly: are the alignment targets what the config claims (RAFT + DINO for
        # the paper's configs)? A mismatch stops here, or, when allowed, is recorded in the config.
        from medvid.flow.alignment import check_feature_recipe

        mismatch = check_feature_recipe(cfg.align)
        if mismatch:
            cfg.align.feature_mismatch = mismatch
            log.warning("=" * 20 + " NOT THE RECIPE'S FEATURES " + "=" * 20)
            log.warning("%s", mismatch)
        # Same initial weights on every rank (DDP also broadcasts them).
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)

        self.dataset = build_dataset(cfg)
        self.text = None
        context_dim = None
        if cfg.text.enabled:
            from medvid.t2v.text import build_text_conditioner

            self.text = build_text_conditioner(cfg.text, device=self.device)
            context_dim = self.text.context_dim
        model = build_model(cfg, context_dim).to(self.device)
        self.model_config = dict(getattr(model, "config", {"name": cfg.model.name, **cfg.model.overrides}))
        if cfg.model.grad_checkpointing and not enable_grad_checkpointing(model):
            log.warning("model.grad_checkpointing: %s has no blocks to checkpoint; ignored", type(model).__name__)
        self.model = model
        self.learn_sigma = bool(getattr(model, "learn_sigma", True))
        dc = cfg.diffusion
        self.diffusion = GaussianDiffusion(dc.num_timesteps, dc.beta_start, dc.beta_end, learn_sigma=self.learn_sigma,
                                           prediction=dc.prediction)
        # Largest |x_0| of the training latents seen so far: samplers clamp their x_0 estimates to it
        # (``sample.clip_denoised: auto``). Kept on the device; read only when a checkpoint is written.
        self.latent_absmax = torch.zeros((), device=self.device)
        self.ema = EMA(model, cfg.optim.ema_decay, cfg.optim.ema_warmup) if info.is_main else None
        oc = cfg.optim
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=oc.phases[0].lr, betas=tuple(oc.betas),
                                           weight_decay=oc.weight_decay, fused=fused_optimizer_ok(model))
        self.ddp = None
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.aligner = None
        if cfg.align.enabled:
            from medvid.flow.alignment import build_alignment

            self.aligner = build_alignment(cfg.align, model)
        self.vae = build_vae(cfg.data.vae, self.device) if cfg.data.source == "videos" else None
        self.use_bf16 = cfg.mixed_precision == "bf16" and self.device.type == "cuda"
        # Timesteps and noise for the global batch; identical on every rank.
        self.noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.text_gen = torch.Generator().manual_seed(cfg.seed + 2 + info.rank)
        self.step = 0
        self.epoch = 0
        self.batch_index = 0  # next global batch inside self.epoch
        self.nan_streak = 0
        self.writer = None
        self.last_saved_step = -1

    # -- schedule ----------------------------------------------------------------------------------
    def batches_per_epoch(self, epoch: int) -> int:
        return len(self.dataset) // self.cfg.optim.phase(epoch).batch_size

    def total_steps(self) -> int:
        total = sum(self.batches_per_epoch(e) for e in range(self.cfg.epochs))
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def micro_layout(self, batch_size: int) -> tuple[int, int]:
        """(micro batch per process, accumulation steps) for a global ``batch_size``."""
        world = self.info.world_size
        micro = self.cfg.optim.micro_batch_size or batch_size // world
        if micro < 1 or batch_size % (world * micro):
            raise ValueError(
                f"global batch {batch_size} is not divisible by {world} process(es) x micro batch {micro}; "
                "change optim.phases[].batch_size or optim.micro_batch_size"
            )
        return micro, batch_size // (world * micro)

    def lr_at(self, epoch: int, step: int) -> float:
        lr = self.cfg.optim.phase(epoch).lr
        w = self.cfg.optim.warmup_steps
        return lr * min(1.0, (step + 1) / w) if w else lr

    # -- data -> latents ------------------------------------------------------------------------------
    @torch.no_grad()
    def to_latents(self, batch: dict) -> tuple[torch.Tensor, int]:
        """A collated batch -> (x0 (B, F_v + N_img, C, h, w), num_images)."""
        if self.vae is None:
            x0 = batch["latents"].to(self.device, torch.float32, non_blocking=True)  # pinned by the loader
            n = batch.get("num_images", 0)
            n = torch.as_tensor(n)
            if n.numel() > 1 and not bool((n == n.flatten()[0]).all()):
                raise ValueError("items of one batch carry different num_images; re-encode with a fixed --num-images")
            return x0, int(n.flatten()[0]) if n.numel() else 0
        video = batch["video"].to(self.device)  # (B, T, 3, H, W), T = num_frames + flow frame
        frames = video[:, : self.cfg.data.num_frames]
        zv = self.vae.encode(frames)  # (B, f, C, h, w), already scaled
        images = batch.get("images")
        if images is None or images.shape[1] == 0:
            return zv.float(), 0
        zi = self.vae.encode_images(images.to(self.device))  # (B, N, C, h, w): each image alone
        return torch.cat([zv, zi], dim=1).float(), images.shape[1]

    def loader(self, micro_batches: list[list[int]]) -> DataLoader:
        # An own generator: creating the iterator must not draw from the global RNG (resume exactness).
        return DataLoader(self.dataset, batch_sampler=micro_batches, num_workers=self.cfg.data.num_workers,
                          collate_fn=default_collate, generator=torch.Generator().manual_seed(0),
                          pin_memory=self.device.type == "cuda")

    # -- checkpoints -------------------------------------------------------------------------------
    def gather_rng(self) -> list[dict]:
        mine = {"global": rng_state(), "text": self.text_gen.get_state()}
        if not self.info.distributed:
            return [mine]
        states: list[Any] = [None] * self.info.world_size
        dist.all_gather_object(states, mine)
        return states

    def save(self) -> Path | None:
        rngs = self.gather_rng()  # collective: every rank takes part
        absmax = round(float(max_across(self.latent_absmax, self.info)), 4)  # collective: every rank
        path = None
        if self.info.is_main:
            state = {
                "step": self.step, "epoch": self.epoch, "batch_index": self.batch_index,
                "nan_streak": self.nan_streak, "ema_updates": self.ema.num_updates,
                "world_size": self.info.world_size, "lr": self.optimizer.param_groups[0]["lr"],
                "model_config": self.model_config, "diffusion": self.diffusion.describe(),
                "vae": vae_spec_for(self.cfg), "learn_sigma": self.learn_sigma,
                "num_classes": int(getattr(self.model, "num_classes", 0) or 0),
                "latent_shape": list(self.latent_shape()),
                "latent_absmax": absmax,
            }
            if self.cfg.align.enabled and self.cfg.align.feature_mismatch:
                state["feature_mismatch"] = self.cfg.align.feature_mismatch
            groups = {
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": {"ranks": rngs, "noise": self.noise_gen.get_state()},
            }
            path = save_checkpoint(self.out, self.step, groups, state, to_dict(self.cfg), keep_last=self.cfg.keep_last)
            log.info("checkpoint %s", path)
        if self.info.distributed:
            dist.barrier()
        self.last_saved_step = self.step
        return path

    def close(self) -> None:
        root_logger = logging.getLogger(LOGGER_NAME)
        for h in self.own_handlers:
            root_logger.removeHandler(h)
            h.close()
        if self.writer:
            self.writer.close()

    def load(self, path: Path) -> None:
        groups, state, _ = load_checkpoint(path)
        try:
            self.model.load_state_dict(groups["model"])
        except RuntimeError as e:
            raise ValueError(
                f"checkpoint {path} does not fit the model of this config ({e}); resume with the config the run "
                "was started with (its config.yaml) or use a new --out"
            ) from e
        if self.ema is not None:
            self.ema.load_state_dict(groups["ema"], int(state.get("ema_updates", 0)))
        self.optimizer.load_state_dict(groups["optimizer"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_index, self.nan_streak = int(state["batch_index"]), int(state.get("nan_streak", 0))
        self.noise_gen.set_state(groups["rng"]["noise"])
        self.latent_absmax.fill_(float(state.get("latent_absmax", 0.0)))
        ranks = groups["rng"]["ranks"]
        if len(ranks) != self.info.world_size:
            log.warning("checkpoint was written by %d process(es), resuming with %d: RNG streams restart",
                        len(ranks), self.info.world_size)
        mine = ranks[self.info.rank] if self.info.rank < len(ranks) else ranks[0]
        set_rng_state(mine["global"])
        self.text_gen.set_state(mine["text"])
        log.info("resumed from %s (step %d, epoch %d, batch %d)", path, self.step, self.epoch, self.batch_index)

    # -- one optimiser step ------------------------------------------------------------------------
    def train_step(self, micro_iter, micro: int, accum: int, batch_size: int) -> dict[str, float] | None:
        """One optimiser step. The loss terms, finite checks and grad norm stay on the device; they are
        summed over ranks in one collective and read back in one host sync, which decides the skip."""
        model = self.ddp or self.model
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        world, rank = self.info.world_size, self.info.rank
        cuda = self.device.type == "cuda"
        t_all = noise_all = None
        # [loss, mse, vb, align, non-finite count, grad norm], accumulated on the device.
        stats = torch.zeros(6, dtype=torch.float64, device=self.device)
        for a in range(accum):
            batch = next(micro_iter)
            x0, num_images = self.to_latents(batch)
            self.latent_absmax = torch.maximum(self.latent_absmax, x0.detach().abs().max())
            if t_all is None:  # one draw per step for the global batch (see module docstring)
                t_all = self.diffusion.sample_timesteps(batch_size, self.noise_gen)
                noise_all = torch.randn((batch_size, *x0.shape[1:]), generator=self.noise_gen)
                if cuda:  # pinned, so the copies below do not wait for the host
                    t_all, noise_all = t_all.pin_memory(), noise_all.pin_memory()
            off = (a * world + rank) * micro
            t = t_all[off : off + micro].to(self.device, non_blocking=True)
            noise = noise_all[off : off + micro].to(self.device, non_blocking=True)
            kwargs: dict[str, Any] = {"num_images": num_images}
            if self.cfg.data.label_field:
                kwargs["y"] = torch.as_tensor(batch[self.cfg.data.label_field]).long().to(self.device)
            if self.text is not None:
                ctx, mask = self.text(list(batch[self.cfg.text.caption_field]), train=True, generator=self.text_gen)
                kwargs["context"], kwargs["context_mask"] = ctx.to(self.device), mask.to(self.device)
            sync = contextlib.nullcontext() if (self.ddp is None or a == accum - 1) else self.ddp.no_sync()
            amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.use_bf16 else contextlib.nullcontext()
            with sync:
                with amp:
                    x_t = self.diffusion.q_sample(x0, t, noise)
                    if self.aligner is not None:
                        out, feats = model(x_t, t, return_features=True, **kwargs)
                    else:
                        out = model(x_t, t, **kwargs)
                terms = self.diffusion.training_losses(out.float(), x0, x_t, t, noise)
                loss = terms["loss"].mean()
                la = torch.zeros((), device=loss.device)
                if self.aligner is not None:
                    la = self.aligner([f.float() for f in feats], batch, t, num_images)
                    loss = loss + la
                (loss / accum).backward()
            detached = torch.stack([loss.detach(), terms["mse"].detach().mean(), terms["vb"].detach().mean(),
                                    la.detach().float()]).double()
            stats[:4] += detached / accum
            stats[4] += (~torch.isfinite(loss.detach())).double()
        clip = self.cfg.optim.grad_clip if self.epoch >= self.cfg.optim.clip_from_epoch else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        stats[4] += (~torch.isfinite(grad_norm)).double()
        stats[5] = grad_norm.double()  # equal on every rank (DDP averaged the gradients), so sum / world is it
        # The one host sync of the step: every rank's terms and non-finite counts, summed in one collective.
        summed = sum_across(stats, self.info).tolist()
        if summed[4] > 0:
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return dict(zip(("loss", "mse", "vb", "align", "grad_norm"), (summed[i] / world for i in (0, 1, 2, 3, 5))))

    # -- the run -----------------------------------------------------------------------------------
    def run(self, resume: str | Path | None = None) -> Path:
        cfg = self.cfg
        if resume:
            path = latest_checkpoint(self.out) if str(resume) == "auto" else Path(resume)
            if path is not None:
                self.load(path)
            elif str(resume) != "auto":
                raise ValueError(f"--resume {resume}: no checkpoint there")
            else:
                log.info("--resume auto: no checkpoint in %s, starting fresh", self.out)
        self.trim_metrics()
        if self.info.is_main:
            # Leftovers of a process killed while saving (the checkpoints themselves are intact).
            for junk in [*self.out.glob(".tmp-step-*"), *self.out.glob(".old-step-*")]:
                shutil.rmtree(junk, ignore_errors=True)
            save_yaml(cfg, self.out / "config.yaml")
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tb"))
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("model %s: %.2fM parameters; %d clips; %d process(es) on %s%s", self.model_config.get("name"),
                 n_params / 1e6, len(self.dataset), self.info.world_size, self.device, " (bf16)" if self.use_bf16 else "")
        total = self.total_steps()
        bar = None
        if cfg.progress and self.info.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=min(self.step, total), desc="train", unit="step", dynamic_ncols=True)
        window = {"loss": 0.0, "mse": 0.0, "vb": 0.0, "align": 0.0, "grad_norm": 0.0, "n": 0}
        t_window, clips_window = time.perf_counter(), 0
        done = cfg.max_steps is not None and self.step >= cfg.max_steps
        while not done and self.epoch < cfg.epochs:
            phase = cfg.optim.phase(self.epoch)
            bs = phase.batch_size
            micro, accum = self.micro_layout(bs)
            n_batches = len(self.dataset) // bs
            if n_batches == 0:
                raise ValueError(
                    f"the dataset has {len(self.dataset)} clip(s), fewer than the batch size {bs} of epoch "
                    f"{self.epoch}; lower optim.phases[].batch_size or add data"
                )
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(self.epoch)
            order = epoch_order(len(self.dataset), cfg.seed, self.epoch).tolist()
            world, rank = self.info.world_size, self.info.rank
            micro_batches = []
            for b in range(self.batch_index, n_batches):
                g = order[b * bs : (b + 1) * bs]
                for a in range(accum):
                    off = (a * world + rank) * micro
                    micro_batches.append(g[off : off + micro])
            it = iter(self.loader(micro_batches)) if micro_batches else iter(())
            while self.batch_index < n_batches:
                lr = self.lr_at(self.epoch, self.step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                terms = self.train_step(it, micro, accum, bs)
                self.batch_index += 1
                if terms is None:
                    self.nan_streak += 1
                    log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row, limit %d)",
                                self.step, self.nan_streak, cfg.optim.max_nan_skips)
                    if self.writer:
                        self.writer.add_scalar("train/skipped_nonfinite", self.nan_streak, self.step)
                    if self.nan_streak >= cfg.optim.max_nan_skips:
                        last = latest_checkpoint(self.out)
                        raise TrainingDivergedError(
                            f"the loss was NaN/inf for {self.nan_streak} consecutive steps (epoch {self.epoch}, "
                            f"step {self.step}); stopped. The last good checkpoint is {last or 'none (none saved yet)'}. "
                            "Lower the learning rate (optim.phases[].lr), enable clipping earlier "
                            "(optim.clip_from_epoch) or check the data, then resume with --resume auto."
                        )
                    continue
                self.nan_streak = 0
                self.step += 1
                self.write_metrics({"step": self.step, "epoch": self.epoch, "lr": lr, **terms})
                clips_window += bs
                for k in ("loss", "mse", "vb", "align", "grad_norm"):
                    window[k] += terms[k]
                window["n"] += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{terms['loss']:.4f}", epoch=self.epoch, refresh=False)
                if self.step % cfg.log_every == 0:
                    self.log_window(window, clips_window / (time.perf_counter() - t_window), lr)
                    window = dict.fromkeys(window, 0.0)
                    window["n"] = 0
                    t_window, clips_window = time.perf_counter(), 0
                if self.step % cfg.ckpt_every == 0:
                    self.save()
                if cfg.sample.every and self.step % cfg.sample.every == 0:
                    self.write_samples()
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    done = True
                    break
            if not done:
                self.epoch += 1
                self.batch_index = 0
        if bar is not None:
            bar.close()
        if self.last_saved_step != self.step:
            self.save()
        final = latest_checkpoint(self.out)
        log.info("training done: step %d, epoch %d, checkpoint %s", self.step, self.epoch, final)
        return final

    def write_metrics(self, row: dict) -> None:
        """One JSON line per optimiser step in OUT/metrics.jsonl (rank 0)."""
        if self.info.is_main:
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    def trim_metrics(self) -> None:
        """After a resume, drop lines of steps the checkpoint does not contain (a crash after it)."""
        path = self.out / "metrics.jsonl"
        if not self.info.is_main or not path.is_file():
            return
        keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and json.loads(ln)["step"] <= self.step]
        path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")

    def log_window(self, w: dict, clips_per_s: float, lr: float) -> None:
        n = max(w["n"], 1)
        msg = {k: w[k] / n for k in ("loss", "mse", "vb", "align", "grad_norm")}
        log.info("step %d epoch %d | loss %.4f mse %.4f vb %.4f align %.4f | grad %.3f lr %.2e | %.2f clips/s",
                 self.step, self.epoch, msg["loss"], msg["mse"], msg["vb"], msg["align"], msg["grad_norm"], lr, clips_per_s)
        if self.writer:
            for k, v in msg.items():
                self.writer.add_scalar(f"train/{k}", v, self.step)
            self.writer.add_scalar("train/lr", lr, self.step)
            self.writer.add_scalar("train/clips_per_s", clips_per_s, self.step)
            self.writer.add_scalar("train/epoch", self.epoch, self.step)

    def write_samples(self) -> None:
        """Sample videos from the EMA weights into OUT/samples/step-XXXXXXXX (rank 0; RNG untouched)."""
        if not self.info.is_main:
            return
        from medvid.sampling.generate import SampleSpec, generate_to_dir

        sc = self.cfg.sample
        from medvid.sampling.generate import resolve_clip

        clip = resolve_clip(sc.clip_denoised, float(self.latent_absmax))
        spec = SampleSpec(num=sc.num, sampler=sc.sampler, steps=sc.steps, eta=sc.eta, cfg_scale=sc.cfg_scale,
                          seed=self.cfg.seed, fps=sc.fps, caption=sc.caption or None, clip_denoised=clip)
        try:
            generate_to_dir(self.ema.model, self.diffusion, self.latent_shape(), spec,
                            self.out / "samples" / f"step-{self.step:08d}", vae=self.sample_vae(),
                            text=self.text, num_classes=int(getattr(self.model, "num_classes", 0) or 0))
        except Exception as e:  # a sampling failure must never kill a long run
            log.warning("sampling at step %d failed: %s", self.step, e)

    def latent_shape(self) -> tuple[int, ...]:
        """(F_video, C, h, w) of one training latent, without the joint-training images."""
        if not hasattr(self, "_latent_shape"):
            item = self.dataset[0]
            if "latents" in item:
                f = item["latents"].shape[0] - int(item.get("num_images", 0))
                self._latent_shape = (f, *item["latents"].shape[1:])
            else:
                with torch.no_grad(), torch.random.fork_rng(devices=[]):  # leave the training RNG alone
                    z = self.vae.encode(item["video"][None, : self.cfg.data.num_frames].to(self.device))
                self._latent_shape = tuple(z.shape[1:])
        return self._latent_shape

    def sample_vae(self):
        if self.vae is not None:
            return self.vae
        if not hasattr(self, "_sample_vae"):
            spec = vae_spec_for(self.cfg)
            self._sample_vae = None
            if spec:
                try:
                    self._sample_vae = build_vae(spec, self.device)
                except Exception as e:
                    log.warning("cannot load the VAE %s for sample videos (%s): writing latents only", spec, e)
        return self._sample_vae


def train(cfg: TrainConfig, out_dir: str | Path, resume: str | Path | None = None) -> Path:
    """Train per ``cfg`` into ``out_dir``; ``resume="auto"`` continues from its latest checkpoint.

    Returns the final checkpoint folder. Under torchrun every process calls this; rank 0 writes.
    """
    info = init_distributed(cfg.device)
    trainer = None
    try:
        trainer = Trainer(cfg, out_dir, info)
        return trainer.run(resume)
    finally:
        if trainer is not None:
            trainer.close()
        cleanup(info)
