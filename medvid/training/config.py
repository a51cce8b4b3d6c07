"""The training run's configuration: dataclasses, validated on construction, serialised to YAML.

Every field is also a command-line override (``medvid train --config F --optim.ema_decay 0.999``).
The paper's recipe (MedSora section 4.1) is the default: AdamW, lr 1e-3 with batch 16 for two epochs,
then lr 1e-4 with batch 2; weight decay 0; EMA 0.9999; gradient clipping at norm 1 from epoch 25;
1000-step linear diffusion with learned variance; DDIM-250 samples from the EMA weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from medvid.flow.alignment import AlignConfig

__all__ = ["AlignConfig", "DataConfig", "DiffusionConfig", "ModelConfig", "OptimConfig", "Phase",
           "SampleConfig", "TextConfig", "TrainConfig"]


@dataclass
class ModelConfig:
    """Backbone: a ``medvid.models.create_model`` preset plus constructor overrides."""

    name: str = "medsora-b"
    overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {depth: 2, hidden_size: 64}
    grad_checkpointing: bool = False  # recompute block activations in backward (less memory, ~30% slower)


@dataclass
class DataConfig:
    """Where clips come from: cached latents (``medvid encode``) or videos encoded on the fly."""

    source: Literal["latents", "videos"] = "latents"
    latent_dir: str | None = None  # source=latents: the `medvid encode` output folder
    manifest: str | None = None  # source=videos: a `medvid prepare` manifest.jsonl
    vae: str | None = None  # source=videos: path/name for medvid.latents.load_vae
    split: str = "train"
    num_frames: int = 16
    frame_stride: int = 3
    resolution: int = 128
    num_images: int = 8  # joint image-video training: single frames appended per clip (0 = off)
    hflip: bool = True
    label_field: str | None = None  # class-conditional training: the item key holding an int label
    num_workers: int = 0

    def __post_init__(self):
        if self.source == "latents" and not self.latent_dir:
            raise ValueError("data.source=latents needs data.latent_dir (a `medvid encode` output folder)")
        if self.source == "videos" and not (self.manifest and self.vae):
            raise ValueError("data.source=videos needs data.manifest (manifest.jsonl) and data.vae (VAE path/name)")
        if self.num_frames < 1 or self.resolution < 8 or self.num_images < 0 or self.num_workers < 0:
            raise ValueError(
                f"data: num_frames={self.num_frames} (>= 1), resolution={self.resolution} (>= 8), "
                f"num_images={self.num_images} (>= 0), num_workers={self.num_workers} (>= 0)"
            )


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # What the network predicts: "eps" (the paper, DiT) or "v" (velocity, Salimans & Ho 2022), whose
    # x_0 estimate is not amplified by 1/sqrt(a_bar) at high t (see medvid.diffusion.gaussian).
    prediction: Literal["eps", "v"] = "eps"


@dataclass
class Phase:
    """One stage of the phased schedule: used while ``epoch < until_epoch`` (None: to the end)."""

    until_epoch: int | None = None
    lr: float = 1e-4
    batch_size: int = 2  # global batch (all processes, all accumulation steps)


@dataclass
class OptimConfig:
    phases: list[Phase] = field(
        default_factory=lambda: [Phase(until_epoch=2, lr=1e-3, batch_size=16), Phase(until_epoch=None, lr=1e-4, batch_size=2)]
    )
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear LR warm-up at the start of the run (0 = none, as in the paper)
    micro_batch_size: int | None = None  # per process per forward; None = batch / world size (no accumulation)
    grad_clip: float = 1.0  # max global grad norm once epoch >= clip_from_epoch
    clip_from_epoch: int = 25
    ema_decay: float = 0.9999
    ema_warmup: bool = False  # decay min(decay, (1+n)/(10+n)): lets short runs' EMA move (not in the paper)
    max_nan_skips: int = 5  # consecutive non-finite losses before the run stops

    def __post_init__(self):
        if not self.phases:
            raise ValueError("optim.phases is empty: give at least one {until_epoch, lr, batch_size}")
        last = -1
        for i, p in enumerate(self.phases):
            if p.lr <= 0 or p.batch_size < 1:
                raise ValueError(f"optim.phases[{i}]: lr must be > 0 and batch_size >= 1, got {p}")
            if p.until_epoch is None and i != len(self.phases) - 1:
                raise ValueError(f"optim.phases[{i}]: only the last phase may have until_epoch: null")
            if p.until_epoch is not None:
                if p.until_epoch <= last:
                    raise ValueError(f"optim.phases: until_epoch must increase, got {p.until_epoch} after {last}")
                last = p.until_epoch
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay={self.ema_decay}: must be in [0, 1)")
        if self.max_nan_skips < 1 or self.grad_clip <= 0:
            raise ValueError("optim.max_nan_skips must be >= 1 and optim.grad_clip > 0")

    def phase(self, epoch: int) -> Phase:
        for p in self.phases:
            if p.until_epoch is None or epoch < p.until_epoch:
                return p
        return self.phases[-1]  # past the last until_epoch: keep its settings


@dataclass
class TextConfig:
    """Text conditioning (medvid.t2v.text); off by default (MedSora is unconditional)."""

    enabled: bool = False
    encoder: Literal["t5", "clip"] = "t5"
    encoder_path: str | None = None
    caption_field: str = "caption"
    dropout: float = 0.1  # caption dropout to the null text, for classifier-free guidance
    max_length: int = 77
    cache_dir: str | None = None


@dataclass
class SampleConfig:
    """Videos written while training (``OUT/samples/step-XXXXXXXX/``) and ``medvid sample`` defaults."""

    every: int = 0  # steps between sample videos (0 = never during training)
    num: int = 2
    sampler: Literal["ddim", "ddpm", "dpm++"] = "ddim"
    steps: int = 250
    eta: float = 0.0
    cfg_scale: float = 1.0
    fps: float = 8.0
    caption: str = ""  # text-conditioned runs: the prompt for the training-time samples
    # Clamp every x_0 estimate of the sampler: "auto" = to the largest |latent| seen in training
    # (recorded in each checkpoint), "none" = never, or a number.
    clip_denoised: str = "auto"


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(latent_dir="latents"))
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    text: TextConfig = field(default_factory=TextConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    seed: int = 0
    epochs: int = 100
    max_steps: int | None = None  # stop after this many optimiser steps (whichever comes first)
    log_every: int = 10
    ckpt_every: int = 1000  # steps between checkpoints (a final one is always written)
    keep_last: int | None = 3  # older checkpoints are deleted (None keeps all)
    mixed_precision: Literal["no", "bf16"] = "bf16"  # bf16 autocast on CUDA only; CPU runs stay fp32
    device: str = "auto"  # auto | cpu | cuda
    tensorboard: bool = True
    progress: bool = True  # tqdm progress bar with ETA (rank 0)

    def __post_init__(self):
        if self.epochs < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise ValueError(f"epochs={self.epochs} and max_steps={self.max_steps} must be >= 1")
        if self.ckpt_every < 1 or self.log_every < 1:
            raise ValueError("ckpt_every and log_every must be >= 1")
