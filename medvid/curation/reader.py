"""Opening source videos for curation, captioning and judging.

``open_source`` is the data stage's ``medvid.data.readers.open_video`` (containers, DICOM cine,
NIfTI, frame folders; lazy decoding; ``VideoReadError`` naming the file and the fix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medvid.data.readers import VideoReadError, open_video as open_source  # noqa: F401  (re-exported)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ogv", ".gif",
                  ".dcm", ".dicom", ".nii", ".nii.gz")


def uniform_indices(num_frames: int, n: int) -> np.ndarray:
    """``n`` indices spread uniformly over ``num_frames`` frames, first and last included.

    Clips shorter than ``n`` repeat frames, so a model always sees exactly ``n`` images.
    """
    if num_frames <= 0:
        raise ValueError(f"cannot sample frames from a video with {num_frames} frames")
    return np.linspace(0, num_frames - 1, n).round().astype(np.int64)


def sample_frames(path: str | Path, n: int = 8) -> np.ndarray:
    """uint8 ``(n, H, W, 3)``: ``n`` uniformly sampled frames of the video at ``path``."""
    reader = open_source(path)
    try:
        return reader.read(uniform_indices(reader.num_frames, n))
    finally:
        reader.close()


def find_videos(src: str | Path) -> list[Path]:
    """Video files under ``src`` (a file or a folder, searched recursively), sorted."""
    src = Path(src)
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise ValueError(f"{src}: no such file or folder; pass a video file or a folder of videos")
    out = [p for p in src.rglob("*") if p.is_file() and p.name.lower().endswith(VIDEO_SUFFIXES)
           and not p.name.startswith(".")]
    return sorted(out)
