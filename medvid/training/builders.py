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

def build_model(cfg: TrainConfig, context_dim: int | None = None) -> torch.nn.Module:
    from medvid.models import create_model

    kwargs = dict(cfg.model.overrides)
    if context_dim is not None:
        kwargs["context_dim"] = context_dim
    return create_model(cfg.model.name, **kwargs)


def build_dataset(cfg: TrainConfig):
    d = cfg.data
    if d.source == "latents":
        from medvid.data import LatentDataset

        if not Path(d.latent_dir).is_dir():
            raise ValueError(f"data.latent_dir {d.latent_dir} does not exist; run `medvid encode` first or fix the path")
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
