"""Frame readers behind one interface: containers (PyAV), DICOM cine, NIfTI 4D, frame folders.

Every reader exposes ``num_frames, fps, height, width, metadata`` and ``read(indices)`` returning
uint8 frames ``(n, H, W, 3)``. Readers decode lazily: opening reads headers (and, for containers,
the packet index, which needs no decoding), and ``read`` decodes only what it is asked for, so a
long recording is never held whole in memory. Grayscale becomes 3 equal channels; more than 8 bits
per sample are windowed to 8 bits (DICOM: the header's VOI window when present, otherwise robust
percentiles of a few sampled frames; the same window is used for every frame of a video so
brightness does not flicker).

Any problem with the input raises ``VideoReadError(path, reason)``, a ``ValueError`` whose message
names the file, what is wrong and what to do about it.
"""

from __future__ import annotations

import bisect
import os
import re
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ogv", ".gif")
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_FPS = 30.0


class VideoReadError(ValueError):
    """A file that cannot be read as a video; the message names the file, the problem and the fix."""

    def __init__(self, path: str | os.PathLike, reason: str, fix: str = ""):
        self.path = str(path)
        self.reason = reason
        self.fix = fix
        msg = f"{self.path}: {reason}"
        if fix:
            msg += f"; {fix}"
        super().__init__(msg)

    def __reduce__(self):  # picklable across DataLoader workers
        return (VideoReadError, (self.path, self.reason, self.fix))


def natural_key(name: str) -> list:
    """'frame10.png' sorts after 'frame9.png'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def has_suffix(path: str | Path, suffixes: Sequence[str]) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in suffixes)


def window_to_uint8(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear window [lo, hi] -> [0, 255] (values outside are clipped)."""
    x = x.astype(np.float32)
    scale = 255.0 / max(float(hi) - float(lo), 1e-6)
    return np.clip((x - lo) * scale + 0.5, 0, 255).astype(np.uint8)


def robust_window(samples: Sequence[np.ndarray]) -> tuple[float, float]:
    """0.5th..99.5th percentile of the sampled frames: ignores a few hot pixels / burnt-in text."""
    flat = np.concatenate([np.asarray(s, dtype=np.float32).ravel() for s in samples])
    if flat.size > 2_000_000:
        flat = flat[:: flat.size // 2_000_000 + 1]
    lo, hi = np.percentile(flat, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
        if hi <= lo:
            hi = lo + 1.0
    return float(lo), float(hi)


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """(H, W) / (H, W, 1) / (H, W, 3) / (H, W, 4) uint8 -> (H, W, 3)."""
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    elif frame.shape[-1] == 4:
        frame = frame[..., :3]
    return np.ascontiguousarray(frame)


def sample_positions(n: int, k: int = 5) -> list[int]:
    return sorted(set(np.linspace(0, max(n - 1, 0), min(k, max(n, 1))).round().astype(int).tolist()))



# Uncompressed DICOM transfer syntaxes: their pixel data size follows from the header.
_DICOM_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


def check_declared_size(path: str, width: int, height: int, frames: int, max_side: int | None, what: str) -> None:
    """Refuse what a header declares before any pixel is decoded: an empty or absurd size, or a longer
    side past ``max_side`` (a damaged or hostile header must not make us allocate gigabytes)."""
    if min(width, height, frames) < 1:
        raise VideoReadError(path, f"the {what} declares {width}x{height} pixels and {frames} frame(s)",
                             "the header is damaged; re-export the file")
    if max_side is not None and max(width, height) > max_side:
        raise VideoReadError(path, f"frames too large: the {what} declares {width}x{height} (longer side > {max_side})",
                             "downscale it first or raise --max-side")


class VideoReader:
    """Base class: subclasses set the attributes and implement ``_read_sorted``."""

    path: str
    num_frames: int
    fps: float
    height: int
    width: int
    metadata: dict[str, Any]

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 ``(len(indices), H, W, 3)``; indices may repeat and come in any order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        if idx.min() < 0 or idx.max() >= self.num_frames:
            raise IndexError(
                f"{self.path}: frame index out of range 0..{self.num_frames - 1}: "
                f"{idx.min()}..{idx.max()}"
            )
        unique = sorted(set(idx.tolist()))
        decoded = self._read_sorted(unique)
        pos = {i: k for k, i in enumerate(unique)}
        frames = np.stack([decoded[pos[i]] for i in idx.tolist()])
        if frames.shape[1:] != (self.height, self.width, 3):
            raise VideoReadError(
                self.path,
                f"frame size changed inside the file ({frames.shape[2]}x{frames.shape[1]} instead of "
                f"{self.width}x{self.height})",
                "re-encode it with a constant frame size",
            )
        return frames

    def _read_sorted(self, indices: list[int]) -> list[np.ndarray]:
        raise NotImplementedError

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return self.num_frames

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, frames={self.num_frames}, fps={self.fps:.3f}, "
            f"size={self.width}x{self.height})"
        )


class PyAVReader(VideoReader):
    """Containers through PyAV. Opening demuxes the packet index (no decoding) to count frames exactly
    and to know where the keyframes are; ``read`` seeks to the keyframe before each requested run of
    frames and decodes forward from there."""

    def __init__(self, path: str | Path):
        import av

        self.path = str(path)
        try:
            self._container = av.open(self.path, mode="r")
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise VideoReadError(
                self.path,
                f"not a readable video container ({type(e).__name__}: {e})",
                "check that the file is complete (not truncated) and re-encode it, e.g. "
                "`ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`",
            ) from e
        streams = self._container.streams.video
        if not streams:
            self.close()
            raise VideoReadError(self.path, "the file holds no video stream", "give a file with a video track")
        self._stream = stream = streams[0]
        # One decoder thread: clip reads are short, DataLoader workers give the parallelism, and
        # FFmpeg's thread pool does not survive fork() (a worker inheriting it could hang).
        stream.thread_type = "NONE"
        stream.codec_context.thread_count = 1
        codec = stream.codec_context
        if codec is None or not codec.name:
            self.close()
            raise VideoReadError(self.path, "unsupported or unknown video codec", "re-encode it to H.264")
        pts_list: list[int] = []
        key_pts: list[int] = []
        try:
            for packet in self._container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    pts_list = []
                    break
                pts_list.append(int(packet.pts))
                if packet.is_keyframe:
                    key_pts.append(int(packet.pts))
        except av.error.FFmpegError as e:
            self.close()
            raise VideoReadError(
                self.path, f"the container is damaged ({e})", "re-encode or re-export the file"
            ) from e
        self._pts = sorted(pts_list)
        self._key_pts = sorted(key_pts) or self._pts[:1]
        if not self._pts:
            self.close()
            raise VideoReadError(
                self.path,
                "the video stream has no frames with timestamps (empty or raw elementary stream)",
                "remux it into mp4/mkv, e.g. `ffmpeg -i IN -c copy OUT.mp4`",
            )
        self._pts_index = {p: i for i, p in enumerate(self._pts)}
        self.num_frames = len(self._pts)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else DEFAULT_FPS
        self.width, self.height = int(codec.width), int(codec.height)
        if self.width <= 0 or self.height <= 0:
            self.close()
            raise VideoReadError(self.path, "the video stream has no frame size", "re-encode the file")
        self.metadata = {
            "reader": "pyav",
            "container": self._container.format.name,
            "codec": codec.name,
            "pix_fmt": codec.pix_fmt,
            "header_frames": int(stream.frames or 0),
        }
        # The header knows how many frames were written; fewer packets means the file was cut short.
        self.metadata["truncated"] = bool(stream.frames and stream.frames > self.num_frames)
        self._pid = os.getpid()
        _OPEN_PYAV.add(self)

    def _decode_from(self, key_pts: int):
        self._container.seek(key_pts, stream=self._stream, backward=True, any_frame=False)
        return self._container.decode(self._stream)

    def _read_sorted(self, indices: list[int]) -> list[np.ndarray]:
        import av

        want = {self._pts[i]: i for i in indices}
        out: dict[int, np.ndarray] = {}
        remaining = sorted(want)
        while remaining:
            target = remaining[0]
            key = self._key_pts[max(bisect.bisect_right(self._key_pts, target) - 1, 0)]
            try:
                for frame in self._decode_from(key):
                    if frame.pts is None:
                        continue
                    if frame.pts in want and want[frame.pts] not in out:
                        out[want[frame.pts]] = to_rgb(frame.to_ndarray(format="rgb24"))
                        remaining.remove(frame.pts)
                    if not remaining:
                        break
                    # Past the first target and the next one sits behind a later keyframe: seek there
                    # instead of decoding the gap.
                    if frame.pts >= target:
                        nk = self._key_pts[max(bisect.bisect_right(self._key_pts, remaining[0]) - 1, 0)]
                        if nk > frame.pts:
                            break
            except (av.error.FFmpegError, ValueError) as e:
                raise VideoReadError(
                    self.path, f"decoding failed near frame {want[target]} ({e})",
                    "the file is probably truncated or corrupt; re-encode or re-export it",
                ) from e
            if remaining and remaining[0] == target:
                raise VideoReadError(
                    self.path, f"frame {want[target]} could not be decoded (truncated or corrupt file?)",
                    "re-encode or re-export the file",
                )
        return [out[i] for i in indices]

    def close(self) -> None:
        c = getattr(self, "_container", None)
        if c is not None and getattr(self, "_pid", None) == os.getpid():
            c.close()
        self._container = None


# Containers a forked child inherits are never closed or freed in the child (their FFmpeg state
# belongs to the parent): after fork they are moved into a list that lives as long as the child.
_OPEN_PYAV: "weakref.WeakSet[PyAVReader]" = weakref.WeakSet()
_FORK_KEPT: list[Any] = []


def _after_fork_in_child() -> None:
    for r in list(_OPEN_PYAV):
        if getattr(r, "_container", None) is not None:
            _FORK_KEPT.append(r._container)
    _OPEN_PYAV.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class DicomReader(VideoReader):
    """Multi-frame DICOM (cine loops, ultrasound, angiography) through pydicom.

    Frames are decoded one at a time with ``pydicom.pixels.pixel_array(path, index=i)``, which
    reads only that frame's data. pydicom 3 already converts YBR to RGB (``as_rgb``): we never
    convert again. fps comes from Frame Time (ms), Frame Time Vector, Cine Rate or Recommended
    Display Frame Rate, in that order; ``metadata["fps_source"]`` says which (or "default").
    """

    def __init__(self, path: str | Path, max_side: int | None = None):
        import pydicom

        self.path = str(path)
        try:
            ds = pydicom.dcmread(self.path, stop_before_pixels=True)
        except Exception as e:  # pydicom raises a zoo of types on garbage
            raise VideoReadError(self.path, f"not a readable DICOM file ({e})", "check the file is a complete DICOM export") from e
        if "PixelData" not in ds and "FloatPixelData" not in ds and not hasattr(ds, "Rows"):
            raise VideoReadError(self.path, "the DICOM file holds no image data", "export the cine/multi-frame series, not a report")
        self._header = ds
        try:
            self.num_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
            self.height, self.width = int(ds.Rows), int(ds.Columns)
            self._photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
            self._samples = int(getattr(ds, "SamplesPerPixel", 1))
            self._bits = int(getattr(ds, "BitsStored", getattr(ds, "BitsAllocated", 8)))
            allocated = int(getattr(ds, "BitsAllocated", 8) or 8)
            syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
        except (AttributeError, TypeError, ValueError) as e:
            raise VideoReadError(self.path, f"the DICOM header is damaged ({type(e).__name__}: {e})",
                                 "re-export the file") from e
        check_declared_size(self.path, self.width, self.height, self.num_frames, max_side, "DICOM header")
        if syntax in _DICOM_NATIVE:
            need = self.width * self.height * self.num_frames * self._samples * max(allocated, 1) // 8
            have = os.path.getsize(self.path)
            if need > have:
                raise VideoReadError(
                    self.path, f"truncated: the header declares {self.num_frames} frame(s) of {self.width}x{self.height} "
                    f"({need} bytes of pixel data) but the file is {have} bytes", "re-copy or re-export the file")
        self.fps, fps_source = self._fps_from_header(ds)
        self.metadata = {
            "reader": "dicom",
            "modality": str(getattr(ds, "Modality", "")),
            "photometric": self._photometric,
            "bits_stored": self._bits,
            "transfer_syntax": str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")),
            "fps_source": fps_source,
        }
        self._slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        self._intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        self._window: tuple[float, float] | None = None
        if self._samples == 1 and self._photometric != "PALETTE COLOR":
            wc, ww = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
            if wc is not None and ww is not None:
                wc = float(wc[0] if isinstance(wc, pydicom.multival.MultiValue) else wc)
                ww = float(ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww)
                self._window = (wc - ww / 2.0, wc + ww / 2.0)
                self.metadata["window"] = "header"
            elif self._bits > 8:
                self._window = robust_window([self._raw(i) for i in sample_positions(self.num_frames)])
                self.metadata["window"] = "percentile"
        # Decode one frame now: a file whose pixel data is broken fails at prepare time, not in training.
        self._read_sorted([0])

    @staticmethod
    def _fps_from_header(ds) -> tuple[float, str]:
        ft = getattr(ds, "FrameTime", None)
        if ft is not None and float(ft) > 0:
            return 1000.0 / float(ft), "FrameTime"
        ftv = getattr(ds, "FrameTimeVector", None)
        if ftv is not None:
            vals = [float(v) for v in list(ftv)[1:] if float(v) > 0]
            if vals:
                return 1000.0 / float(np.mean(vals)), "FrameTimeVector"
        for name in ("CineRate", "RecommendedDisplayFrameRate"):
            v = getattr(ds, name, None)
            if v is not None and float(v) > 0:
                return float(v), name
        return DEFAULT_FPS, "default"

    def _raw(self, i: int) -> np.ndarray:
        from pydicom.pixels import pixel_array

        try:
            return pixel_array(self.path, index=i)
        except Exception as e:
            raise VideoReadError(
                self.path, f"frame {i} of the DICOM pixel data cannot be decoded ({type(e).__name__}: {e})",
                "check the file is complete; for compressed transfer syntaxes install pylibjpeg or GDCM",
            ) from e

    def _read_sorted(self, indices: list[int]) -> list[np.ndarray]:
        out = []
        for i in indices:
            a = self._raw(i)
            if self._photometric == "PALETTE COLOR":
                from pydicom.pixels import apply_color_lut

                a = apply_color_lut(a, self._header)
                a = window_to_uint8(a, 0, 65535) if a.dtype != np.uint8 else a
            elif self._samples == 1:
                if self._window is not None:
                    a = window_to_uint8(a.astype(np.float32) * self._slope + self._intercept, *self._window)
                elif a.dtype != np.uint8:
                    a = np.clip(a, 0, 255).astype(np.uint8)
                if self._photometric == "MONOCHROME1":
                    a = 255 - a
            elif a.dtype != np.uint8:
                a = window_to_uint8(a, 0, 2 ** self._bits - 1)
            out.append(to_rgb(a))
        return out


class NiftiReader(VideoReader):
    """NIfTI 4D series ``(x, y, z, t)``: the time axis gives the frames of one slice.

    The slice is the middle one along z unless ``slice_index`` is given (a 2D+t series has z = 1).
    Frames are read through nibabel's array proxy (one slice of one time point at a time, never the
    whole volume) and windowed to 8 bits with percentiles of a few sampled frames. The image is shown
    with y up (rows reversed), the usual display of a NIfTI axial slice. fps = 1 / pixdim[4] in the
    header's time unit.
    """

    def __init__(self, path: str | Path, slice_index: int | None = None, max_side: int | None = None):
        import nibabel as nib

        self.path = str(path)
        try:
            img = nib.load(self.path)
            shape = tuple(int(s) for s in img.shape)
        except Exception as e:
            raise VideoReadError(self.path, f"not a readable NIfTI file ({e})", "check the file is a complete .nii/.nii.gz") from e
        if len(shape) == 5 and shape[3] == 1:
            shape = shape[:3] + shape[4:]
        if len(shape) != 4:
            raise VideoReadError(
                self.path, f"NIfTI image of shape {shape} is not a 4D (x, y, z, t) time series",
                "give a 4D series (a 3D volume is one still image, not a video)",
            )
        self._img = img
        nx, ny, nz, nt = shape
        check_declared_size(self.path, nx, ny, nt, max_side, "NIfTI header")
        if nz < 1:
            raise VideoReadError(self.path, f"the NIfTI header declares {nz} slices", "the header is damaged; re-export the file")
        self._z = nz // 2 if slice_index is None else int(slice_index)
        if not 0 <= self._z < nz:
            raise VideoReadError(self.path, f"slice {self._z} outside 0..{nz - 1}", "pass a valid slice_index")
        self.num_frames, self.height, self.width = nt, ny, nx
        zooms = img.header.get_zooms()
        tr = float(zooms[3]) if len(zooms) > 3 else 0.0
        unit = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else "sec"
        tr_s = tr * {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
        self.fps = 1.0 / tr_s if tr_s > 0 else DEFAULT_FPS
        self.metadata = {
            "reader": "nifti",
            "shape": list(shape),
            "slice": self._z,
            "dtype": str(img.get_data_dtype()),
            "fps_source": "pixdim" if tr_s > 0 else "default",
        }
        self._window = robust_window([self._raw(i) for i in sample_positions(nt)])

    def _raw(self, t: int) -> np.ndarray:
        try:
            obj = self._img.dataobj
            a = obj[:, :, self._z, 0, t] if len(obj.shape) == 5 else obj[:, :, self._z, t]
            return np.asarray(a, dtype=np.float32)
        except Exception as e:
            raise VideoReadError(self.path, f"time point {t} cannot be read ({e})", "the file may be truncated") from e

    def _read_sorted(self, indices: list[int]) -> list[np.ndarray]:
        # (x, y) -> (rows = y reversed, cols = x)
        return [to_rgb(window_to_uint8(self._raw(t).T[::-1], *self._window)) for t in indices]


class FrameFolderReader(VideoReader):
    """A folder of numbered frames (png/jpg/bmp/tif), naturally sorted (frame2 before frame10).

    16-bit frames are windowed with percentiles of a few sampled frames. The folder carries no frame
    rate: ``fps`` (argument) or 30.
    """

    def __init__(self, path: str | Path, fps: float | None = None, max_side: int | None = None):
        self.path = str(path)
        try:
            names = [n for n in os.listdir(self.path) if has_suffix(n, IMAGE_EXTENSIONS) and not n.startswith(".")]
        except OSError as e:
            raise VideoReadError(self.path, f"cannot list the folder ({e})", "check permissions") from e
        if not names:
            raise VideoReadError(self.path, "the folder holds no png/jpg frames", "put numbered frames in it")
        self._files = [os.path.join(self.path, n) for n in sorted(names, key=natural_key)]
        self.num_frames = len(self._files)
        self.fps = float(fps) if fps else DEFAULT_FPS
        w, h = self._header_size(0)
        check_declared_size(self._files[0], w, h, self.num_frames, max_side, "image header")
        first = self._load(0)
        self.height, self.width = first.shape[:2]
        self._window = None
        if first.dtype != np.uint8:
            self._window = robust_window([self._load(i) for i in sample_positions(self.num_frames)])
        self.metadata = {"reader": "frames", "first_frame": os.path.basename(self._files[0]), "fps_source": "argument" if fps else "default"}

    def _header_size(self, i: int) -> tuple[int, int]:
        """(width, height) from the image header alone (PIL opens lazily)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self._files[i]) as im:
                return im.size
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise VideoReadError(self._files[i], f"frame cannot be read ({e})", "replace or remove the broken frame") from e

    def _load(self, i: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self._files[i]) as im:
                if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    return np.asarray(im).astype(np.float32)
                return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise VideoReadError(self._files[i], f"frame cannot be decoded ({e})", "replace or remove the broken frame") from e

    def _read_sorted(self, indices: list[int]) -> list[np.ndarray]:
        out = []
        for i in indices:
            a = self._load(i)
            if self._window is not None or a.dtype != np.uint8:
                a = window_to_uint8(a, *(self._window or robust_window([a])))
            out.append(to_rgb(a))
        return out


def _is_dicom(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def open_video(path: str | os.PathLike, *, fps: float | None = None, slice_index: int | None = None,
               max_side: int | None = None) -> VideoReader:
    """Open ``path`` with the reader its format needs.

    ``fps`` is used by frame folders (which carry none); ``slice_index`` picks the NIfTI slice.
    ``max_side``: DICOM, NIfTI and frame folders whose header declares a longer side past it are
    refused before anything is decoded (containers decode nothing on opening).
    Raises ``VideoReadError`` for missing, empty, unreadable, corrupt or unsupported inputs.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise VideoReadError(p, "file does not exist", "check the path (relative paths resolve against the manifest's folder)")
    if not os.access(p, os.R_OK):
        raise VideoReadError(p, "permission denied", "make the file readable (chmod a+r) for the user running medvid")
    if os.path.isdir(p):
        return FrameFolderReader(p, fps=fps, max_side=max_side)
    try:
        size = os.path.getsize(p)
        with open(p, "rb"):
            pass
    except PermissionError as e:
        raise VideoReadError(p, "permission denied", "make the file readable (chmod a+r) for the user running medvid") from e
    except OSError as e:
        raise VideoReadError(p, f"cannot be opened ({e})", "check the file system") from e
    if size == 0:
        raise VideoReadError(p, "file is empty (0 bytes)", "re-copy or re-export it; an interrupted transfer leaves empty files")
    if has_suffix(p, NIFTI_EXTENSIONS):
        return NiftiReader(p, slice_index=slice_index, max_side=max_side)
    if has_suffix(p, DICOM_EXTENSIONS) or _is_dicom(p):
        return DicomReader(p, max_side=max_side)
    if has_suffix(p, IMAGE_EXTENSIONS):
        raise VideoReadError(p, "a single image, not a video", "put numbered frames in a folder to make a video")
    return PyAVReader(p)
