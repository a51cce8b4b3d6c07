"""Video generation metrics: Fréchet distances (FVD, CD-FVD, FID, offline EfficientNet-Lite0),
IS, frame consistency, VBench-style dimensions, PSNR/SSIM, and ``medvid evaluate``.

``evaluate`` is imported lazily (it pulls in the video readers and the report), so importing
``medvid.metrics.reconstruction`` or ``frechet_distance`` stays light.
"""

from medvid.metrics.frechet import frechet_distance
from medvid.metrics.reconstruction import psnr, ssim

__all__ = ["frechet_distance", "psnr", "ssim", "evaluate"]


def __getattr__(name: str):
    if name == "evaluate":
        from medvid.metrics.evaluate import evaluate

        return evaluate
    raise AttributeError(f"module 'medvid.metrics' has no attribute {name!r}")
