"""Video sets for evaluation: folders of video files, StyleGAN-V-style folders of frame folders,
and ``.npz`` files holding ``frames`` uint8 (T, H, W, 3) (what ``medvid sample`` writes).

A folder is scanned one level deep. When one video is present in several forms (``medvid sample``
writes ``x.npz`` beside ``x.mp4`` and ``x.gif``) the least lossy one is used: npz, then a frame
folder, then a video container; so nothing is counted twice. Single images (contact sheets) and
JSON sidecars are ignored, except in a folder that holds images and no video at all (what
``medvid generate --frames 1`` writes): then each image is a one-frame source, an image set,
evaluated with the frame metrics (FID, IS, fd_effnet_frame) only.

Clip selection follows StyleGAN-V (``fvd2048_16f``): real clips start at a random frame (seeded),
videos shorter than the clip are dropped, generated clips start at frame 0; frames are read at the
stored resolution (no resize in the loader); grayscale becomes 3 equal channels.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvid.data.readers import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, DICOM_EXTENSIONS, NIFTI_EXTENSIONS, natural_key, open_video

__all__ = ["VideoSource", "list_videos", "select_clips", "read_frames", "fingerprint", "Clip", "is_image_set"]

_PREFERENCE = {"npz": 0, "frames": 1, "video": 2, "image": 3}


def _rgb3(frames: np.ndarray, where: str) -> np.ndarray:
    f = np.asarray(frames)
    if f.dtype != np.uint8:
        raise ValueError(f"{where}: frames must be uint8 0..255, got {f.dtype}; save them with medvid.utils.video.to_uint8")
    if f.ndim == 3:
        f = f[..., None]
    if f.ndim != 4 or f.shape[-1] not in (1, 3):
        raise ValueError(f"{where}: frames must be (T, H, W, 3) or (T, H, W), got {f.shape}")
    return np.repeat(f, 3, axis=-1) if f.shape[-1] == 1 else f


@dataclass
class VideoSource:
    """One video on disk: ``kind`` is ``npz``, ``frames`` (a folder of images), ``video`` or
    ``image`` (a single picture: a one-frame video)."""

    path: Path
    kind: str
    _frames: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        n = self.path.name
        return n[: -len(".nii.gz")] if n.endswith(".nii.gz") else (self.path.stem if self.kind != "frames" else n)

    def _npz(self) -> np.ndarray:
        if self._frames is None:
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    if "frames" not in z:
                        raise ValueError(f"{self.path}: the npz holds no 'frames' array (keys: {list(z.keys())}); "
                                         "save videos with medvid.utils.video.save_npz")
                    self._frames = _rgb3(z["frames"], str(self.path))
            except (OSError, EOFError) as e:
                raise ValueError(f"{self.path}: cannot read the npz ({e}); re-create it") from e
        return self._frames

    def _image(self) -> np.ndarray:
        if self._frames is None:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(self.path) as im:
                    self._frames = np.asarray(im.convert("RGB"))[None]
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:  # the header's size too
                raise ValueError(f"{self.path}: cannot read the image ({e}); re-create it") from e
        return self._frames

    @property
    def num_frames(self) -> int:
        if self.kind == "image":
            return 1
        if self.kind == "npz":
            return int(self._npz().shape[0])
        with open_video(self.path) as r:
            return int(r.num_frames)

    def read(self, indices=None) -> np.ndarray:
        """uint8 (n, H, W, 3) frames at ``indices`` (all frames if None)."""
        if self.kind in ("npz", "image"):
            f = self._npz() if self.kind == "npz" else self._image()
            return f if indices is None else f[np.asarray(indices)]
        with open_video(self.path) as r:
            idx = np.arange(r.num_frames) if indices is None else np.asarray(indices)
            return _rgb3(r.read(idx), str(self.path))


def _classify(p: Path) -> str | None:
    name = p.name.lower()
    if name.startswith("."):
        return None
    if p.is_dir():
        has_img = any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(p))
        return "frames" if has_img else None
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(VIDEO_EXTENSIONS + DICOM_EXTENSIONS + NIFTI_EXTENSIONS):
        return "video"
    return None


def list_videos(root: str | Path, what: str = "--real") -> list[VideoSource]:
    """All videos in ``root`` (naturally sorted by name); ``what`` names the flag in errors."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{what} {root}: not a folder; pass a folder of videos, of frame folders or of .npz files")
    best: dict[str, VideoSource] = {}
    for p in root.iterdir():
        kind = _classify(p)
        if kind is None:
            continue
        src = VideoSource(p, kind)
        old = best.get(src.name)
        if old is None or _PREFERENCE[kind] < _PREFERENCE[old.kind]:
            best[src.name] = src
    if not best:  # an image set: every picture is a one-frame source
        for p in root.iterdir():
            if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_EXTENSIONS):
                best[p.stem] = VideoSource(p, "image")
    if not best:
        raise ValueError(
            f"{what} {root}: no videos found (looked for video files {', '.join(VIDEO_EXTENSIONS[:5])}..., "
            "folders of png/jpg frames, .npz files with a 'frames' array, and for image sets png/jpg files)"
        )
    return [best[k] for k in sorted(best, key=natural_key)]


@dataclass
class Clip:
    source: VideoSource
    start: int
    length: int

    def read(self) -> np.ndarray:
        return self.source.read(np.arange(self.start, self.start + self.length))


def select_clips(sources: list[VideoSource], num_clips: int, length: int = 16, random_start: bool = True,
                 seed: int = 0) -> tuple[list[Clip], int]:
    """One clip per video, up to ``num_clips`` videos -> (clips, number of videos dropped as too short).

    ``random_start`` (real data): videos are taken in a seeded random order and each clip starts at a
    seeded random frame. Otherwise (generated data): videos in name order, clips from frame 0.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sources)) if random_start else np.arange(len(sources))
    clips, dropped = [], 0
    for i in order:
        if len(clips) >= num_clips:
            break
        src = sources[int(i)]
        n = src.num_frames
        if n < length:
            dropped += 1
            continue
        start = int(rng.integers(0, n - length + 1)) if random_start else 0
        clips.append(Clip(src, start, length))
    return clips, dropped


def read_frames(sources: list[VideoSource], max_frames: int | None = None):
    """Yield (source, uint8 (T, H, W, 3)) for every video, stopping after ``max_frames`` frames."""
    total = 0
    for src in sources:
        if max_frames is not None and total >= max_frames:
            return
        f = src.read()
        if max_frames is not None:
            f = f[: max_frames - total]
        total += len(f)
        yield src, f


def is_image_set(sources: list[VideoSource]) -> bool:
    return bool(sources) and all(s.kind == "image" for s in sources)


def fingerprint(sources: list[VideoSource]) -> str:
    """SHA-256 of every file's name and bytes: the content hash that keys cached real features."""
    h = hashlib.sha256()
    for src in sources:
        h.update(src.name.encode() + b"\0")
        files = [src.path] if src.path.is_file() else sorted(
            (p for p in src.path.iterdir() if p.is_file()), key=lambda p: natural_key(p.name))
        for f in files:
            h.update(f.name.encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()
