"""Optical flow -> RGB image, MedSora Eq. 13.

M = sqrt(u^2 + v^2), A = atan2(v, u); H = A in degrees (taken modulo 360), S = 1,
V = M / max(M) with the maximum taken per flow field (over its H x W pixels); then HSV -> RGB.
A field with no motion (max M = 0) is black (V = 0), not NaN.
"""

from __future__ import annotations


import torch

__all__ = ["flow_to_rgb", "hsv_to_rgb"]


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hue in degrees [0, 360), saturation and value in [0, 1] -> (..., 3) RGB in [0, 1].

    The closed form f(n) = V - V S max(0, min(k, 4 - k, 1)), k = (n + H/60) mod 6, n = 5, 3, 1
    for R, G, B: the standard piecewise HSV model without branches.
    """
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + h / 60.0, 6.0)
        out.append(v - v * s * torch.clamp(torch.minimum(torch.minimum(k, 4.0 - k), torch.ones_like(k)), min=0.0))
    return torch.stack(out, dim=-1)


def flow_to_rgb(flow: torch.Tensor) -> torch.Tensor:
    """flow (..., 2, H, W) in pixels -> RGB (..., 3, H, W) float in [0, 1] (Eq. 13)."""
    if flow.ndim < 3 or flow.shape[-3] != 2:
        raise ValueError(f"flow_to_rgb takes flow shaped (..., 2, H, W); got {tuple(flow.shape)}")
    flow = flow.float()
    u, v = flow[..., 0, :, :], flow[..., 1, :, :]  # (..., H, W)
    mag = torch.sqrt(u * u + v * v)
    hue = torch.remainder(torch.rad2deg(torch.atan2(v, u)), 360.0)
    peak = mag.amax(dim=(-2, -1), keepdim=True)  # per field
    val = torch.where(peak > 0, mag / peak.clamp_min(torch.finfo(mag.dtype).tiny), torch.zeros_like(mag))
    rgb = hsv_to_rgb(hue, torch.ones_like(val), val)  # (..., H, W, 3)
    return rgb.movedim(-1, -3).clamp(0.0, 1.0).contiguous()  # (..., 3, H, W)


