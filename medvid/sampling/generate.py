"""Latents -> files: sample in batches, decode through the run's VAE, write mp4 + gif + npz per video
and one PNG contact sheet. Memory stays bounded: one batch of latents and videos at a time, and the
contact sheet keeps only a few downscaled frames of its first rows.

``frames=1`` samples still images: one latent frame per sample, given to the model as a joint-
training image (``num_images=1``) and decoded alone, written as ``image_XXXX.png`` (no contact
sheet, so the folder is an image set for ``medvid evaluate``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medvid.diffusion import GaussianDiffusion, sample
from medvid.utils.logging import get_logger
from medvid.utils.video import contact_sheet, to_uint8, write_gif, write_mp4

log = get_logger("sample")

SHEET_ROWS = 16  # videos shown on the contact sheet
SHEET_FRAMES = 8  # frames per row


@dataclass
class SampleSpec:
    num: int = 4
    sampler: str = "ddim"
    steps: int = 250
    eta: float = 0.0
    cfg_scale: float = 1.0
    seed: int = 0
    batch_size: int = 4
    fps: float = 8.0
    caption: str | None = None  # text-conditioned models
    negative_prompt: str | None = None
    class_id: int | None = None  # class-conditional models (None: cycle through the classes)
    clip_denoised: float | None = None  # clamp each x_0 estimate to [-c, c] (the training latents' range)


def resolve_clip(setting: str | float | None, latent_absmax: float | None) -> float | None:
    """``--clip-denoised`` / ``sample.clip_denoised`` -> a bound or None.

    "auto": the largest |latent| seen in training (a checkpoint's ``latent_absmax``; None when the
    checkpoint predates it), "none": no clamp, a number: that bound."""
    if setting is None or str(setting).lower() == "none":
        return None
    if str(setting).lower() == "auto":
        return float(latent_absmax) if latent_absmax else None
    try:
        c = float(setting)
    except ValueError:
        raise ValueError(f"clip_denoised={setting!r}: use auto, none or a positive number") from None
    if not c > 0:
        raise ValueError(f"clip_denoised={setting!r}: use auto, none or a positive number")
    return c


def _conditioning(spec: SampleSpec, start: int, b: int, device, text=None, num_classes: int = 0, num_images: int = 0):
    """(cond kwargs, uncond kwargs or None) for videos start..start+b-1."""
    cond: dict[str, Any] = {"num_images": num_images}
    uncond: dict[str, Any] | None = None
    if num_classes > 0:
        ids = [spec.class_id if spec.class_id is not None else (start + i) % num_classes for i in range(b)]
        if any(not 0 <= i < num_classes for i in ids):
            raise ValueError(f"class id {spec.class_id} out of range: the model has {num_classes} classes (0..{num_classes - 1})")
        cond["y"] = torch.tensor(ids, device=device)
        uncond = {"num_images": num_images, "y": torch.full((b,), num_classes, device=device)}  # null label
    if text is not None:
        ctx, mask = text.encode([spec.caption or ""] * b)
        cond["context"], cond["context_mask"] = ctx.to(device), mask.to(device)
        nctx, nmask = text.negative(spec.negative_prompt, b)
        uncond = {"num_images": num_images, "context": nctx.to(device), "context_mask": nmask.to(device)}
    return cond, uncond


@torch.no_grad()
def generate_to_dir(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    latent_shape: tuple[int, ...],
    spec: SampleSpec,
    out_dir: str | Path,
    vae=None,
    text=None,
    num_classes: int = 0,
    device: torch.device | str | None = None,
    meta: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Sample ``spec.num`` videos of latent shape (F, C, h, w) into ``out_dir``; returns the mp4 paths.

    Video i uses a generator seeded with (seed, i) only, so it does not depend on the batch size.
    Without a ``vae`` the latents are written to ``latents_XXXX.npz`` and no videos.
    ``progress(k, n)`` is called after each denoising step of each batch.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    still = latent_shape[0] == 1  # one latent frame: a still image
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    paths: list[Path] = []
    sheet_rows: list[np.ndarray] = []
    for start in range(0, spec.num, spec.batch_size):
        b = min(spec.batch_size, spec.num - start)
        # One generator per video (initial noise, then DDPM / eta > 0 noise): results do not depend on
        # the batch size.
        gens = [torch.Generator().manual_seed(spec.seed * 1_000_003 + start + i) for i in range(b)]
        cond, uncond = _conditioning(spec, start, b, device, text, num_classes, num_images=int(still))
        model_fn = lambda x, t: model(x, t, **cond)  # noqa: E731
        uncond_fn = (lambda x, t: model(x, t, **uncond)) if uncond is not None else None  # noqa: E731
        z = sample(model_fn, (b, *latent_shape), diffusion, sampler=spec.sampler, steps=spec.steps, eta=spec.eta,
                   cfg_scale=spec.cfg_scale, uncond_fn=uncond_fn if spec.cfg_scale != 1.0 else None,
                   generator=gens, device=device, progress=progress, clip_denoised=spec.clip_denoised)
        for i in range(b):
            k = start + i
            if vae is None:
                np.savez_compressed(out_dir / f"latents_{k:04d}.npz", latents=z[i].float().cpu().numpy())
                continue
            decode = vae.decode_images if still else vae.decode  # an image is decoded alone
            video = decode(z[i : i + 1].to(device))[0].float().clamp(-1, 1)  # (T, 3, H, W) in [-1, 1]
            frames = to_uint8(video)  # (T, H, W, 3)
            if still:
                from PIL import Image

                Image.fromarray(frames[0]).save(out_dir / f"image_{k:04d}.png")
                paths.append(out_dir / f"image_{k:04d}.png")
                continue
            paths.append(write_mp4(frames, out_dir / f"video_{k:04d}.mp4", fps=spec.fps))
            write_gif(frames, out_dir / f"video_{k:04d}.gif", fps=spec.fps)
            np.savez_compressed(out_dir / f"video_{k:04d}.npz", frames=frames, latents=z[i].float().cpu().numpy())
            if len(sheet_rows) < SHEET_ROWS:
                idx = np.linspace(0, len(frames) - 1, min(SHEET_FRAMES, len(frames))).round().astype(int)
                sheet_rows.append(frames[idx])
        log.info("sampled %d/%d", start + b, spec.num)
    if sheet_rows:
        contact_sheet(sheet_rows, out_dir / "contact_sheet.png", max_frames=SHEET_FRAMES)
    record = {**spec.__dict__, "latent_shape": list(latent_shape), **(meta or {})}
    (out_dir / "samples.json").write_text(json.dumps(record, indent=1, default=str))
    model.train(was_training)
    return paths


@dataclass
class SamplingModel:
    """A `medvid train` checkpoint loaded for sampling: everything :func:`generate_to_dir` needs."""

    model: torch.nn.Module
    diffusion: GaussianDiffusion
    latent_shape: tuple[int, ...]
    vae: Any
    text: Any  # TextConditioner of a text-conditioned run, else None
    num_classes: int
    device: torch.device
    default_steps: int
    default_fps: float
    meta: dict  # checkpoint, step, weights: recorded beside the videos


def load_sampling_model(checkpoint: str | Path, use_ema: bool = True, device: str = "auto",
                        vae: str | Any | None = None) -> SamplingModel:
    """Rebuild a training checkpoint (run folder or ``step-*`` folder) for sampling: the EMA weights
    unless ``use_ema=False``, the VAE the run was trained with (``vae`` overrides it with a path/name
    or a loaded VAE) and, for a text-conditioned run, its text encoder."""
    from medvid.training.distributed import resolve_device
    from medvid.models import create_model_from_config
    from medvid.training.builders import build_vae
    from medvid.utils.checkpoint import load_checkpoint

    weights = "ema" if use_ema else "model"
    groups, state, config = load_checkpoint(checkpoint, groups=[weights])
    if "model_config" not in state or "latent_shape" not in state:
        raise ValueError(f"{checkpoint} is not a `medvid train` checkpoint (no model_config / latent_shape in state.json)")
    if weights not in groups:
        raise ValueError(f"{checkpoint} holds no {weights!r} weights (try --no-ema)")
    dev = resolve_device(device)
    model = create_model_from_config(state["model_config"])
    model.load_state_dict(groups[weights])
    model.to(dev).eval()
    d = state.get("diffusion", {})
    diffusion = GaussianDiffusion.from_description(d, learn_sigma=bool(state.get("learn_sigma", True)))
    sample_cfg = (config or {}).get("sample", {})
    text = None
    text_cfg = (config or {}).get("text", {})
    if text_cfg.get("enabled"):
        from medvid.config import from_dict
        from medvid.t2v.text import build_text_conditioner
        from medvid.training.config import TextConfig

        text = build_text_conditioner(from_dict(TextConfig, text_cfg, where="checkpoint text config"), device=dev)
    spec_vae = vae if vae is not None else state.get("vae")
    if spec_vae is None:
        raise ValueError(
            f"{checkpoint} does not name the VAE its latents were encoded with; pass --vae PATH "
            "(the VAE folder or name used by `medvid encode`)"
        )
    vae_obj = spec_vae if hasattr(spec_vae, "decode") else build_vae(spec_vae, dev)
    # The sidecar names the checkpoint so the evaluation report can find the run's curves and config.
    meta = {"checkpoint": str(Path(checkpoint).resolve()), "step": state.get("step"), "weights": weights,
            "latent_absmax": state.get("latent_absmax")}
    return SamplingModel(model, diffusion, tuple(state["latent_shape"]), vae_obj, text, int(state.get("num_classes", 0)),
                         dev, int(sample_cfg.get("steps", 250)), float(sample_cfg.get("fps", 8.0)), meta)


def sample_videos(
    checkpoint: str | Path,
    num: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    sampler: str = "ddim",
    steps: int | None = None,
    cfg_scale: float = 1.0,
    eta: float = 0.0,
    batch_size: int = 4,
    use_ema: bool = True,
    device: str = "auto",
    caption: str | None = None,
    negative_prompt: str | None = None,
    class_id: int | None = None,
    vae: str | Any | None = None,
    fps: float | None = None,
    frames: int | None = None,
    clip_denoised: str | float | None = "auto",
) -> list[Path]:
    """Sample ``num`` videos from a training checkpoint (run folder or ``step-*`` folder).

    ``frames=1`` samples still images (PNG); other values are refused (the latent length is the
    one the model was trained on). ``clip_denoised``: "auto" clamps every x_0 estimate to the
    largest |latent| the run trained on (recorded in the checkpoint), "none" never, a number to it.

    Uses the EMA weights unless ``use_ema=False`` and decodes through the VAE the run was trained
    with (recorded in the checkpoint; ``vae`` overrides it with a path/name or a loaded VAE).
    ``steps`` defaults to the run's ``sample.steps`` (250, the paper's DDIM setting).
    Returns the mp4 paths; ``out_dir`` also gets gif + npz per video and ``contact_sheet.png``.
    """
    if num < 1:
        raise ValueError(f"--num {num}: ask for at least one video")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be >= 1")
    if frames not in (None, 1):
        raise ValueError(f"--frames {frames}: a MedSora run samples the clip length it was trained on; "
                         "only --frames 1 (a still image) can be asked for")
    m = load_sampling_model(checkpoint, use_ema, device, vae)
    spec = SampleSpec(num=num, sampler=sampler, steps=steps or m.default_steps, eta=eta,
                      clip_denoised=resolve_clip(clip_denoised, m.meta.get("latent_absmax")),
                      cfg_scale=cfg_scale, seed=seed, batch_size=batch_size,
                      fps=fps or m.default_fps, caption=caption,
                      negative_prompt=negative_prompt, class_id=class_id)
    log.info("sampling %d video(s) from %s (%s weights, step %s) with %s-%d, cfg %.2f", num, checkpoint,
             m.meta["weights"], m.meta["step"], sampler, spec.steps, cfg_scale)
    shape = (1, *m.latent_shape[1:]) if frames == 1 else m.latent_shape
    return generate_to_dir(m.model, m.diffusion, shape, spec, out_dir, vae=m.vae, text=m.text,
                           num_classes=m.num_classes, device=m.device, meta=m.meta)
