"""Captioned clips for Wan fine-tuning: ``manifest.jsonl`` (medvid's manifest with caption fields,
as MedVideoCap-55K provides) or ``metadata.csv`` with columns ``video,prompt`` (the public Wan
LoRA recipe's format).

Frames are read with medvid's readers (``medvid.data.readers.open_video``); a clip is
``num_frames`` frames taken every ``frame_stride`` source frames from a start drawn with the
caller's generator, resized (shorter side) and centre-cropped to ``height x width``, and returned
as ``(T, 3, H, W)`` float in [-1, 1].
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CaptionedVideo:
    path: str
    caption: str


def read_captioned_videos(path: str | Path, caption_field: str = "caption", split: str | None = "train") -> list[CaptionedVideo]:
    """``manifest.jsonl`` (or a folder holding one) or ``metadata.csv`` -> (video path, caption) list.

    Relative video paths resolve against the file's folder. Entries without a caption are an error
    naming the line, since silently training them as unconditional would change the recipe.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("manifest.jsonl", "metadata.csv"):
            if (p / name).is_file():
                p = p / name
                break
    if not p.is_file():
        raise ValueError(
            f"data.path {path}: no such file; give a manifest.jsonl (medvid prepare + caption) or a "
            "metadata.csv with columns video,prompt"
        )
    if p.suffix == ".csv":
        items = _read_csv(p, caption_field)
    elif p.suffix in (".jsonl", ".json"):
        items = _read_manifest(p, caption_field, split)
    else:
        raise ValueError(f"data.path {p}: unknown format {p.suffix!r}; use manifest.jsonl or metadata.csv")
    if not items:
        raise ValueError(f"{p}: no captioned videos found (split={split!r}); check the file and data.split")
    return items


def _read_csv(p: Path, caption_field: str) -> list[CaptionedVideo]:
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        cap_col = "prompt" if "prompt" in cols else caption_field
        if "video" not in cols or cap_col not in cols:
            raise ValueError(f"{p}: needs columns video,prompt (found {cols}); rename the header row")
        out = []
        for i, row in enumerate(reader, start=2):  # line 1 is the header
            video, cap = (row.get("video") or "").strip(), (row.get(cap_col) or "").strip()
            if not video or not cap:
                raise ValueError(f"{p}, line {i}: empty video or {cap_col}; fill it in or delete the row")
            vp = Path(video)
            out.append(CaptionedVideo(str(vp if vp.is_absolute() else p.parent / vp), cap))
    return out


def _read_manifest(p: Path, caption_field: str, split: str | None) -> list[CaptionedVideo]:
    from medvid.data.manifest import read_manifest

    out = []
    for e in read_manifest(p):
        if split is not None and e.get("split", "train") != split:
            continue
        cap = e.get(caption_field) or (e.get("caption") if caption_field != "caption" else None)
        if not isinstance(cap, str) or not cap.strip():
            raise ValueError(
                f"{p}: video {e['id']!r} has no {caption_field!r}; caption it (medvid caption) or set "
                "data.caption_field to a field the manifest has (caption, brief_caption, detailed_caption)"
            )
        out.append(CaptionedVideo(e["path"], cap.strip()))
    return out


def resize_center_crop(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(T, 3, h, w) -> (T, 3, height, width): scale so both sides cover, then centre-crop."""
    _, _, h, w = video.shape
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    if (nh, nw) != (h, w):
        video = F.interpolate(video, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - height) // 2, (nw - width) // 2
    return video[:, :, top : top + height, left : left + width]


def load_clip(
    path: str, num_frames: int, height: int, width: int, frame_stride: int = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One training clip -> (num_frames, 3, height, width) float in [-1, 1].

    Short videos repeat their last frame, so every clip has the length Wan's VAE needs (4k + 1).
    """
    from medvid.data.readers import open_video

    with open_video(path) as reader:
        n = reader.num_frames
        span = (num_frames - 1) * frame_stride + 1
        start = int(torch.randint(0, n - span + 1, (1,), generator=generator)) if n > span else 0
        idx = np.minimum(start + np.arange(num_frames) * frame_stride, n - 1)
        frames = reader.read(idx)  # (T, H, W, 3) uint8
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    x = resize_center_crop(x, height, width)
    return (x / 127.5 - 1.0).clamp(-1.0, 1.0)


class CaptionedClipDataset(torch.utils.data.Dataset):
    """Items ``{"video": (T, 3, H, W) in [-1, 1], "caption": str}``; the clip start comes from
    ``seed`` + item index + epoch, so a resumed run reads the same clips."""

    def __init__(self, items: list[CaptionedVideo], num_frames: int, height: int, width: int, frame_stride: int = 1, seed: int = 0):
        if (num_frames - 1) % 4 != 0:
            raise ValueError(f"data.num_frames={num_frames}: Wan's VAE needs 4k + 1 frames (e.g. 17, 33, 49, 81)")
        if height % 16 or width % 16:
            raise ValueError(f"data.height/width {height}x{width}: both must be multiples of 16 (e.g. 480x832)")
        self.items, self.num_frames, self.height, self.width = items, num_frames, height, width
        self.frame_stride, self.seed, self.epoch = frame_stride, seed, 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 7919 + i)
        it = self.items[i]
        return {"video": load_clip(it.path, self.num_frames, self.height, self.width, self.frame_stride, g), "caption": it.caption}
