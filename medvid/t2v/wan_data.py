"""Captioned clips for Wan fine-tuning: ``manifest.jsonl`` (medvid's manifest with caption fields,
as MedVideoCap-55K provides) or ``metadata.csv`` with columns ``video,prompt`` (the public Wan
LoRA recipe's format).

Frames are read with medvid's readers (``medvid.data.readers.open_video``). Each clip goes to a
(height, width, frames) bucket (``medvid.t2v.buckets``); an item is the bucket's number of frames
taken every ``frame_stride`` source frames from a start drawn with a seeded generator, resized to
cover the bucket and centre-cropped, as ``(T, 3, H, W)`` float in [-1, 1].

Clips that fit no bucket and captions longer than the text encoder reads are skipped with a
warning naming the file and the fix (``assign_buckets``, ``check_caption_lengths``): one bad clip
does not stop a long job; a data set with nothing left is an error.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medvid.t2v.buckets import Bucket, NoBucketError, assign_bucket
from medvid.utils.logging import get_logger

log = get_logger("t2v.data")


@dataclass(frozen=True)
class CaptionedVideo:
    path: str
    caption: str
    height: int | None = None
    """Frame size and length when the manifest records them (metadata.csv: probed from the file)."""
    width: int | None = None
    num_frames: int | None = None


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
        if "start_frame" in e:
            raise ValueError(
                f"{p}: video {e['id']!r} is a segment of {e['path']} (`medvid prepare --holdout-tail`); Wan training "
                "reads whole files, so prepare this data without --holdout-tail"
            )
        cap = e.get(caption_field) or (e.get("caption") if caption_field != "caption" else None)
        if not isinstance(cap, str) or not cap.strip():
            raise ValueError(
                f"{p}: video {e['id']!r} has no {caption_field!r}; caption it (medvid caption) or set "
                "data.caption_field to a field the manifest has (caption, brief_caption, detailed_caption)"
            )
        out.append(CaptionedVideo(e["path"], cap.strip(), int(e["height"]), int(e["width"]), int(e["num_frames"])))
    return out


def probe(item: CaptionedVideo) -> CaptionedVideo:
    """Fill in frame size and length from the file header (no frame is decoded)."""
    if item.height is not None and item.width is not None and item.num_frames is not None:
        return item
    from medvid.data.readers import open_video

    with open_video(item.path) as r:
        return replace(item, height=int(r.height), width=int(r.width), num_frames=int(r.num_frames))


def assign_buckets(items: Sequence[CaptionedVideo], buckets: Sequence[Bucket], frame_stride: int = 1,
                   max_crop: float = 0.3) -> tuple[list[CaptionedVideo], list[Bucket], dict[str, str]]:
    """-> (kept items, the bucket of each, {path: reason} of the skipped ones).

    A clip whose file cannot be read or that fits no bucket is skipped with a warning; if no clip
    is left the data set is unusable and that is an error naming the first reasons."""
    from medvid.data.readers import VideoReadError

    kept, chosen, skipped = [], [], {}
    for it in items:
        try:
            it = probe(it)
            usable = (it.num_frames - 1) // frame_stride + 1  # frames at the stride
            b = assign_bucket(it.height, it.width, usable, buckets, max_crop, where=it.path)
        except (NoBucketError, VideoReadError, OSError) as e:
            skipped[it.path] = str(e)
            log.warning("skipping %s", e if isinstance(e, NoBucketError) else f"{it.path}: {e}")
            continue
        kept.append(it)
        chosen.append(b)
    if not kept:
        first = "; ".join(list(skipped.values())[:3])
        raise ValueError(f"no clip fits the configured buckets ({len(skipped)} skipped): {first}")
    if skipped:
        log.warning("%d of %d clip(s) skipped (see the warnings above)", len(skipped), len(items))
    return kept, chosen, skipped


def check_caption_lengths(items: Sequence[CaptionedVideo], tokenizer, max_length: int, where: str = "caption"
                          ) -> tuple[list[int], dict[str, str]]:
    """Indices of items whose caption fits ``max_length`` tokens, and {path: reason} for the others.

    Wan's pipeline silently cuts a prompt at ``max_sequence_length`` tokens; a training caption
    that is cut teaches the model a description it never sees whole, so it is skipped instead."""
    keep, skipped = [], {}
    for i, it in enumerate(items):
        n = caption_tokens(tokenizer, it.caption)
        if n > max_length:
            skipped[it.path] = (f"{it.path}: its {where} is {n} tokens, over the text encoder's {max_length} "
                                "(max_sequence_length); shorten the caption or raise max_sequence_length")
            log.warning("skipping %s", skipped[it.path])
        else:
            keep.append(i)
    return keep, skipped


def caption_tokens(tokenizer, text: str) -> int:
    """Tokens the T5 tokenizer makes of ``text`` (with the end token), untruncated."""
    return len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])


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
    """Items ``{"video": (T, 3, H, W) in [-1, 1], "caption": str, "path": str}`` at each item's
    bucket; keys are ``(index, epoch)`` and the clip start comes from ``seed`` + index + epoch, so a
    resumed run reads the same clips."""

    def __init__(self, items: list[CaptionedVideo], buckets: list[Bucket], frame_stride: int = 1, seed: int = 0):
        assert len(items) == len(buckets)
        self.items, self.buckets, self.frame_stride, self.seed = items, buckets, frame_stride, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        i, epoch = key
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 7919 + i)
        it, b = self.items[i], self.buckets[i]
        video = load_clip(it.path, b.frames, b.height, b.width, self.frame_stride, g)
        return {"video": video, "caption": it.caption, "path": it.path}
