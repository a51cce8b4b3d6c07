"""PSNR/SSIM against OpenCV (cv2.PSNR, cv2.GaussianBlur-based SSIM, cv2.quality SSIM)."""

import cv2
import numpy as np
import pytest
import torch

from medvid.metrics.reconstruction import psnr, ssim


def _pair(seed=0, h=48, w=40):
    rng = np.random.default_rng(seed)
    a = rng.random((h, w, 3))
    # smooth content + noise so SSIM is neither ~0 nor ~1
    a = cv2.GaussianBlur(a, (0, 0), 3)
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    return a, b


def _chw(a):
    return torch.from_numpy(a).permute(2, 0, 1)


def test_psnr_matches_cv2():
    a, b = _pair()
    got = psnr(_chw(a), _chw(b)).item()
    assert got == pytest.approx(cv2.PSNR(a, b, 1.0), rel=1e-5)
    # batched shape (B, T, C, H, W) -> (B, T)
    x = torch.stack([_chw(a), _chw(b)])[None]
    assert psnr(x, x.flip(1)).shape == (1, 2)
    assert torch.isinf(psnr(x, x)).all()


def _ssim_cv2_valid(a, b):
    """Wang et al. eq. (13) with cv2's Gaussian filter; crop the 5-px border = valid region."""
    out = []
    for ch in range(a.shape[-1]):
        x, y = a[..., ch], b[..., ch]
        blur = lambda t: cv2.GaussianBlur(t, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        out.append(m.mean())
    return float(np.mean(out))


def test_ssim_matches_gaussian_formula_and_cv2_quality():
    a, b = _pair(1, 64, 64)
    got = ssim(_chw(a), _chw(b)).item()
    assert 0.2 < got < 0.99
    assert got == pytest.approx(_ssim_cv2_valid(a, b), abs=1e-6)
    # OpenCV's own SSIM pads borders instead of cropping: close, not identical.
    q = cv2.quality.QualitySSIM_compute(a * 255, b * 255)[0][:3]
    assert got == pytest.approx(float(np.mean(q)), abs=0.03)
    assert ssim(_chw(a), _chw(a)).item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_rejects_tiny_images():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
