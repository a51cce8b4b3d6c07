"""Scene cuts: where a long recording changes shot.

PySceneDetect's ``ContentDetector`` (HSV-space frame difference with a flash filter) is used when
``scenedetect`` is installed. It pins ``opencv-python``, which would shadow the contrib build medvid
uses, so it is installed with ``--no-deps`` and imported optionally; without it a histogram
detector of ours does the same job (HSV histogram distance between adjacent frames).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import cv2
import numpy as np

from medvid.curation.filters import resize_max_side


def have_pyscenedetect() -> bool:
    try:
        import scenedetect  # noqa: F401
        from scenedetect.detectors import ContentDetector  # noqa: F401
    except Exception:  # noqa: BLE001 - missing or broken install: use the fallback
        return False
    return True


class HistogramCutDetector:
    """Cut where the Bhattacharyya distance of adjacent frames' HSV histograms exceeds ``threshold``.

    Same interface as our PySceneDetect adapter: ``process(index, rgb_frame) -> list[int]`` of cut
    frame indices (the first frame of each new scene), ``finish() -> list[int]``.
    """

    def __init__(self, threshold: float = 0.4, min_scene_frames: int = 15):
        self.threshold, self.min_scene_frames = threshold, min_scene_frames
        self._prev: np.ndarray | None = None
        self._last_cut = 0

    @staticmethod
    def histogram(rgb: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 8, 8], [0, 180, 0, 256, 0, 256])
        return cv2.normalize(hist, hist).flatten()

    def process(self, index: int, rgb: np.ndarray) -> list[int]:
        hist = self.histogram(rgb)
        cuts = []
        if self._prev is not None:
            d = cv2.compareHist(self._prev, hist, cv2.HISTCMP_BHATTACHARYYA)
            if d > self.threshold and index - self._last_cut >= self.min_scene_frames:
                cuts.append(index)
                self._last_cut = index
        self._prev = hist
        return cuts

    def finish(self) -> list[int]:
        return []


class PySceneDetectCutDetector:
    """Adapter for ``scenedetect.detectors.ContentDetector`` fed with decoded numpy frames."""

    def __init__(self, threshold: float = 27.0, min_scene_frames: int = 15, fps: float = 30.0):
        from scenedetect import FrameTimecode
        from scenedetect.detectors import ContentDetector

        self._tc = lambda i: FrameTimecode(i, fps=fps)
        self._det = ContentDetector(threshold=threshold, min_scene_len=min_scene_frames)
        self._last = 0

    @staticmethod
    def _frame_numbers(cuts) -> list[int]:
        # 0.7 returns FrameTimecode objects, 0.6 plain ints
        return [int(getattr(c, "frame_num", c)) for c in cuts]

    def process(self, index: int, rgb: np.ndarray) -> list[int]:
        self._last = index
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        return self._frame_numbers(self._det.process_frame(self._tc(index), bgr))

    def finish(self) -> list[int]:
        post = getattr(self._det, "post_process", None)
        return self._frame_numbers(post(self._tc(self._last + 1)) or []) if post else []


def make_cut_detector(method: str = "auto", threshold: float | None = None, min_scene_frames: int = 15,
                      fps: float = 30.0):
    """``method``: auto (PySceneDetect if installed), pyscenedetect, histogram."""
    if method not in ("auto", "pyscenedetect", "histogram"):
        raise ValueError(f"scene detector {method!r}: use auto, pyscenedetect or histogram")
    if method == "pyscenedetect" and not have_pyscenedetect():
        raise ValueError("scene detector 'pyscenedetect' needs `pip install --no-deps scenedetect platformdirs`; "
                         "or use 'histogram'")
    if method in ("auto", "pyscenedetect") and have_pyscenedetect():
        return PySceneDetectCutDetector(27.0 if threshold is None else threshold, min_scene_frames, fps)
    return HistogramCutDetector(0.4 if threshold is None else threshold, min_scene_frames)


def iter_frames(reader, chunk: int = 64, max_side: int = 256) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, small RGB frame)`` over the whole video, decoded ``chunk`` frames at a time."""
    for start in range(0, reader.num_frames, chunk):
        idx = np.arange(start, min(start + chunk, reader.num_frames))
        for i, f in zip(idx, reader.read(idx)):
            yield int(i), resize_max_side(f, max_side)


def detect_scenes(frames: Iterable[tuple[int, np.ndarray]], num_frames: int, detector) -> list[tuple[int, int]]:
    """Scenes as ``[(start, end), ...]`` (end exclusive) covering ``0..num_frames``."""
    cuts: list[int] = []
    for i, f in frames:
        cuts += detector.process(i, f)
    cuts += detector.finish()
    bounds = [0] + sorted(c for c in set(cuts) if 0 < c < num_frames) + [num_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def split_long(scenes: list[tuple[int, int]], max_frames: int) -> list[tuple[int, int]]:
    """Split scenes longer than ``max_frames`` into equal pieces no longer than ``max_frames``."""
    out = []
    for a, b in scenes:
        n = b - a
        pieces = max(1, -(-n // max_frames))
        edges = np.linspace(a, b, pieces + 1).round().astype(int)
        out += [(int(s), int(e)) for s, e in zip(edges[:-1], edges[1:]) if e > s]
    return out
