"""FID and Inception Score over frames (StyleGAN-V ``fid50k_full`` / ``is50k``).

Every frame is an image. Features: the TorchScript Inception-v3 port (``medvid.nets.detectors``).
FID: pool3 (2048-d) features of all real frames vs up to 50,000 generated frames; mean and
covariance divided by N (StyleGAN-V's ``FeatureStats.get_mean_cov``); ``frechet_distance``.
IS: 1008-way probabilities computed without the output bias, ``num_splits`` = 10 consecutive
splits, IS = exp(E_x KL(p(y|x) || p(y))) per split, reported as mean and std over splits
(StyleGAN2-ADA ``metrics/inception_score.py``).
"""

from __future__ import annotations

import numpy as np

from medvid.metrics.frechet import feature_stats, frechet_distance

__all__ = ["fid_from_features", "inception_score"]


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID with StyleGAN-V statistics (covariance / N)."""
    mu_r, s_r = feature_stats(real, ddof=0)
    mu_f, s_f = feature_stats(fake, ddof=0)
    return frechet_distance(mu_r, s_r, mu_f, s_f)


def inception_score(probs: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """(mean, std) of exp(mean KL(p(y|x) || p(y))) over ``num_splits`` consecutive splits."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or len(p) < num_splits:
        raise ValueError(f"inception_score needs (N >= num_splits={num_splits}, classes) probabilities, got {p.shape}")
    n = len(p)
    scores = []
    for i in range(num_splits):
        part = p[i * n // num_splits : (i + 1) * n // num_splits]
        # 0 * log 0 = 0 (np.log(0) = -inf would make nan where a class has zero probability)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        kl = np.nan_to_num(kl, nan=0.0).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
