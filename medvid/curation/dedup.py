"""Duplicate and near-duplicate clips by perceptual hashes (``imagehash`` pHash of sampled frames).

A clip's signature is the 64-bit DCT pHash of ``num_frames`` uniformly sampled frames; two clips
are near-duplicates when the mean Hamming distance between corresponding frame hashes is at most
``max_distance`` bits. Re-encodes, small crops and brightness changes stay within a few bits;
different footage differs by ~32 bits (half the bits) on average.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import imagehash
import numpy as np
from PIL import Image

from medvid.curation.filters import FilterResult
from medvid.curation.reader import uniform_indices


def clip_hashes(frames: np.ndarray, num_frames: int = 4) -> list[str]:
    """Hex pHash strings of ``num_frames`` uniformly sampled frames (JSON-friendly)."""
    idx = uniform_indices(len(frames), num_frames)
    return [str(imagehash.phash(Image.fromarray(frames[i]))) for i in idx]


def hash_distance(a: list[str], b: list[str]) -> float:
    """Mean Hamming distance (bits) between corresponding frame hashes."""
    if len(a) != len(b):
        raise ValueError(f"hash lists of different lengths ({len(a)} vs {len(b)}): hash clips with the same num_frames")
    return float(np.mean([imagehash.hex_to_hash(x) - imagehash.hex_to_hash(y) for x, y in zip(a, b)]))


@dataclass
class Deduplicator:
    """Keeps the first clip of each near-duplicate group (in the order clips are offered)."""

    max_distance: float = 6.0
    name: str = "duplicate"
    _kept: list[tuple[str, list[str]]] = field(default_factory=list)

    def __call__(self, clip_id: str, hashes: list[str]) -> FilterResult:
        best, best_id = 64.0, ""
        for kid, kh in self._kept:
            d = hash_distance(hashes, kh)
            if d < best:
                best, best_id = d, kid
        if best <= self.max_distance:
            return FilterResult(False, best, f"near-duplicate of {best_id}: pHash distance {best:.1f} <= {self.max_distance}")
        self._kept.append((clip_id, hashes))
        return FilterResult(True, best)
