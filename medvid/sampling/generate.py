"""Latents -> files: sample in batches, decode through the run's VAE, write mp4 + gif + npz per video
and one PNG contact sheet. Memory stays bounded: one batch of latents and videos at a time, and the
contact sheet keeps only a few downscaled frames of its first rows.

``frames=1`` samples still images: one latent frame per sample, given to the model as a joint-
training image (``num_images=1``) and decoded alone, written as ``image_XXXX.png`` (no contact
sheet, so the folder is an image set for ``medvid evaluate``).

Many processes (``medvid sample`` under ``torchrun --nproc-per-node N``, or ``--shard I/N`` jobs):
rank r samples videos r, r + N, ...; video k's noise comes from a generator seeded with (seed, k)
only, so it is the same video whichever rank makes it. Each video's ``.npz`` is written last and
atomically, so a rerun skips finished videos; rank 0 (or ``--merge``) writes the contact sheet
and ``samples.json`` once all are there.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medvid.data.manifest import write_json
from medvid.diffusion import GaussianDiffusion, sample
from medvid.training.config import SampleConfig as SampleConfigDefaults
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
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere; or bf16 / fp32
    clip_denoised: float | None = None  # clamp each x_0 estimate to [-c, c] (the training latents' range)


def _autocast(precision: str, device: torch.device):
    """The network's precision while sampling; the sampler's arithmetic stays fp32."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision={precision!r}: choose auto, bf16 or fp32")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _batched_guidance(model, cond: dict[str, Any], uncond: dict[str, Any], precision: str, device):
    """(out_c, out_u) from one forward over [x; x] with the conditional and unconditional inputs
    stacked, or None when they cannot be stacked (tensors whose shapes differ beyond the batch)."""
    merged: dict[str, Any] = {}
    for k in cond.keys() | uncond.keys():
        c, u = cond.get(k), uncond.get(k)
        if isinstance(c, torch.Tensor) and isinstance(u, torch.Tensor) and c.shape[1:] == u.shape[1:]:
            merged[k] = torch.cat([c, u])
        elif not isinstance(c, torch.Tensor) and not isinstance(u, torch.Tensor) and c == u:
            merged[k] = c
        else:
            return None

    def joint(x, t):
        with _autocast(precision, device):
            out = model(torch.cat([x, x]), torch.cat([t, t]), **merged).to(x.dtype)
        return out.chunk(2)

    return joint



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


def _conditioning(spec: SampleSpec, ks: list[int], device, text=None, num_classes: int = 0, num_images: int = 0):
    """(cond kwargs, uncond kwargs or None) for videos ``ks``."""
    b = len(ks)
    cond: dict[str, Any] = {"num_images": num_images}
    uncond: dict[str, Any] | None = None
    if num_classes > 0:
        ids = [spec.class_id if spec.class_id is not None else k % num_classes for k in ks]
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
    sharding=None,
    resume: bool = False,
) -> list[Path]:
    """Sample ``spec.num`` videos of latent shape (F, C, h, w) into ``out_dir``; returns the mp4 paths.

    Video i uses a generator seeded with (seed, i) only, so it does not depend on the batch size.
    Without a ``vae`` the latents are written to ``latents_XXXX.npz`` and no videos.
    ``progress(k, n)`` is called after each denoising step of each batch. ``sharding``
    (``medvid.utils.sharding.Sharding``): sample this rank's videos only; the merging rank writes
    the contact sheet and ``samples.json`` once every rank is done. ``resume``: skip videos whose
    ``.npz`` is there (and refuse a folder sampled with other settings).
    """
    from medvid.utils.sharding import Sharding

    sh = sharding or Sharding()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    still = latent_shape[0] == 1  # one latent frame: a still image
    device = torch.device(device) if device is not None else next(model.parameters()).device
    record = {**spec.__dict__, "latent_shape": list(latent_shape), **(meta or {})}
    if resume:
        _check_same_settings(out_dir / "samples.json", record)
        write_json(out_dir / "samples.json", record, default=str)
    ks = [k for k in sh.take(range(spec.num)) if not (resume and _finished(out_dir, k, vae, still))]
    was_training = model.training
    model.eval()
    paths: list[Path] = []
    for start in range(0, len(ks), spec.batch_size):
        chunk = ks[start : start + spec.batch_size]
        b = len(chunk)
        # One generator per video (initial noise, then DDPM / eta > 0 noise): results do not depend on
        # the batch size, nor on which rank samples the video.
        gens = [torch.Generator().manual_seed(spec.seed * 1_000_003 + k) for k in chunk]
        cond, uncond = _conditioning(spec, chunk, device, text, num_classes, num_images=int(still))

        def call(kwargs):
            def fn(x, t):
                with _autocast(spec.precision, device):
                    return model(x, t, **kwargs).to(x.dtype)
            return fn

        model_fn = call(cond)
        uncond_fn = call(uncond) if uncond is not None else None
        guidance = spec.cfg_scale != 1.0 and uncond is not None
        # Classifier-free guidance as one batched forward (conditional and unconditional halves).
        joint_fn = _batched_guidance(model, cond, uncond, spec.precision, device) if guidance else None
        z = sample(model_fn, (b, *latent_shape), diffusion, sampler=spec.sampler, steps=spec.steps, eta=spec.eta,
                   cfg_scale=spec.cfg_scale, uncond_fn=uncond_fn if spec.cfg_scale != 1.0 else None,
                   generator=gens, device=device, progress=progress, clip_denoised=spec.clip_denoised,
                   joint_fn=joint_fn)
        for i, k in enumerate(chunk):
            if vae is None:
                _savez(out_dir / f"latents_{k:04d}.npz", latents=z[i].float().cpu().numpy())
                continue
            decode = vae.decode_images if still else vae.decode  # an image is decoded alone
            video = decode(z[i : i + 1].to(device))[0].float().clamp(-1, 1)  # (T, 3, H, W) in [-1, 1]
            frames = to_uint8(video)  # (T, H, W, 3)
            if still:
                from PIL import Image

                tmp = out_dir / f".image_{k:04d}.png.tmp{os.getpid()}"
                Image.fromarray(frames[0]).save(tmp, format="PNG")
                os.replace(tmp, out_dir / f"image_{k:04d}.png")
                paths.append(out_dir / f"image_{k:04d}.png")
                continue
            paths.append(write_mp4(frames, out_dir / f"video_{k:04d}.mp4", fps=spec.fps))
            write_gif(frames, out_dir / f"video_{k:04d}.gif", fps=spec.fps)
            # last, and atomically: it marks a finished video
            _savez(out_dir / f"video_{k:04d}.npz", frames=frames, latents=z[i].float().cpu().numpy(),
                   fps=np.asarray(spec.fps))
        log.info("sampled %d/%d", start + b, len(ks))
    model.train(was_training)

    def merged() -> list[Path]:
        if vae is not None and not still:
            # the first rows of the sheet, read back from the npz files whichever rank wrote them
            sheet_rows = []
            for k in range(min(SHEET_ROWS, spec.num)):
                frames = np.load(out_dir / f"video_{k:04d}.npz")["frames"]
                idx = np.linspace(0, len(frames) - 1, min(SHEET_FRAMES, len(frames))).round().astype(int)
                sheet_rows.append(frames[idx])
            contact_sheet(sheet_rows, out_dir / "contact_sheet.png", max_frames=SHEET_FRAMES)
        write_json(out_dir / "samples.json", record, default=str)
        if not sh.sharded and not resume:
            return paths
        return [p for k in range(spec.num) if (p := _output(out_dir, k, vae, still)).is_file()]

    return sh.finish(merged, paths)


def _output(out_dir: Path, k: int, vae, still: bool) -> Path:
    return out_dir / (f"latents_{k:04d}.npz" if vae is None else f"image_{k:04d}.png" if still else f"video_{k:04d}.mp4")


def _finished(out_dir: Path, k: int, vae, still: bool) -> bool:
    """Video ``k`` is complete: its last-written file is there (written atomically)."""
    return (out_dir / (f"video_{k:04d}.npz" if vae is not None and not still else _output(out_dir, k, vae, still).name)).is_file()


def _savez(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)


def _check_same_settings(path: Path, record: dict) -> None:
    """Resuming into a folder sampled with other settings would mix two sets of videos."""
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    keys = [k for k in record if k not in ("num", "batch_size", "checkpoint")]
    diff = [k for k in keys if json.loads(json.dumps(record[k], default=str)) != old.get(k)]
    if diff:
        raise ValueError(f"{path.parent}: holds samples made with other settings ({', '.join(diff)} differ, see "
                         f"{path}); use a new --out folder or delete this one")


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


def load_weights_with_fallback(checkpoint: str | Path, weights: str) -> tuple[dict, dict, dict | None, Path]:
    """``load_checkpoint(checkpoint, [weights])`` that survives a damaged latest checkpoint.

    Given a run folder whose latest checkpoint is damaged (a torn ``ema.safetensors``, say), the newest
    earlier checkpoint that loads is used, with a warning. Given a damaged ``step-*`` folder, the error
    says which flag or folder would work (``--no-ema``, an earlier step). Returns the folder used too.
    """
    from medvid.utils.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint

    path = Path(checkpoint)
    if not path.exists():
        raise CheckpointError(f"--checkpoint {path}: no such folder; pass a `medvid train --out` folder or one of "
                              "its step-* folders")
    explicit = (path / "state.json").is_file()
    target = path if explicit else latest_checkpoint(path)
    if target is None:
        raise CheckpointError(f"--checkpoint {path}: holds no checkpoint (no state.json, no complete step-* folder); "
                              "pass a `medvid train --out` folder or one of its step-* folders")
    try:
        groups, state, config = load_checkpoint(target, groups=[weights])
        return groups, state, config, target
    except CheckpointError as e:
        error = e
    run = target.parent
    earlier = [c for c in list_checkpoints(run) if c.resolve() != target.resolve()]
    earlier = [c for c in earlier if c.name < target.name][::-1]
    good = None
    for cand in earlier:
        try:
            loaded = load_checkpoint(cand, groups=[weights])
        except CheckpointError:
            continue
        if not explicit:
            log.warning("%s; falling back to the previous good checkpoint %s", error, cand)
            return (*loaded, cand)
        good = cand
        break
    hints = []
    if weights == "ema":
        try:
            load_checkpoint(target, groups=["model"])
            hints.append(f"--no-ema samples the raw weights of {target.name}")
        except CheckpointError:
            pass
    if good is not None:
        hints.append(f"--checkpoint {good} (the previous good step)")
    if not hints:
        hints.append("no other checkpoint of this run loads; resume training from an intact one or retrain")
    raise CheckpointError(f"{error}; {' or '.join(hints)}") from error


def load_sampling_model(checkpoint: str | Path, use_ema: bool = True, device: str = "auto",
                        vae: str | Any | None = None) -> SamplingModel:
    """Rebuild a training checkpoint (run folder or ``step-*`` folder) for sampling: the EMA weights
    unless ``use_ema=False``, the VAE the run was trained with (``vae`` overrides it with a path/name
    or a loaded VAE) and, for a text-conditioned run, its text encoder."""
    from medvid.training.distributed import resolve_device
    from medvid.models import create_model_from_config
    from medvid.training.builders import build_vae

    weights = "ema" if use_ema else "model"
    groups, state, config, checkpoint = load_weights_with_fallback(checkpoint, weights)
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
    # The sidecar names the checkpoint so the evaluation report can find the run's curves and config, and
    # records the clip protocol (frames, stride, size, manifest) so `medvid evaluate` cuts real clips alike.
    from medvid.utils.settings import run_protocol

    protocol = run_protocol(config)
    meta = {"checkpoint": str(Path(checkpoint).resolve()), "step": state.get("step"), "weights": weights,
            "latent_absmax": state.get("latent_absmax"), "protocol": protocol,
            "vae": spec_vae if isinstance(spec_vae, (str, dict)) else None}
    # A frame rate set in the run's config wins; else the clips' own (the videos' fps / frame stride); else 8.
    fps = sample_cfg.get("fps")
    if fps in (None, SampleConfigDefaults.fps):
        fps = protocol.get("fps") or fps or SampleConfigDefaults.fps
    return SamplingModel(model, diffusion, tuple(state["latent_shape"]), vae_obj, text, int(state.get("num_classes", 0)),
                         dev, int(sample_cfg.get("steps", 250)), float(fps), meta)


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
    precision: str = "auto",
    shard: str | None = None,
    merge: bool = False,
) -> list[Path]:
    """Sample ``num`` videos from a training checkpoint (run folder or ``step-*`` folder).

    Resumable: videos already in ``out_dir`` (made with the same settings) are skipped. Under
    torchrun (or with ``shard="I/N"``) this process samples its share only; ``merge=True`` writes
    the contact sheet and ``samples.json`` once every ``--shard`` job is done.

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
    from medvid.utils.sharding import sharding

    with sharding(shard, device, merge) as sh:
        m = load_sampling_model(checkpoint, use_ema, str(sh.device(device)), vae)
        return _sample_videos(m, sh, merge, checkpoint, num, out_dir, seed=seed, sampler=sampler, steps=steps,
                              cfg_scale=cfg_scale, eta=eta, batch_size=batch_size, caption=caption,
                              negative_prompt=negative_prompt, class_id=class_id, fps=fps, frames=frames,
                              clip_denoised=clip_denoised, precision=precision)


def _sample_videos(m: SamplingModel, sh, merge: bool, checkpoint, num, out_dir, *, seed, sampler, steps, cfg_scale,
                   eta, batch_size, caption, negative_prompt, class_id, fps, frames, clip_denoised,
                   precision) -> list[Path]:
    spec = SampleSpec(num=num, sampler=sampler, steps=steps or m.default_steps, eta=eta,
                      clip_denoised=resolve_clip(clip_denoised, m.meta.get("latent_absmax")),
                      cfg_scale=cfg_scale, seed=seed, batch_size=batch_size,
                      fps=fps or m.default_fps, caption=caption,
                      negative_prompt=negative_prompt, class_id=class_id, precision=precision)
    log.info("sampling %d video(s) from %s (%s weights, step %s) with %s-%d, cfg %.2f", num, checkpoint,
             m.meta["weights"], m.meta["step"], sampler, spec.steps, cfg_scale)
    shape = (1, *m.latent_shape[1:]) if frames == 1 else m.latent_shape
    if merge:
        missing = [k for k in range(num) if not _finished(Path(out_dir), k, m.vae, frames == 1)]
        if missing:
            raise ValueError(f"{out_dir}: {len(missing)} of {num} outputs are missing (e.g. number {missing[0]}); "
                             "run the missing --shard jobs (or the command without --merge) first")
    return generate_to_dir(m.model, m.diffusion, shape, spec, out_dir, vae=m.vae, text=m.text,
                           num_classes=m.num_classes, device=m.device, meta=m.meta, sharding=sh, resume=True)
