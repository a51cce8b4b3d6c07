"""What a run is built from: backbone, dataset, VAE, data order, activation checkpointing.

Module-level functions so the trainer, the sampler and tests can reuse (or replace) each piece.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import torch

from medvid.training.config import TrainConfig
from medvid.utils.logging import get_logger

log = get_logger("train")

def check_config(cfg: TrainConfig, where: str = "config") -> None:
    """What a config can only get wrong against the machine, checked before a run starts: the model
    builds with these shapes (on the meta device: no memory, no time), and the paths it names exist.
    Errors name ``where`` (the YAML file) and the key."""
    from medvid.config import ConfigError

    try:
        with torch.device("meta"):
            build_model(cfg, 32 if cfg.text.enabled else None)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{where}: model (name {cfg.model.name!r}, overrides {cfg.model.overrides}) does not build: "
                          f"{str(e).strip(chr(39))}; fix model.overrides") from e
    d, a = cfg.data, cfg.align
    paths = {"data.latent_dir": d.latent_dir if d.source == "latents" else None,
             "data.manifest": d.manifest if d.source == "videos" else None,
             "align.features_dir": a.features_dir if a.enabled else None,
             "align.flow_weights": a.flow_weights if a.enabled else None,
             "align.repnet_weights": a.repnet_weights if a.enabled else None,
             "text.encoder_path": cfg.text.encoder_path if cfg.text.enabled else None}
    for key, value in paths.items():
        if value and not Path(value).exists():
            fix = {"data.latent_dir": "run `medvid encode` first", "data.manifest": "run `medvid prepare` first",
                   "align.features_dir": "run `medvid flow-features` first"}.get(key, "point it at a local file")
            raise ConfigError(f"{where}: {key}: {value} does not exist; {fix} or fix the path")


def build_model(cfg: TrainConfig, context_dim: int | None = None) -> torch.nn.Module:
    from medvid.models import create_model

    kwargs = dict(cfg.model.overrides)
    if context_dim is not None:
        kwargs["context_dim"] = context_dim
    return create_model(cfg.model.name, **kwargs)


def follow_latents(d) -> None:
    """``data.num_frames / frame_stride / resolution`` of a latents run come from the latent folder's
    meta.json: a value left at its default takes the recorded one (so the checkpoint's config, and
    ``medvid sample`` / ``evaluate`` after it, describe the clips the model really saw); a value set
    to something else is refused with both values named."""
    from dataclasses import fields

    from medvid.utils.settings import SettingsMismatch, latent_meta

    protocol = latent_meta(d.latent_dir).get("protocol", {})
    defaults = {f.name: f.default for f in fields(d)}
    for key in ("num_frames", "frame_stride", "resolution"):
        recorded, value = protocol.get(key), getattr(d, key)
        if recorded is None or value == recorded:
            continue
        if value != defaults[key]:
            raise SettingsMismatch(
                f"data.{key} {value} disagrees with the latents in {d.latent_dir}, encoded with {key} {recorded}; "
                f"drop data.{key} (it follows the latents) or re-encode with --{key.replace('_', '-')} {value}"
            )
        setattr(d, key, recorded)


def build_dataset(cfg: TrainConfig):
    d = cfg.data
    if d.source == "latents":
        from medvid.data import LatentDataset

        if not Path(d.latent_dir).is_dir():
            raise ValueError(f"data.latent_dir {d.latent_dir} does not exist; run `medvid encode` first or fix the path")
        follow_latents(d)
        return LatentDataset(d.latent_dir, split=d.split, flow_features_dir=cfg.align.features_dir if cfg.align.enabled else None,
                             seed=cfg.seed)
    from medvid.data import ClipDataset

    if not Path(d.manifest).is_file():
        raise ValueError(f"data.manifest {d.manifest} does not exist; run `medvid prepare` first or fix the path")
    return ClipDataset(d.manifest, split=d.split, num_frames=d.num_frames, frame_stride=d.frame_stride,
                       resolution=d.resolution, extra_flow_frame=True, num_images=d.num_images,
                       hflip=d.hflip, seed=cfg.seed)


TINY_RANDOM = re.compile(r"^tiny-random\(seed=(\d+)\)$")


def build_vae(spec: Any, device: torch.device):
    """A VideoVAE from what a run records: a folder path, ``"tiny-random(seed=N)"`` (a tiny random
    CogVideoX VAE, see ``medvid.latents.tiny_vae``), a ``VideoVAE.describe()`` dict, or a VAE object."""
    from medvid.latents import VideoVAE, load_vae, tiny_vae

    if isinstance(spec, dict):
        source = str(spec.get("source", ""))
        m = TINY_RANDOM.match(source)
        if m and spec.get("config"):
            # Rebuild the random VAE exactly as tiny_vae did: same seed, same config.
            from diffusers import AutoencoderKLCogVideoX

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(m.group(1)))
                module = AutoencoderKLCogVideoX.from_config(spec["config"])
            vae = VideoVAE(module, source=source)
        elif source and Path(source).exists():
            vae = load_vae(source)
        else:
            raise ValueError(
                f"the run's VAE ({source or 'unnamed'}) cannot be found; pass its folder explicitly (--vae PATH)"
            )
        # Latents decode with the factors they were encoded with, even if the folder's latent scale
        # was fitted again since (`medvid fit-latent-scale`).
        for key in ("scaling_factor", "shift_factor"):
            if spec.get(key) is not None and float(spec[key]) != getattr(vae, key):
                log.warning("%s: %s %s in the folder, %s recorded with the latents; using the recorded one",
                            source, key, getattr(vae, key), spec[key])
                setattr(vae, key, float(spec[key]))
    elif isinstance(spec, (str, Path)) and TINY_RANDOM.match(str(spec)):
        vae = tiny_vae(seed=int(TINY_RANDOM.match(str(spec)).group(1)))
    elif isinstance(spec, (str, Path)):
        vae = load_vae(spec)
    else:
        vae = spec
    return vae.to(device).eval().requires_grad_(False)


def vae_spec_for(cfg: TrainConfig) -> Any:
    """What ``build_vae`` needs to decode this run's latents (the sampler reads it from the checkpoint):
    ``data.vae`` for runs on videos, the ``vae`` entry of the latent folder's meta.json otherwise."""
    if cfg.data.source == "videos":
        return cfg.data.vae
    meta = Path(cfg.data.latent_dir) / "meta.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("vae")
    return None


def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled item order of ``epoch``: a function of (seed, epoch) only, so resumable."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=g)


def enable_grad_checkpointing(model: torch.nn.Module) -> bool:
    """Recompute each block's activations in the backward pass (``torch.utils.checkpoint``)."""
    from torch.utils.checkpoint import checkpoint

    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
        return True
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        return False
    for blk in blocks:
        fwd = blk.forward
        blk.forward = functools.partial(checkpoint, fwd, use_reentrant=False)
    return True
