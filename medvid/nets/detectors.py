"""TorchScript detectors of the StyleGAN-V / StyleGAN2-ADA metric code, from local files.

Call conventions (those of the published ``.pt`` files, reproduced by the tests' tiny stand-ins):

* I3D (``i3d_torchscript.pt``, Kinetics-400):
  ``detector(x, rescale=True, resize=True, return_features=True)`` with ``x`` uint8
  ``[B, 3, T, H, W]`` in 0..255; the module resizes to 224x224 and rescales to [-1, 1] itself and
  returns the 400 pre-softmax logits as the feature vector.
* Inception-v3 (``inception-2015-12-05.pt``, the TF 2015-12-05 graph port):
  ``detector(x, return_features=True)`` with ``x`` uint8 ``[N, 3, H, W]`` -> pool3 features
  ``(N, 2048)`` (resized to 299 inside); ``detector(x, no_output_bias=True)`` -> softmax
  probabilities over 1008 classes computed without the output bias (what IS uses).
"""

from __future__ import annotations

from pathlib import Path

import torch

from medvid.utils.weights import require_weights

__all__ = ["load_torchscript", "load_i3d", "load_inception", "i3d_features", "inception_features", "inception_probs"]

I3D_FILE = "i3d_torchscript.pt (StyleGAN-V's I3D Kinetics-400 TorchScript port)"
INCEPTION_FILE = "inception-2015-12-05.pt (StyleGAN2-ADA / StyleGAN-V Inception-v3 TorchScript port)"


def load_torchscript(path: str | Path, what: str, expected: str, flag: str, device="cpu") -> torch.jit.ScriptModule:
    p = require_weights(path, what, expected, hint=f"Pass it with {flag} PATH.")
    try:
        return torch.jit.load(str(p), map_location=device).eval()
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{flag} {p}: not a TorchScript file ({str(e).splitlines()[0]}); pass {expected}") from e


def load_i3d(path, device="cpu"):
    return load_torchscript(path, "FVD", I3D_FILE, "--i3d", device)


def load_inception(path, device="cpu"):
    return load_torchscript(path, "FID/IS", INCEPTION_FILE, "--inception", device)


@torch.inference_mode()
def i3d_features(detector, clips: torch.Tensor) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3) -> (B, 400) I3D logits, StyleGAN-V's fvd call."""
    x = clips.permute(0, 4, 1, 2, 3).contiguous()  # (B, 3, T, H, W) uint8
    return detector(x, rescale=True, resize=True, return_features=True).float()


@torch.inference_mode()
def inception_features(detector, frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) -> (N, 2048) pool3 features."""
    x = frames.permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
    return detector(x, return_features=True).float()


@torch.inference_mode()
def inception_probs(detector, frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) -> (N, 1008) class probabilities without the output bias."""
    x = frames.permute(0, 3, 1, 2).contiguous()
    return detector(x, no_output_bias=True).float()
