"""The video VAE behind one interface: medvid layout in, medvid layout out.

medvid keeps pixel videos as ``(B, T, 3, H, W)`` in [-1, 1] and latents as ``(B, F, C, h, w)``
already multiplied by the VAE's scaling factor; diffusers VAEs take ``(B, C, T, H, W)``. This module
is the only place that converts between the two.

Temporal rule of the CogVideoX causal VAE (diffusers ``AutoencoderKLCogVideoX``): the encoder runs
over chunks of 8 frames (the first chunk also takes the remainder ``T mod 8``) and halves time twice
per chunk; a chunk with an odd frame count keeps its first frame on its own ("causal" first frame).
So ``1 + 4k`` frames -> ``1 + k`` latent frames (17 -> 5, the layout CogVideoX was trained on) and
``8k`` frames -> ``2k`` (16 -> 4); a single image -> 1 latent frame. ``latent_frames(T)`` computes
this. medvid encodes the 16 clip frames (the extra 17th frame exists only for optical flow) into 4
video latents, which is what the MedSora paper's Table 1 z-shape (4 video latents) and its reference
code do; ``decode`` of 4 latents gives 16 frames back. Encoding 17 frames -> 5 latents is possible too
(pass the clip with its flow frame), and is what a user who wants CogVideoX's native layout picks.
The decoder mirrors this: 4 latents -> 16 frames, 5 -> 17; other counts need not round-trip
(5 frames -> 2 latents -> 8 frames).

Joint-training images are encoded each on its own (1 frame -> 1 latent frame), see
``encode_images`` and docs/architecture.md.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import nn

from medvid.utils.weights import MissingWeightsError

COGVIDEOX_FRAME_CHUNK = 8  # diffusers AutoencoderKLCogVideoX.num_sample_frames_batch_size


def _halve_causal(n: int) -> int:
    """CogVideoX temporal downsampling: odd counts keep the first frame, the rest are pooled in pairs."""
    return 1 + (n - 1) // 2 if n % 2 else n // 2


def latent_frames(num_frames: int, temporal_compression: int = 4, chunk: int = COGVIDEOX_FRAME_CHUNK) -> int:
    """Number of latent frames the CogVideoX encoder gives for ``num_frames`` input frames."""
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: need at least one frame")
    levels = int(round(math.log2(temporal_compression)))
    if chunk <= 0:
        chunks = [num_frames]
    else:
        k = max(num_frames // chunk, 1)
        rest = num_frames % chunk if num_frames >= chunk else 0
        chunks = [num_frames] if num_frames < chunk else [chunk + rest] + [chunk] * (k - 1)
    total = 0
    for n in chunks:
        for _ in range(levels):
            n = _halve_causal(n)
        total += n
    return total


def tiny_vae_config(num_blocks: int = 4, channels: int = 8, latent_channels: int = 4, norm_num_groups: int = 2) -> dict[str, Any]:
    """Config of a tiny ``AutoencoderKLCogVideoX`` (tests, the CPU demo): 4x temporal compression,
    ``2 ** (num_blocks - 1)`` spatial compression, one layer per block."""
    if num_blocks < 3:
        raise ValueError(f"num_blocks={num_blocks}: CogVideoX compresses time in the first two down blocks; need >= 3")
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["CogVideoXDownBlock3D"] * num_blocks,
        "up_block_types": ["CogVideoXUpBlock3D"] * num_blocks,
        "block_out_channels": [channels] * num_blocks,
        "latent_channels": latent_channels,
        "layers_per_block": 1,
        "norm_num_groups": norm_num_groups,
        "temporal_compression_ratio": 4,
        "sample_height": 64,
        "sample_width": 64,
    }


def tiny_vae(seed: int = 0, **config: Any) -> "VideoVAE":
    """A tiny randomly initialised CogVideoX VAE wrapped as ``VideoVAE`` (same weights for a seed)."""
    from diffusers import AutoencoderKLCogVideoX

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = AutoencoderKLCogVideoX(**tiny_vae_config(**config))
    return VideoVAE(module, source=f"tiny-random(seed={seed})")


class VideoVAE(nn.Module):
    """Wraps a video VAE (diffusers ``AutoencoderKLCogVideoX``, or any module with
    ``encode(x (B,C,T,H,W))`` / ``decode(z)``) in medvid's layouts.

    ``encode`` uses the posterior mean unless ``sample=True`` (then a ``generator`` makes it
    reproducible), so caching latents is deterministic. Latents are ``(z - shift) * scaling_factor``.
    Nothing here disables gradients: wrap calls in ``torch.no_grad()`` when only encoding.
    """

    def __init__(
        self,
        vae: nn.Module,
        *,
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
        latent_channels: int | None = None,
        temporal_compression: int | None = None,
        spatial_compression: int | None = None,
        source: str = "in-memory",
    ):
        super().__init__()
        self.vae = vae
        cfg = getattr(vae, "config", None) or {}
        get = (lambda k, d=None: cfg.get(k, d)) if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else get("scaling_factor", 1.0))
        sf = shift_factor if shift_factor is not None else get("shift_factor", None)
        self.shift_factor = float(sf) if sf is not None else 0.0
        self.latent_channels = int(latent_channels if latent_channels is not None else get("latent_channels", 16))
        self.temporal_compression = int(
            temporal_compression if temporal_compression is not None else get("temporal_compression_ratio", 4)
        )
        boc = get("block_out_channels", None)
        if spatial_compression is None:
            spatial_compression = 2 ** (len(boc) - 1) if boc else 8
        self.spatial_compression = int(spatial_compression)
        self.source = source
        # Tiling splits frames into overlapping tiles (480x720 defaults); slicing splits the batch.
        # Both change numerics at tile seams and tiling breaks on tiny inputs: keep them off.
        for name in ("disable_tiling", "disable_slicing"):
            if hasattr(vae, name):
                getattr(vae, name)()

    # -- layout helpers ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        p = next(self.vae.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.vae.parameters(), None)
        return p.dtype if p is not None else torch.float32

    def latent_frames(self, num_frames: int) -> int:
        return latent_frames(num_frames, self.temporal_compression)

    def _check_video(self, video: torch.Tensor, what: str) -> None:
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"VideoVAE.{what}: expected (B, T, 3, H, W) pixels in [-1, 1], got shape {tuple(video.shape)}")
        h, w = video.shape[-2:]
        if h % self.spatial_compression or w % self.spatial_compression:
            raise ValueError(
                f"VideoVAE.{what}: frame size {h}x{w} is not divisible by the spatial compression "
                f"{self.spatial_compression}; resize or crop to a multiple of it"
            )

    def _distribution(self, x: torch.Tensor):
        """-> (posterior or None, plain output) of the wrapped VAE on ``(B, C, T, H, W)``."""
        out = self.vae.encode(x)
        dist = getattr(out, "latent_dist", None)
        if dist is None and isinstance(out, (tuple, list)):
            out = out[0]
            dist = out if hasattr(out, "mean") and hasattr(out, "sample") else None
        return dist, out

    def _encode_bcthw(self, x: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        dist, out = self._distribution(x)
        if dist is not None:
            z = dist.sample(generator=generator) if sample else dist.mean
        else:
            z = out  # a plain tensor from a custom VAE
        return (z - self.shift_factor) * self.scaling_factor

    # -- public API -------------------------------------------------------------------------------
    def encode(self, video: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, T, 3, H, W)`` in [-1, 1] -> scaled latents ``(B, F, C, h, w)``."""
        self._check_video(video, "encode")
        x = rearrange(video, "b t c h w -> b c t h w").to(self.device, self.dtype)
        z = self._encode_bcthw(x, sample, generator)  # (B, C, F, h, w)
        return rearrange(z, "b c f h w -> b f c h w")

    def posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, 3, H, W)`` -> posterior ``(mean, std)`` of the scaled latents, each ``(B, F, C, h, w)``:
        ``mean + std * eps`` is a posterior sample (one encoder pass for any number of samples).
        A VAE without a posterior (a plain tensor out) gives ``std = 0``."""
        self._check_video(video, "posterior")
        x = rearrange(video, "b t c h w -> b c t h w").to(self.device, self.dtype)
        dist, out = self._distribution(x)
        if dist is not None:
            mean, std = dist.mean, getattr(dist, "std", torch.zeros_like(dist.mean))
        else:
            mean, std = out, torch.zeros_like(out)
        mean = (mean - self.shift_factor) * self.scaling_factor
        std = std * abs(self.scaling_factor)
        return rearrange(mean, "b c f h w -> b f c h w"), rearrange(std, "b c f h w -> b f c h w")

    def encode_images(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, N, 3, H, W)`` -> ``(B, N, C, h, w)``: every image encoded alone as a 1-frame video."""
        b, n = images.shape[:2]
        if n == 0:
            h, w = images.shape[-2] // self.spatial_compression, images.shape[-1] // self.spatial_compression
            return images.new_zeros(b, 0, self.latent_channels, h, w)
        z = self.encode(rearrange(images, "b n c h w -> (b n) 1 c h w"), sample, generator)  # (B*N, 1, C, h, w)
        return rearrange(z, "(b n) 1 c h w -> b n c h w", b=b)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(B, F, C, h, w)`` -> pixels ``(B, T, 3, H, W)`` in [-1, 1]."""
        if latents.ndim != 5 or latents.shape[2] != self.latent_channels:
            raise ValueError(
                f"VideoVAE.decode: expected (B, F, {self.latent_channels}, h, w) latents, got {tuple(latents.shape)}"
            )
        z = rearrange(latents, "b f c h w -> b c f h w").to(self.device, self.dtype)
        z = z / self.scaling_factor + self.shift_factor
        out = self.vae.decode(z)
        x = getattr(out, "sample", None)
        if x is None:
            x = out[0] if isinstance(out, (tuple, list)) else out
        return rearrange(x, "b c t h w -> b t c h w").clamp(-1.0, 1.0)

    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, N, C, h, w)`` image latents -> ``(B, N, 3, H, W)``, each decoded alone."""
        b = latents.shape[0]
        x = self.decode(rearrange(latents, "b n c h w -> (b n) 1 c h w"))  # (B*N, 1, 3, H, W)
        return rearrange(x, "(b n) 1 c h w -> b n c h w", b=b)

    def describe(self) -> dict[str, Any]:
        cfg = getattr(self.vae, "config", None)
        config = {k: v for k, v in dict(cfg).items() if not k.startswith("_")} if cfg is not None else {}
        return {
            "class": type(self.vae).__name__,
            "source": self.source,
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "latent_channels": self.latent_channels,
            "temporal_compression": self.temporal_compression,
            "spatial_compression": self.spatial_compression,
            "num_parameters": sum(p.numel() for p in self.vae.parameters()),
            "config": json.loads(json.dumps(config, default=str)),
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the wrapped diffusers VAE as a standard folder (config.json + safetensors)."""
        if not hasattr(self.vae, "save_pretrained"):
            raise TypeError(f"{type(self.vae).__name__} has no save_pretrained; save it with its own tools")
        folder = Path(folder)
        self.vae.save_pretrained(str(folder), safe_serialization=True)
        return folder

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(video))


VAE_HINT = (
    "give a local folder in the diffusers layout: config.json + diffusion_pytorch_model.safetensors "
    "(e.g. the vae/ folder of THUDM/CogVideoX-2b, fetched beforehand with `huggingface-cli download "
    "THUDM/CogVideoX-2b --include 'vae/*'`), or the pipeline folder that holds vae/"
)


def load_vae(path_or_vae: str | os.PathLike | nn.Module, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> VideoVAE:
    """A ``VideoVAE`` from a local diffusers folder (or a pipeline folder holding ``vae/``) or a module.

    Nothing is downloaded: a missing folder raises ``MissingWeightsError`` naming what is needed.
    """
    if isinstance(path_or_vae, VideoVAE):
        return path_or_vae.to(device=device, dtype=dtype)
    if isinstance(path_or_vae, nn.Module):
        return VideoVAE(path_or_vae).to(device=device, dtype=dtype).eval()
    folder = Path(path_or_vae)
    if (folder / "vae" / "config.json").is_file() and not (folder / "config.json").is_file():
        folder = folder / "vae"
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise MissingWeightsError("the video VAE", "a diffusers AutoencoderKLCogVideoX folder", folder, VAE_HINT)
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{cfg_path}: not a readable JSON config ({e}); re-download the VAE folder") from e
    cls_name = cfg.get("_class_name", "AutoencoderKLCogVideoX")
    import diffusers

    cls = getattr(diffusers, cls_name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(
            f"{cfg_path}: _class_name {cls_name!r} is not a diffusers model class; build that VAE yourself "
            "and pass the module to load_vae"
        )
    try:
        module = cls.from_pretrained(str(folder), torch_dtype=dtype)
    except OSError as e:
        raise MissingWeightsError("the video VAE", f"the weights of {cls_name} in {folder}", folder, VAE_HINT) from e
    if (folder / "medvid_vae.json").is_file():  # a frequency-compensated VAE saved by `medvid train-vae`
        from medvid.latents.fcvae import load_compensated

        module = load_compensated(module, folder)
    return VideoVAE(module, source=str(folder.resolve())).to(device=device, dtype=dtype).eval()
