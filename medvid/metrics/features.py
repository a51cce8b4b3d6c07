"""Feature extraction with a cache keyed by content.

The key of a feature array is the SHA-256 of (the video set's content fingerprint, the feature
network's identity, every protocol parameter that changes the features: clip selection, clip
length, seed, resolution). A second evaluation against the same real set therefore reuses the
real features instead of recomputing them, and any change to the data, the weights or the
protocol misses the cache. Arrays are stored as ``.npy`` (loaded with ``allow_pickle=False``)
beside a JSON description; writes are atomic.

The network identity is a hash of the weight file's size and its first and last MiB (hashing a
4 GB VideoMAE-g checkpoint in full on every run would cost more than the cache saves).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from medvid.utils.logging import get_logger

__all__ = ["FeatureCache", "weights_id", "cache_key", "batched_features", "default_cache_dir"]

log = get_logger("metrics")


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDVID_CACHE", Path.home() / ".cache" / "medvid")) / "features"


def weights_id(path: str | Path | None) -> str:
    if path is None:
        return "none"
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()[:16]


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class FeatureCache:
    """``root=None`` disables caching."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray], describe: dict | None = None) -> np.ndarray:
        arr = self.load(key)
        if arr is not None:
            return arr
        arr = compute()
        self.store(key, arr, describe)
        return arr

    def load(self, key: str) -> np.ndarray | None:
        """The cached array (counted as a hit), or None (counted as a miss)."""
        if self.root is not None:
            f = self.root / f"{key}.npy"
            if f.is_file():
                try:
                    arr = np.load(f, allow_pickle=False)
                    self.hits += 1
                    log.info("features from cache %s", f.name)
                    return arr
                except (OSError, ValueError) as e:
                    log.warning("ignoring unreadable cached features %s (%s)", f, e)
        self.misses += 1
        return None

    def store(self, key: str, arr: np.ndarray, describe: dict | None = None) -> None:
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{os.getpid()}.npy"
        np.save(tmp, arr, allow_pickle=False)
        os.replace(tmp, self.root / f"{key}.npy")
        (self.root / f"{key}.json").write_text(json.dumps(describe or {}, indent=1, default=str))


def batched_features(items: Iterable[np.ndarray], fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> np.ndarray:
    """Run ``fn`` on uint8 arrays stacked ``batch_size`` at a time -> (N, D) float64 numpy."""
    out, buf = [], []

    def flush():
        if buf:
            out.append(fn(torch.from_numpy(np.stack(buf))).double().cpu().numpy())
            buf.clear()

    for a in items:
        buf.append(a)
        if len(buf) == batch_size:
            flush()
    flush()
    if not out:
        raise ValueError("no clips or frames to compute features from")
    return np.concatenate(out)
