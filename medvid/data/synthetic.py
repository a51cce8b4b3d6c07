"""Small synthetic videos, DICOM and NIfTI files for tests, benchmarks and demos.

Frames carry their own index: a white bar ``index % width`` pixels wide on row block
``[0, height // 4)`` and a red level ``(index * 5) % 256``, so a test can tell from the pixels which
frame a reader returned, independent of the reader's own bookkeeping.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

# (extension, container format, codec, pix_fmt): the containers and codecs the tests cover.
CONTAINERS = {
    "mp4": (".mp4", "mp4", "libx264", "yuv420p"),
    "avi": (".avi", "avi", "mpeg4", "yuv420p"),
    "mov": (".mov", "mov", "mjpeg", "yuvj420p"),
    "mkv": (".mkv", "matroska", "ffv1", "yuv420p"),
    "webm": (".webm", "webm", "libvpx-vp9", "yuv420p"),
}


def index_frame(i: int, height: int, width: int, color: tuple[int, int, int] | None = None) -> np.ndarray:
    """uint8 (H, W, 3) frame whose content encodes ``i`` (see the module docstring)."""
    f = np.zeros((height, width, 3), np.uint8)
    if color is not None:
        f[:] = color
    else:
        f[..., 0] = (i * 5) % 256
    f[: max(height // 4, 1), : i % width] = 255
    return f


def bar_width(frame: np.ndarray) -> int:
    """Recover the frame index (mod width) written by ``index_frame`` from decoded pixels."""
    band = frame[: max(frame.shape[0] // 4, 1) // 2 + 1].astype(np.float32).mean(0)  # (W, 3)
    # Luma is stored at full resolution by 4:2:0 codecs (chroma is not): threshold it. The bar is
    # white (luma 255); backgrounds written here stay below luma 150.
    luma = band @ np.array([0.299, 0.587, 0.114], np.float32)
    return int((luma > 200).sum())


def write_video(
    path: str | os.PathLike,
    num_frames: int = 24,
    height: int = 48,
    width: int = 64,
    kind: str = "mp4",
    fps: float = 25.0,
    gop: int | None = 8,
    frames: np.ndarray | None = None,
    color: tuple[int, int, int] | None = None,
    pix_fmt: str | None = None,
    codec: str | None = None,
    faststart: bool = False,
) -> Path:
    """Write a small test video with PyAV (``kind`` in ``CONTAINERS``)."""
    import av

    _, fmt, default_codec, default_pix = CONTAINERS[kind]
    path = Path(path)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=fmt, options=options) as c:
        s = c.add_stream(codec or default_codec, rate=Fraction(fps).limit_denominator(1000))
        s.width, s.height, s.pix_fmt = width, height, pix_fmt or default_pix
        if gop:
            s.codec_context.gop_size = gop
        for i in range(num_frames):
            f = frames[i] if frames is not None else index_frame(i, height, width, color)
            fmt_in = "rgb24" if f.ndim == 3 else ("gray16le" if f.dtype == np.uint16 else "gray")
            for p in s.encode(av.VideoFrame.from_ndarray(f, format=fmt_in)):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_dicom(
    path: str | os.PathLike,
    frames: np.ndarray,
    frame_time_ms: float | None = 40.0,
    bits_stored: int | None = None,
    window: tuple[float, float] | None = None,
    photometric: str | None = None,
) -> Path:
    """Uncompressed multi-frame DICOM from ``frames`` (T, H, W) uint8/uint16 or (T, H, W, 3) uint8."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    frames = np.ascontiguousarray(frames)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"  # multi-frame grayscale byte SC
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.NumberOfFrames = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[1:3]
    color = frames.ndim == 4
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if color else "MONOCHROME2")
    if color:
        ds.PlanarConfiguration = 0
    bits = 16 if frames.dtype == np.uint16 else 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if frame_time_ms is not None:
        ds.FrameTime = frame_time_ms
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = frames.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)


def write_nifti(path: str | os.PathLike, data: np.ndarray, tr: float = 0.5, time_unit: str = "sec") -> Path:
    """NIfTI-1 file from ``data`` (x, y, z, t) with repetition time ``tr``."""
    import nibabel as nib

    img = nib.Nifti1Image(data, np.eye(4))
    zooms = (1.0, 1.0, 1.0, tr)[: data.ndim]
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", time_unit if data.ndim == 4 else None)
    nib.save(img, str(path))
    return Path(path)
