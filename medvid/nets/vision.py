"""CLIP, DINO and VideoMAE(-v2) feature networks from local paths, with each protocol's preprocessing.

Each loader accepts either a Hugging Face model folder (``config.json`` + weights, loaded with
``transformers`` offline) or a TorchScript file whose ``forward`` takes the preprocessed batch
and returns the feature vectors. The returned object maps uint8 frames/clips to features:

* ``ClipImageNet(frames (N, H, W, 3)) -> (N, D)``: CLIP image embeddings (projection output).
  Preprocessing of CLIP / VBench ``clip_transform``: shorter side to 224 (bicubic), centre crop
  224, CLIP mean/std.
* ``DinoNet(frames) -> (N, D)``: DINO ViT CLS token after the final norm. VBench
  ``dino_transform``: shorter side to 224 (bilinear), ImageNet mean/std, no crop.
* ``VideoMAENet(clips (B, T, H, W, 3)) -> (B, D)``: ``fc_norm(mean of tokens)`` (cd-fvd's
  ``forward_features``); input bilinear-resized to 224x224, in [0, 1], no mean/std (cd-fvd's
  ``preprocess_videomae``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from medvid.utils.weights import require_weights

__all__ = ["load_clip", "load_dino", "load_videomae", "ClipImageNet", "DinoNet", "VideoMAENet"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.permute(0, 3, 1, 2).float() / 255.0  # (N, H, W, 3) uint8 -> (N, 3, H, W) [0, 1]


def _resize_short(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    s = size / min(h, w)
    out = (max(size, round(h * s)), max(size, round(w * s)))
    return F.interpolate(x, size=out, mode=mode, align_corners=False, antialias=mode != "nearest").clamp(0, 1)


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _is_torchscript(p: Path) -> bool:
    return p.is_file()


def _load(path, what: str, expected: str, flag: str):
    p = require_weights(path, what, expected, hint=f"Pass it with {flag} PATH (a Hugging Face model folder or a TorchScript file).")
    if _is_torchscript(p):
        try:
            return p, torch.jit.load(str(p), map_location="cpu").eval()
        except (RuntimeError, ValueError) as e:
            if flag == "--videomae":  # the original VideoMAE-v2 .pth (a plain state dict)
                from medvid.nets.videomae_v2 import load_videomae_v2_checkpoint

                try:
                    return p, load_videomae_v2_checkpoint(p)
                except (RuntimeError, ValueError, KeyError, OSError) as e2:
                    raise ValueError(f"{flag} {p}: neither TorchScript nor a VideoMAE-v2 checkpoint ({e2}); pass {expected}") from e2
            raise ValueError(f"{flag} {p}: not a TorchScript file ({str(e).splitlines()[0]}); pass {expected}") from e
    if not (p / "config.json").is_file():
        raise ValueError(f"{flag} {p}: a folder without config.json; pass a Hugging Face model folder or a TorchScript file")
    return p, None


class ClipImageNet:
    """CLIP image embeddings (for frame consistency and VBench background consistency)."""

    def __init__(self, path, resolution: int = 224, flag: str = "--clip"):
        p, ts = _load(path, "CLIP features (frame consistency, background consistency)", "a CLIP model (ViT-B/32 for VBench, ViT-L/14 for LOVEU-TGVE)", flag)
        self.path, self.resolution, self.ts = p, resolution, ts
        if ts is None:
            from transformers import CLIPVisionModelWithProjection

            self.model = CLIPVisionModelWithProjection.from_pretrained(str(p), local_files_only=True).eval()
            self.resolution = int(self.model.config.image_size)

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = _center_crop(_resize_short(_to_float(frames), self.resolution, "bicubic"), self.resolution)
        x = _normalize(x, CLIP_MEAN, CLIP_STD)
        if self.ts is not None:
            return self.ts(x).float()
        return self.model(pixel_values=x).image_embeds.float()


class DinoNet:
    """DINO ViT CLS features (VBench subject consistency)."""

    def __init__(self, path, resolution: int = 224, flag: str = "--dino"):
        p, ts = _load(path, "subject consistency", "DINO ViT-B/16 (facebook/dino-vitb16)", flag)
        self.path, self.resolution, self.ts = p, resolution, ts
        if ts is None:
            from transformers import ViTModel

            self.model = ViTModel.from_pretrained(str(p), local_files_only=True, add_pooling_layer=False).eval()

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = _normalize(_resize_short(_to_float(frames), self.resolution, "bilinear"), IMAGENET_MEAN, IMAGENET_STD)
        if self.ts is not None:
            return self.ts(x).float()
        return self.model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 0].float()


class VideoMAENet:
    """VideoMAE-v2 clip features for CD-FVD: fc_norm(mean of tokens)."""

    def __init__(self, path, resolution: int = 224, flag: str = "--videomae"):
        p, ts = _load(path, "CD-FVD", "VideoMAE-v2 ViT-g/14 SSv2 (vit_g_hybrid_pt_1200e_ssv2_ft.pth as released, "
                      "a Hugging Face VideoMAE folder, or a TorchScript export)", flag)
        self.path, self.resolution = p, resolution
        from transformers import VideoMAEForVideoClassification

        if isinstance(ts, VideoMAEForVideoClassification):  # converted from the original checkpoint
            self.model, self.ts = ts, None
        elif ts is None:
            self.model, self.ts = VideoMAEForVideoClassification.from_pretrained(str(p), local_files_only=True).eval(), None
        else:
            self.ts = ts
        if self.ts is None:
            self.resolution = int(self.model.config.image_size)

    def to(self, device) -> "VideoMAENet":
        (self.ts if self.ts is not None else self.model).to(device)
        return self

    @torch.inference_mode()
    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        b, t = clips.shape[:2]
        x = _to_float(clips.flatten(0, 1))  # (B*T, 3, H, W)
        # cd-fvd: F.interpolate(size=(224, 224), bilinear, align_corners=False), no antialias
        x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        x = x.view(b, t, 3, self.resolution, self.resolution)  # (B, T, 3, R, R)
        if self.ts is not None:
            return self.ts(x.transpose(1, 2).contiguous()).float()  # TorchScript takes (B, 3, T, R, R)
        m = self.model
        tokens = m.videomae(pixel_values=x).last_hidden_state  # HF takes (B, T, 3, R, R)
        return (m.fc_norm(tokens.mean(1)) if m.fc_norm is not None else tokens[:, 0]).float()


def load_clip(path, flag: str = "--clip") -> ClipImageNet:
    return ClipImageNet(path, flag=flag)


def load_dino(path) -> DinoNet:
    return DinoNet(path)


def load_videomae(path) -> VideoMAENet:
    return VideoMAENet(path)
