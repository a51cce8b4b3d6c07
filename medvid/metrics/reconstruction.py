"""Reconstruction quality: PSNR and SSIM per frame on images in [0, 1].

Both take channel-first tensors ``(..., C, H, W)`` (e.g. ``(B, T, 3, H, W)`` videos mapped to
[0, 1]) and return one value per image, shape ``(...)``; callers average as their protocol says.

SSIM follows Wang et al. (2004), "Image quality assessment: from error visibility to structural
similarity", and the authors' reference MATLAB ``ssim_index``: 11x11 Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, statistics over the *valid* region only (no padding), the SSIM map
averaged over pixels and then over colour channels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim"]


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    if x.ndim < 3:
        raise ValueError(f"{name} must be shaped (..., C, H, W), got {tuple(x.shape)}")
    return x.to(torch.float64)


def _check_pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_tensor(x, "x"), _as_tensor(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


def psnr(x, y, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: 10 log10(range^2 / MSE over C, H, W).

    Identical images give ``inf``.
    """
    x, y = _check_pair(x, y)
    mse = (x - y).pow(2).flatten(-3).mean(-1)  # (...)
    with torch.no_grad():
        return (10.0 * torch.log10(data_range**2 / mse)).float()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()  # (size,) separable 1-D factor of the 2-D window


def ssim(x, y, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (mean over the valid SSIM map and over channels)."""
    x, y = _check_pair(x, y)
    *lead, c, h, w = x.shape
    if h < window_size or w < window_size:
        raise ValueError(
            f"SSIM needs images of at least {window_size}x{window_size} pixels, got {h}x{w}; "
            "evaluate at a larger resolution or pass a smaller window_size"
        )
    x = x.reshape(-1, c, h, w)
    y = y.reshape(-1, c, h, w)
    g = _gaussian_window(window_size, sigma)
    gh = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)  # (C, 1, k, 1)
    gw = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)  # (C, 1, 1, k)

    def blur(t: torch.Tensor) -> torch.Tensor:  # valid depthwise Gaussian filter
        return F.conv2d(F.conv2d(t, gh, groups=c), gw, groups=c)

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    # Wang et al. eq. (13)
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    out = smap.mean(dim=(-1, -2)).mean(-1)  # (N,)
    return out.reshape(lead).float() if lead else out.reshape(()).float()


def psnr_db_mean(values: torch.Tensor) -> float:
    """Mean PSNR over images, ignoring ``inf`` from exact reconstructions (returns inf if all are)."""
    v = values.flatten()
    finite = v[torch.isfinite(v)]
    return float(finite.mean()) if finite.numel() else math.inf
