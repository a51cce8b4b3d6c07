"""FVD as in StyleGAN-V (``fvd2048_16f``), used by Endora and MedSora.

16-frame clips (``medvid.metrics.inputs.select_clips``: real from random starts, generated from
frame 0, videos shorter than 16 frames dropped, frames at the stored resolution), I3D features
from ``detector(x, rescale=True, resize=True, return_features=True)`` on uint8 ``[B, 3, T, H, W]``
(``medvid.nets.detectors.i3d_features``), statistics with covariance / N, ``frechet_distance``.
Default 2048 clips on each side; fewer are used when a folder holds fewer videos (one clip per
video, as StyleGAN-V's dataset iterates videos) and the count is reported beside the number.
"""

from __future__ import annotations

import numpy as np

from medvid.metrics.frechet import feature_stats, frechet_distance

__all__ = ["fvd_from_features", "CLIP_LENGTH", "DEFAULT_NUM_CLIPS"]

CLIP_LENGTH = 16
DEFAULT_NUM_CLIPS = 2048


def fvd_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FVD from (N, 400) I3D features, StyleGAN-V statistics (covariance / N)."""
    mu_r, s_r = feature_stats(real, ddof=0)
    mu_f, s_f = feature_stats(fake, ddof=0)
    return frechet_distance(mu_r, s_r, mu_f, s_f)
