"""Gaussian diffusion (linear betas, learned-range variance, hybrid loss) and its samplers."""

from medvid.diffusion.gaussian import GaussianDiffusion, discretized_gaussian_log_likelihood, normal_kl
from medvid.diffusion.samplers import SAMPLERS, guided, sample

__all__ = ["GaussianDiffusion", "SAMPLERS", "discretized_gaussian_log_likelihood", "guided", "normal_kl", "sample"]
