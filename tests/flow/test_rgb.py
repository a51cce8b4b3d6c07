import colorsys
import math

import cv2
import numpy as np
import torch

from medvid.flow import flow_to_rgb


def _colorsys_reference(flow: np.ndarray) -> np.ndarray:
    """Eq. 13 pixel by pixel with the standard library's HSV model."""
    u, v = flow[0], flow[1]
    mag = np.sqrt(u**2 + v**2)
    peak = mag.max()
    out = np.zeros((3,) + u.shape)
    for y in range(u.shape[0]):
        for x in range(u.shape[1]):
            hue = math.degrees(math.atan2(v[y, x], u[y, x])) % 360.0
            val = mag[y, x] / peak if peak > 0 else 0.0
            out[:, y, x] = colorsys.hsv_to_rgb(hue / 360.0, 1.0, val)
    return out


def test_flow_to_rgb_matches_colorsys_per_field():
    flow = torch.randn(2, 3, 2, 7, 9) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1, 1)
    rgb = flow_to_rgb(flow)
    assert rgb.shape == (2, 3, 3, 7, 9)
    for a in range(2):
        for b in range(3):  # per-field maximum: each field scaled on its own
            ref = _colorsys_reference(flow[a, b].double().numpy())
            np.testing.assert_allclose(rgb[a, b].numpy(), ref, atol=1e-5)


def test_flow_to_rgb_matches_opencv_hsv():
    flow = torch.randn(2, 16, 16) * 3
    u, v = flow.numpy()
    mag, ang = cv2.cartToPolar(u, v, angleInDegrees=True)
    hsv = np.stack([ang, np.ones_like(mag), mag / mag.max()], -1).astype(np.float32)  # float HSV: H in degrees
    ref = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).transpose(2, 0, 1)
    np.testing.assert_allclose(flow_to_rgb(flow).numpy(), ref, atol=2e-3)  # cartToPolar angle is approximate


def test_directions_and_zero_field():
    right = torch.zeros(2, 4, 4)
    right[0] = 2.0  # +u: hue 0 -> pure red at full value
    np.testing.assert_allclose(flow_to_rgb(right)[:, 0, 0].numpy(), [1, 0, 0], atol=1e-6)
    down = torch.zeros(2, 4, 4)
    down[1] = 1.0  # +v (image y down): hue 90 -> (0.5, 1, 0)
    np.testing.assert_allclose(flow_to_rgb(down)[:, 0, 0].numpy(), [0.5, 1, 0], atol=1e-6)
    zero = flow_to_rgb(torch.zeros(3, 2, 5, 5))
    assert torch.isfinite(zero).all() and zero.abs().max() == 0


def test_bad_shape_is_a_value_error():
    import pytest

    with pytest.raises(ValueError, match=r"\(\.\.\., 2, H, W\)"):
        flow_to_rgb(torch.zeros(3, 5, 5))
