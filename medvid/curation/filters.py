"""Clip filters for ``medvid curate``.

Each filter is a small callable object with configurable thresholds: ``f(frames, fps)`` takes uint8
frames ``(T, H, W, 3)`` and returns ``FilterResult(keep, score, reason)``; ``reason`` is empty when
the clip is kept and otherwise says which measurement crossed which threshold. The set follows
MedGen's curation of MedVideoCap-55K (black borders by Canny edges + Hough lines, burnt-in subtitles
by OCR with a word threshold) plus the usual low-level checks (blur, frozen or jumping frames, size).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import cv2
import numpy as np

from medvid.curation.reader import uniform_indices


class FilterResult(NamedTuple):
    keep: bool
    score: float
    reason: str = ""


def to_gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def resize_max_side(img: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink so the longer side is at most ``max_side`` (never enlarges)."""
    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- size / duration
@dataclass
class SizeFilter:
    """Minimum short side (pixels), duration (seconds) and frame count."""

    min_side: int = 224
    min_seconds: float = 1.0
    min_frames: int = 16
    name: str = "size"

    def __call__(self, frames: np.ndarray, fps: float) -> FilterResult:
        t, h, w = frames.shape[:3]
        return self.check(t, h, w, fps)

    def check(self, t: int, h: int, w: int, fps: float) -> FilterResult:
        """The same test from the clip's size alone (frames need not be decoded)."""
        side = min(h, w)
        if side < self.min_side:
            return FilterResult(False, float(side), f"resolution {w}x{h}: short side {side} < {self.min_side}")
        if t < self.min_frames:
            return FilterResult(False, float(t), f"{t} frames < {self.min_frames}")
        seconds = t / fps if fps > 0 else 0.0
        if seconds + 1e-3 < self.min_seconds:  # 30 frames at 29.997 fps are one second
            return FilterResult(False, seconds, f"duration {seconds:.2f}s < {self.min_seconds}s")
        return FilterResult(True, seconds)


# ----------------------------------------------------------------------------- black borders
def find_content_box(
    frames: np.ndarray,
    black_level: float = 20.0,
    min_line_fraction: float = 0.6,
    max_border_fraction: float = 0.4,
    num_samples: int = 8,
) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the box inside black bars (letterbox / pillarbox), as MedGen does it.

    Candidate bar edges are long horizontal / vertical lines that the probabilistic Hough transform
    finds in the Canny edges of the per-pixel maximum over sampled frames (a bar stays black in
    every frame, so it stays black in the maximum, while dark content lights up in some frame).
    A candidate is accepted when the strip between it and the frame edge is black in nearly every
    line (90th percentile of the line means at most ``black_level``).
    """
    t, h, w = frames.shape[:3]
    mx = np.max(np.stack([to_gray(frames[i]) for i in uniform_indices(t, min(num_samples, t))]), axis=0)
    edges = cv2.Canny(mx, 30, 90)
    # Split the edges by orientation first so texture edges do not break up a bar's straight edge.
    gx = np.abs(cv2.Sobel(mx, cv2.CV_32F, 1, 0))
    gy = np.abs(cv2.Sobel(mx, cv2.CV_32F, 0, 1))
    min_len = int(min_line_fraction * min(h, w))
    rows, cols = set(), set()
    for mask, is_row in (((gy > 2 * gx), True), ((gx > 2 * gy), False)):
        # a compressed bar edge zig-zags over two rows: thicken across the line before voting
        kernel = np.ones((3, 1) if is_row else (1, 3), np.uint8)
        oriented = cv2.dilate(np.where(mask, edges, 0).astype(np.uint8), kernel)
        lines = cv2.HoughLinesP(oriented, 1, np.pi / 180,
                                threshold=max(10, min_len // 2), minLineLength=min_len, maxLineGap=16)
        for x1, y1, x2, y2 in ([] if lines is None else np.asarray(lines).reshape(-1, 4)):
            if is_row and abs(int(y2) - int(y1)) <= 2:
                rows.add(int(round((y1 + y2) / 2)))
            elif not is_row and abs(int(x2) - int(x1)) <= 2:
                cols.add(int(round((x1 + x2) / 2)))
    row_mean, col_mean = mx.mean(axis=1), mx.mean(axis=0)

    def _dark(strip: np.ndarray) -> bool:
        # 90th percentile, not the mean: a sparse subtitle inside a bar must not hide the bar,
        # and a few content lines inside the strip must not pass for bar.
        return float(np.percentile(strip, 90)) <= black_level

    def first_bright(profile: np.ndarray, start: int, step: int, limit: int) -> int:
        # Canny marks the edge on either side of the step: walk to the first non-black line.
        i = start
        while 0 <= i < len(profile) and profile[i] <= black_level and abs(i - start) <= 3 and i != limit:
            i += step
        return i

    def content_span(lines: set[int], profile: np.ndarray, n: int) -> tuple[int, int]:
        # Along one axis: the content lies between the innermost bar edges near either end.
        lo, hi = 0, n
        for p in sorted(lines):
            if 0 < p <= max_border_fraction * n and _dark(profile[: max(p - 1, 1)]):
                lo = max(lo, first_bright(profile, max(p - 2, 0), 1, n))
            if n * (1 - max_border_fraction) <= p < n - 1 and _dark(profile[min(p + 2, n - 1):]):
                hi = min(hi, first_bright(profile, min(p + 2, n - 1), -1, -1) + 1)
        return lo, hi

    y0, y1 = content_span(rows, row_mean, h)
    x0, x1 = content_span(cols, col_mean, w)
    if y1 - y0 < h // 4 or x1 - x0 < w // 4:  # implausible: a dark clip, not bars
        return 0, h, 0, w
    return y0, y1, x0, x1


@dataclass
class BorderFilter:
    """Black bars covering more than ``max_fraction`` of the frame area remove the clip.

    With ``crop=True`` the caller crops to ``find_content_box`` instead (see ``curate``).
    """

    max_fraction: float = 0.05
    black_level: float = 20.0
    name: str = "border"

    def box(self, frames: np.ndarray) -> tuple[int, int, int, int]:
        return find_content_box(frames, black_level=self.black_level)

    def __call__(self, frames: np.ndarray, fps: float = 0.0) -> FilterResult:
        h, w = frames.shape[1:3]
        y0, y1, x0, x1 = self.box(frames)
        frac = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        if frac > self.max_fraction:
            return FilterResult(False, frac, f"black borders cover {frac:.1%} of the frame > {self.max_fraction:.1%} "
                                f"(content box y {y0}:{y1}, x {x0}:{x1})")
        return FilterResult(True, frac)


# ----------------------------------------------------------------------------- burnt-in text
def _tesseract():
    try:
        import pytesseract

        pytesseract.get_tesseract_version()
        return pytesseract
    except Exception:  # noqa: BLE001 - not installed or no binary: use the OpenCV detector
        return None


def detect_text_regions(gray: np.ndarray, min_contrast: float = 60.0) -> list[tuple[int, int, int, int, int]]:
    """Text-line boxes ``(x, y, w, h, words)`` found by a morphological text-region detector.

    Characters are thin strokes of high local contrast: a morphological gradient lights them up,
    a wide-but-flat closing joins the characters of a line, and blobs whose height and stroke
    density look like text are kept (no weights needed, unlike cv2's DNN text detectors). Words
    are counted inside a line from the gaps in its column profile: a gap of at least 0.15 of the
    line height (2 px minimum) separates words; the gradient has already closed the letter gaps.
    """
    h, w = gray.shape
    grad = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    otsu, _ = cv2.threshold(grad, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    _, bw = cv2.threshold(grad, max(otsu, min_contrast), 255, cv2.THRESH_BINARY)
    joined = cv2.morphologyEx(bw, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (max(5, w // 40), 1)))
    contours, _ = cv2.findContours(joined, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for c in contours:
        x, y, bw_, bh = cv2.boundingRect(c)
        if not (5 <= bh <= max(12, h // 8)) or bw_ < 4 or bw_ / bh < 0.3:
            continue
        patch = bw[y : y + bh, x : x + bw_]
        density = float(np.count_nonzero(patch)) / (bw_ * bh)
        if not 0.2 <= density <= 0.9:
            continue
        empty = np.concatenate([[0], (patch.max(axis=0) == 0).astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(empty))  # starts and ends of empty column runs
        gaps = edges[1::2] - edges[::2]
        boxes.append((x, y, bw_, bh, 1 + int(np.sum(gaps >= max(2, 0.15 * bh)))))
    return boxes


@dataclass
class TextFilter:
    """Burnt-in text / subtitles: more than ``max_words`` words or ``max_area`` of the frame removes.

    MedGen ran OCR on 5 frames and dropped clips with more than 20 words. With ``engine="auto"``
    pytesseract is used when it and the tesseract binary are installed, otherwise the OpenCV
    text-region detector (``detect_text_regions``). The score is the largest word count
    over the sampled frames.
    """

    max_words: int = 20
    max_area: float = 0.1
    num_frames: int = 5
    engine: str = "auto"  # auto | tesseract | opencv
    max_side: int = 320   # the OpenCV detector runs at this size so counts do not grow with resolution
    name: str = "text"

    def __post_init__(self):
        if self.engine not in ("auto", "tesseract", "opencv"):
            raise ValueError(f"text engine {self.engine!r}: use auto, tesseract or opencv")
        self._tess = _tesseract() if self.engine in ("auto", "tesseract") else None
        if self.engine == "tesseract" and self._tess is None:
            raise ValueError("text engine 'tesseract' needs `pip install pytesseract` and "
                             "`apt-get install tesseract-ocr`; or use engine auto/opencv")

    @property
    def engine_used(self) -> str:
        return "tesseract" if self._tess is not None else "opencv"

    def measure(self, frame: np.ndarray) -> tuple[int, float]:
        """(words, area fraction covered by text) for one RGB frame."""
        gray = to_gray(frame)
        h, w = gray.shape
        if self._tess is not None:
            # Tesseract reads text ~20-30 px high best: enlarge small frames; --psm 11 finds sparse
            # text anywhere (overlays, not a page). Tokens without a letter or digit are noise.
            s = max(1.0, 960 / max(h, w))
            big = cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC) if s > 1 else gray
            d = self._tess.image_to_data(big, config="--psm 11", output_type=self._tess.Output.DICT)
            boxes = [(d["left"][i] / s, d["top"][i] / s, d["width"][i] / s, d["height"][i] / s, 1)
                     for i, t in enumerate(d["text"]) if re.search(r"[A-Za-z0-9]", t) and float(d["conf"][i]) > 50]
        else:
            gray = resize_max_side(gray, self.max_side)
            h, w = gray.shape
            boxes = detect_text_regions(gray)
        area = sum(bw * bh for _, _, bw, bh, _ in boxes) / float(h * w)
        return sum(b[4] for b in boxes), area

    def __call__(self, frames: np.ndarray, fps: float = 0.0) -> FilterResult:
        idx = uniform_indices(len(frames), min(self.num_frames, len(frames)))
        measures = [self.measure(frames[i]) for i in idx]
        words = max(m[0] for m in measures)
        area = max(m[1] for m in measures)
        if words > self.max_words:
            return FilterResult(False, float(words), f"burnt-in text: {words} words > {self.max_words} ({self.engine_used})")
        if area > self.max_area:
            return FilterResult(False, float(words), f"burnt-in text covers {area:.1%} > {self.max_area:.1%} ({self.engine_used})")
        return FilterResult(True, float(words))


# ----------------------------------------------------------------------------- blur
def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian (Pech-Pacheco et al. 2000): low means blurry."""
    return float(cv2.Laplacian(gray, cv2.CV_64F, ksize=1).var())


@dataclass
class BlurFilter:
    """Median variance of the Laplacian over sampled frames below ``min_variance`` removes the clip.

    Measured at ``max_side`` pixels on the longer side so the threshold does not depend on the
    recording's resolution.
    """

    min_variance: float = 30.0
    num_frames: int = 5
    max_side: int = 320
    name: str = "blur"

    def __call__(self, frames: np.ndarray, fps: float = 0.0) -> FilterResult:
        idx = uniform_indices(len(frames), min(self.num_frames, len(frames)))
        v = float(np.median([laplacian_variance(resize_max_side(to_gray(frames[i]), self.max_side)) for i in idx]))
        if v < self.min_variance:
            return FilterResult(False, v, f"blurry: variance of Laplacian {v:.1f} < {self.min_variance}")
        return FilterResult(True, v)


# ----------------------------------------------------------------------------- motion
def mean_flow_magnitude(frames: np.ndarray, max_pairs: int = 8) -> float:
    """Mean DIS optical-flow magnitude (pixels per frame) over up to ``max_pairs`` adjacent pairs."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    t = len(frames)
    if t < 2:
        return 0.0
    starts = uniform_indices(t - 1, min(max_pairs, t - 1))
    mags = []
    for i in starts:
        flow = dis.calc(to_gray(frames[i]), to_gray(frames[i + 1]), None)
        mags.append(float(np.linalg.norm(flow, axis=-1).mean()))
    return float(np.mean(mags))


def adjacent_differences(frames: np.ndarray, max_side: int = 96) -> np.ndarray:
    """Mean absolute difference in [0, 1] between each pair of adjacent frames (small copies)."""
    small = np.stack([resize_max_side(to_gray(f), max_side) for f in frames]).astype(np.float32)
    return np.abs(np.diff(small, axis=0)).mean(axis=(1, 2)) / 255.0


@dataclass
class StaticFilter:
    """Frozen or near-static clips: mean optical-flow magnitude below ``min_flow`` removes the clip.

    The flow is measured at ``max_side`` pixels on the longer side (pixels per frame at that size).
    Exactly repeated frames (a frozen clip) are caught first by their zero frame difference.
    """

    min_flow: float = 0.05
    max_side: int = 160
    name: str = "static"

    def __call__(self, frames: np.ndarray, fps: float = 0.0) -> FilterResult:
        diffs = adjacent_differences(frames)
        if diffs.size and diffs.max() < 1e-4:
            return FilterResult(False, 0.0, "frozen: all frames identical")
        small = np.stack([resize_max_side(f, self.max_side) for f in frames])
        mag = mean_flow_magnitude(small)
        if mag < self.min_flow:
            return FilterResult(False, mag, f"near-static: mean flow {mag:.3f} px/frame < {self.min_flow}")
        return FilterResult(True, mag)


@dataclass
class JumpFilter:
    """Abrupt jumps (missed cuts, flashes, dropped frames): an adjacent-frame difference that
    exceeds the clip's median difference by more than ``max_jump`` (fraction of the 0-255 range)."""

    max_jump: float = 0.12
    name: str = "jump"

    def __call__(self, frames: np.ndarray, fps: float = 0.0) -> FilterResult:
        d = adjacent_differences(frames)
        if d.size == 0:
            return FilterResult(True, 0.0)
        excess = float(d.max() - np.median(d))
        if excess > self.max_jump:
            at = int(d.argmax()) + 1
            return FilterResult(False, excess, f"abrupt jump at frame {at}: difference {excess:.3f} above median > {self.max_jump}")
        return FilterResult(True, excess)


# ----------------------------------------------------------------------------- learned scores
Scorer = Callable[[np.ndarray], float]


def load_scorer(factory: str, weights: str) -> Scorer:
    """Import ``"package.module:function"`` and call it with the weights path -> scorer.

    The scorer maps uint8 frames ``(T, H, W, 3)`` to one float (e.g. a LAION aesthetic predictor,
    a DOVER technical-quality model). Nothing is downloaded: the weights path must exist.
    """
    from medvid.utils.weights import require_weights

    require_weights(weights, f"learned score {factory!r}", "its weights file", "pass it as `weights:` in the config")
    if ":" not in factory:
        raise ValueError(f"learned score factory {factory!r}: write it as 'package.module:function'")
    mod, fn = factory.split(":", 1)
    try:
        make = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"learned score factory {factory!r} cannot be imported: {e}") from e
    return make(weights)


@dataclass
class LearnedScoreFilter:
    """A learned quality score (aesthetic, technical); clips scoring below ``min_score`` are removed."""

    name: str
    scorer: Any
    min_score: float | None = None

    def __call__(self, frames: np.ndarray, fps: float = 0.0) -> FilterResult:
        s = float(self.scorer(frames))
        if self.min_score is not None and s < self.min_score:
            return FilterResult(False, s, f"{self.name} {s:.3f} < {self.min_score}")
        return FilterResult(True, s)
