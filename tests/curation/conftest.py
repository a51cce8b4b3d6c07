"""Synthetic clips that show (or not) each defect, built in memory."""

import cv2
import numpy as np
import pytest


def texture(h, w, seed=0):
    """Smooth random texture in 30..220 (trackable by optical flow, sharp enough for the blur test)."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 3.0)
    base = (base - base.min()) / (base.max() - base.min())
    return (30 + 190 * base).astype(np.float32)


def moving_clip(t=16, h=96, w=128, shift=2, seed=0, color=True):
    """uint8 (t, h, w, 3): a texture translating ``shift`` pixels per frame to the right."""
    big = texture(h, w + shift * t + 8, seed)
    frames = np.stack([big[:, 4 + (t - i) * shift : 4 + (t - i) * shift + w] for i in range(t)])
    rgb = np.stack([frames, frames * 0.9, frames * 0.8], -1) if color else np.repeat(frames[..., None], 3, -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture
def clip():
    return moving_clip()


@pytest.fixture(scope="session")
def echo_frames():
    import pydicom
    from pydicom.data import get_testdata_file

    return pydicom.dcmread(get_testdata_file("examples_ybr_color.dcm")).pixel_array
