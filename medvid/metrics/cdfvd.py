"""Content-debiased FVD (Ge et al., CVPR 2024; the ``cd-fvd`` package).

VideoMAE-v2 ViT-g/14 fine-tuned on SSv2 (``vit_g_hybrid_pt_1200e_ssv2_ft.pth``), 16-frame clips
(tubelet 2), frames bilinearly resized to 224x224, input in [0, 1] with no mean/std
normalisation, feature = ``fc_norm(mean of tokens)`` (1408-d) (``medvid.nets.vision.VideoMAENet``).
Statistics as cd-fvd's ``FeatureStats.get_mean_cov``: covariance / N; default 2048 clips.
Clips as for FVD: one per video, real from a random start, generated from frame 0.
"""

from __future__ import annotations

import numpy as np

from medvid.metrics.frechet import feature_stats, frechet_distance

__all__ = ["cdfvd_from_features"]


def cdfvd_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    mu_r, s_r = feature_stats(real, ddof=0)
    mu_f, s_f = feature_stats(fake, ddof=0)
    return frechet_distance(mu_r, s_r, mu_f, s_f)
