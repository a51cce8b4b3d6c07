"""Tiny randomly initialised stand-ins with the real detectors' call signatures, saved as
TorchScript by the tests (the real files are never needed), and small video folders."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medvid.utils.video import save_npz, write_mp4


class TinyI3D(nn.Module):
    """StyleGAN-V I3D call: detector(x uint8 [B,3,T,H,W], rescale, resize, return_features)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if x.dtype != torch.uint8:
            raise ValueError("expected uint8 videos")
        if x.shape[1] != 3 or x.shape[2] != 16:
            raise ValueError("expected [B, 3, 16, H, W]")
        h = x.float()
        if rescale:
            h = h / 127.5 - 1.0
        if resize:
            h = F.interpolate(h, size=(16, 12, 12), mode="trilinear", align_corners=False)
        h = torch.tanh(self.conv(h)).mean(dim=(2, 3, 4))
        return self.fc(h) if return_features else torch.softmax(self.fc(h), -1)


class TinyInception(nn.Module):
    """StyleGAN2-ADA Inception call: detector(img uint8 [N,3,H,W], return_features, use_fp16, no_output_bias)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 7, 3, padding=1)
        self.out = nn.Linear(7, 11)

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False):
        if img.dtype != torch.uint8 or img.shape[1] != 3:
            raise ValueError("expected uint8 [N, 3, H, W]")
        h = F.interpolate(img.float() / 127.5 - 1, size=(10, 10), mode="bilinear", align_corners=False)
        feats = torch.relu(self.conv(h)).mean(dim=(2, 3))
        if return_features:
            return feats
        logits = feats @ self.out.weight.t()
        if not no_output_bias:
            logits = logits + self.out.bias
        return torch.softmax(logits * 4, dim=1)


def _script(module, path):
    torch.manual_seed(1)
    m = torch.jit.script(module)
    torch.jit.save(m, str(path))
    return path


@pytest.fixture
def tiny_i3d(tmp_path):
    torch.manual_seed(1)
    return _script(TinyI3D(), tmp_path / "i3d_torchscript.pt")


@pytest.fixture
def tiny_inception(tmp_path):
    torch.manual_seed(2)
    return _script(TinyInception(), tmp_path / "inception-2015-12-05.pt")


def moving_video(seed: float, t: int = 16, h: int = 32, w: int = 32, speed: float = 0.4) -> np.ndarray:
    """Smooth coloured pattern drifting horizontally: uint8 (T, H, W, 3)."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    frames = []
    for k in range(t):
        base = np.sin(7 * x + speed * k + seed) * np.cos(5 * y + 0.5 * seed)
        img = np.stack([base, np.roll(base, 3, 0), -base], -1) * 0.5 + 0.5
        frames.append((img * 255).astype(np.uint8))
    return np.stack(frames)


@pytest.fixture
def video_dirs(tmp_path) -> tuple[Path, Path]:
    """real: 4 mp4 of 16 frames + one 10-frame video (dropped); fake: 4 npz of 20 frames, one grayscale."""
    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir()
    fake.mkdir()
    for i in range(4):
        save_npz(moving_video(i), real / f"r{i}.npz")
    write_mp4(moving_video(9, t=10), real / "short.mp4")
    for i in range(4):
        v = moving_video(i + 0.5, t=20) // 2 + 20
        if i == 3:
            v = v[..., 0]  # grayscale (T, H, W)
            np.savez_compressed(fake / f"video_{i:04d}.npz", frames=v)
        else:
            save_npz(v, fake / f"video_{i:04d}.npz")
    return real, fake
