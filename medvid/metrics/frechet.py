"""The Fréchet distance between two Gaussians, shared by FVD, CD-FVD, FID and the offline
EfficientNet-Lite0 distances.

d^2 = ||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^(1/2))   (Dowson & Landau 1982)

``frechet_distance`` reproduces the published implementations (StyleGAN-V, cd-fvd, pytorch-fid):
``scipy.linalg.sqrtm`` of the product, its real part, and ``eps * I`` added to both covariances
when the square root is not finite (pytorch-fid's fallback for singular products).

Covariance normalisation differs between protocols and changes the number: StyleGAN-V (FVD,
FID, IS) and cd-fvd divide by N (``FeatureStats.get_mean_cov``); pytorch-fid uses ``np.cov``
(N - 1). ``feature_stats(x, ddof)`` takes the protocol's choice explicitly.

``frechet_distance_from_features`` gives the same value without ``sqrtm`` and is what the
bootstrap uses: with Sigma_i = A_i^T A_i (A_i the centred features / sqrt(N_i - ddof)),
Tr (Sigma_1 Sigma_2)^(1/2) is the nuclear norm of A_1 A_2^T (an N_1 x N_2 matrix, cheap when N < D;
computed from the eigenvalues of its Gram matrix)
or, for N >= D, the sum of sqrt(eigenvalues) of Sigma_1^(1/2) Sigma_2 Sigma_1^(1/2).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg

__all__ = ["frechet_distance", "feature_stats", "frechet_distance_from_features", "bootstrap_frechet"]

log = logging.getLogger("medvid.metrics")


def feature_stats(features: np.ndarray, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (N, D) features; ``ddof=0`` divides by N (StyleGAN-V), 1 by N - 1."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    if x.shape[0] <= ddof:
        raise ValueError(f"need more than {ddof} feature vectors for a covariance, got {x.shape[0]}")
    mu = x.mean(axis=0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - ddof)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (scipy sqrtm, real part)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"mean/covariance shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
            f"mu2 {mu2.shape}, sigma2 {sigma2.shape} (were the statistics made with the same feature network?)"
        )
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("Fréchet distance: singular product of covariances; adding %g to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(covmean.imag))
        if imag > 1e-3:
            log.warning("Fréchet distance: sqrtm has an imaginary component up to %.3g (ill-conditioned "
                        "covariances: use more samples); taking the real part as StyleGAN-V does", imag)
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _trace_sqrt_product(a1: np.ndarray, a2: np.ndarray) -> float:
    """Tr((A1^T A1)(A2^T A2))^(1/2) for (N_i, D) factors, without forming a matrix square root."""
    n1, n2, d = a1.shape[0], a2.shape[0], a1.shape[1]
    if min(n1, n2) < d:
        k = a1 @ a2.T  # (N1, N2); its singular values are the sqrt(eigenvalues) of Sigma_1 Sigma_2
        g = k @ k.T if n1 <= n2 else k.T @ k  # symmetric PSD Gram matrix (eigh is faster and steadier than SVD here)
        return float(np.sqrt(np.clip(np.linalg.eigvalsh(g), 0, None)).sum())
    s1 = a1.T @ a1
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # Sigma_1^(1/2), symmetric PSD
    m = root1 @ (a2.T @ a2) @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def frechet_distance_from_features(x1: np.ndarray, x2: np.ndarray, ddof: int = 0) -> float:
    """Fréchet distance of two (N_i, D) feature sets (exact, no eps, no sqrtm)."""
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    mu1, mu2 = x1.mean(0), x2.mean(0)
    a1 = (x1 - mu1) / np.sqrt(x1.shape[0] - ddof)
    a2 = (x2 - mu2) / np.sqrt(x2.shape[0] - ddof)
    diff = mu1 - mu2
    tr = (a1 * a1).sum() + (a2 * a2).sum()
    return float(diff @ diff + tr - 2.0 * _trace_sqrt_product(a1, a2))


def bootstrap_frechet(x1: np.ndarray, x2: np.ndarray, ddof: int = 0, num_samples: int = 100,
                      seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap interval: both sets resampled with replacement, ``num_samples`` times.

    Returns ``{"low", "high", "std", "num_samples", "level"}``. Resampling duplicates rows, which
    biases Fréchet distances upwards a little; the interval shows the spread, not a corrected value.
    """
    if num_samples <= 0:
        return {"low": None, "high": None, "std": None, "num_samples": 0, "level": level}
    rng = np.random.default_rng(seed)
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    vals = []
    for _ in range(num_samples):
        i1 = rng.integers(0, len(x1), len(x1))
        i2 = rng.integers(0, len(x2), len(x2))
        vals.append(frechet_distance_from_features(x1[i1], x2[i2], ddof))
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return {"low": float(lo), "high": float(hi), "std": float(np.std(vals)), "num_samples": num_samples, "level": level}
