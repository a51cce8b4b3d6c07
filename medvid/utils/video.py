"""Writing videos people can open: mp4 (H.264 through PyAV), gif, PNG contact sheets, npz.

Frames everywhere in medvid's I/O are uint8 arrays shaped (T, H, W, 3). Model-side tensors are
float in [-1, 1]; ``to_uint8`` converts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


def to_uint8(video) -> np.ndarray:
    """Float video in [-1, 1] as (T, 3, H, W) or (T, H, W, 3) tensor/array -> uint8 (T, H, W, 3)."""
    try:
        import torch

        if isinstance(video, torch.Tensor):
            video = video.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    v = np.asarray(video)
    if v.dtype == np.uint8:
        out = v
    else:
        out = np.clip((v.astype(np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    if out.ndim == 4 and out.shape[1] in (1, 3) and out.shape[-1] not in (1, 3):
        out = out.transpose(0, 2, 3, 1)  # (T, C, H, W) -> (T, H, W, C)
    if out.ndim == 3:
        out = out[..., None]
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def write_mp4(frames, path: str | Path, fps: float = 8.0, crf: int = 18) -> Path:
    """Write frames as H.264 mp4 (yuv420p, so every player opens it).

    ``frames`` is a whole video (anything ``to_uint8`` takes) or an iterable of uint8 (H, W, 3)
    frames, which is streamed: a long clip is never held in memory. Odd sizes are padded by one
    pixel (H.264 with yuv420p needs even width and height).
    """
    import itertools
    from fractions import Fraction

    import av

    it = iter(to_uint8(frames)) if hasattr(frames, "shape") else iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"write_mp4({path}): no frames to write")
    h, w = first.shape[:2]
    ph, pw = h + (h % 2), w + (w % 2)
    path = Path(path)
    tmp = _atomic_target(path)
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in itertools.chain([first], it):
            if (ph, pw) != (h, w):
                frame = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def write_gif(frames: np.ndarray, path: str | Path, fps: float = 8.0) -> Path:
    from PIL import Image

    frames = to_uint8(frames)
    path = Path(path)
    tmp = _atomic_target(path)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=max(1, int(1000 / fps)), loop=0
    )
    os.replace(tmp, path)
    return path


def contact_sheet(videos: Sequence[np.ndarray], path: str | Path, max_frames: int = 8, pad: int = 2) -> Path:
    """One row per video, ``max_frames`` evenly spaced frames per row, saved as PNG."""
    from PIL import Image

    vids = [to_uint8(v) for v in videos]
    if not vids:
        raise ValueError("contact_sheet needs at least one video")
    h, w = vids[0].shape[1:3]
    n = min(max_frames, max(v.shape[0] for v in vids))
    sheet = np.full((len(vids) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for r, v in enumerate(vids):
        idx = np.linspace(0, v.shape[0] - 1, n).round().astype(int)
        for c, i in enumerate(idx):
            f = v[i]
            if f.shape[:2] != (h, w):
                f = np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR))
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            sheet[y : y + h, x : x + w] = f
    path = Path(path)
    tmp = _atomic_target(path)
    Image.fromarray(sheet).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_npz(frames: np.ndarray, path: str | Path, **meta) -> Path:
    path = Path(path)
    tmp = _atomic_target(path)
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, frames=to_uint8(frames), **{k: np.asarray(v) for k, v in meta.items()})
    os.replace(tmp, path)
    return path
