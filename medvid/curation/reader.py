"""Opening source videos for curation, captioning and judging.

``open_source`` uses the data stage's ``medvid.data.readers.open_video`` (containers, DICOM cine,
NIfTI, frame folders; lazy decoding). If that module cannot be imported (a trimmed install), a
small in-memory reader (PyAV for containers, pydicom for DICOM) with the same interface is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

try:  # the data stage's readers: the normal path
    from medvid.data.readers import VideoReadError, open_video as _open_video
except ImportError:  # pragma: no cover - exercised only when medvid.data is missing
    _open_video = None

    class VideoReadError(ValueError):  # type: ignore[no-redef]
        def __init__(self, path, reason: str, fix: str = ""):
            self.path, self.reason, self.fix = str(path), reason, fix
            super().__init__(f"{path}: {reason}" + (f"; {fix}" if fix else ""))


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ogv", ".gif",
                  ".dcm", ".dicom", ".nii", ".nii.gz")


class InMemoryReader:
    """Fallback reader: decodes the whole file once (fine for clips, not for hour-long recordings)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise VideoReadError(self.path, "file does not exist", "check the path")
        try:
            if self.path.lower().endswith((".dcm", ".dicom")):
                self._frames, self.fps = _read_dicom(self.path)
            else:
                self._frames, self.fps = _read_av(self.path)
        except VideoReadError:
            raise
        except Exception as e:  # noqa: BLE001 - any decoder failure is a bad input file
            raise VideoReadError(self.path, f"cannot be decoded ({e})", "re-export it as mp4 or DICOM") from e
        if len(self._frames) == 0:
            raise VideoReadError(self.path, "holds no frames", "re-export it")
        self.num_frames, self.height, self.width = self._frames.shape[:3]
        self.metadata: dict[str, Any] = {}

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self._frames[np.asarray(indices, dtype=np.int64).reshape(-1)]

    def close(self) -> None:
        pass


def _read_av(path: str) -> tuple[np.ndarray, float]:
    import av

    with av.open(path) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate or 0) or 30.0
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    return np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8), fps


def _read_dicom(path: str) -> tuple[np.ndarray, float]:
    import pydicom

    ds = pydicom.dcmread(path)
    a = np.asarray(ds.pixel_array)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] != 3):
        a = a[None] if a.ndim == 2 else a
        a = np.repeat(a[..., None], 3, axis=-1)
    elif a.ndim == 3:
        a = a[None]
    if a.dtype != np.uint8:
        lo, hi = np.percentile(a, [0.5, 99.5])
        a = np.clip((a - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    ft = float(getattr(ds, "FrameTime", 0) or 0)
    return a, (1000.0 / ft if ft > 0 else 30.0)


def open_source(path: str | Path):
    """A reader with ``num_frames, fps, height, width, metadata, read(indices)``."""
    if _open_video is not None:
        return _open_video(path)
    return InMemoryReader(path)  # pragma: no cover


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
