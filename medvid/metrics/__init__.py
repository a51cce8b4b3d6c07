"""Video generation metrics: Fréchet distances (FVD, CD-FVD, FID, offline EfficientNet-Lite0),
IS, frame consistency, VBench-style dimensions, PSNR/SSIM, and ``medvid evaluate``."""

from medvid.metrics.frechet import frechet_distance
from medvid.metrics.reconstruction import psnr, ssim

__all__ = ["frechet_distance", "psnr", "ssim"]
