"""Aspect-ratio, size and length buckets for Wan fine-tuning.

A bucket is a (height, width, frames) training shape. Every clip goes to the bucket whose aspect
ratio is nearest to its own (distance |log(w/h) - log(W/H)|), and of those shapes to the longest
bucket length the clip can fill; the clip is then resized so that it covers the bucket and
centre-cropped (``wan_data.resize_center_crop``). The default shapes all hold about 400k pixels
(Wan2.1's 480x832), so the bucket choice preserves the area and so the token count and the cost of a
step: landscape 16:9 and 3:2 (MedVideoCap-55K's 720x480), square, and the two portrait shapes.

Batches form within one bucket (every clip of a batch has the same shape): ``BucketBatchStream``
draws an endless, resumable stream of such batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

# (height, width) of the default shapes; each is crossed with DEFAULT_LENGTHS.
DEFAULT_SHAPES = ((480, 832), (512, 768), (624, 624), (768, 512), (832, 480))
DEFAULT_LENGTHS = (81, 49, 17)  # 4k + 1 frames: ~5 s, 3 s and 1 s at 16 fps
DEFAULT_MAX_CROP = 0.3


@dataclass(frozen=True)
class Bucket:
    height: int
    width: int
    frames: int

    @property
    def name(self) -> str:
        return f"{self.height}x{self.width}x{self.frames}"

    @property
    def aspect(self) -> float:
        return self.width / self.height


class NoBucketError(ValueError):
    """A clip that no configured bucket can hold; the message says why and how to fix it."""


def default_buckets() -> list[list[int]]:
    return [[h, w, f] for f in DEFAULT_LENGTHS for h, w in DEFAULT_SHAPES]


def parse_buckets(raw: Sequence[Sequence[int]], where: str = "data.buckets") -> list[Bucket]:
    """``[[h, w, frames], ...]`` -> Buckets; sizes must be multiples of 16, lengths 4k + 1."""
    if not raw:
        raise ValueError(f"{where} is empty; list at least one [height, width, frames] bucket, e.g. [[480, 832, 81]]")
    out: list[Bucket] = []
    for i, b in enumerate(raw):
        if not isinstance(b, (list, tuple)) or len(b) != 3 or not all(isinstance(v, int) and v > 0 for v in b):
            raise ValueError(f"{where}[{i}] = {b!r}: each bucket is [height, width, frames] with positive integers")
        h, w, f = b
        if h % 16 or w % 16:
            raise ValueError(f"{where}[{i}] = {list(b)}: height and width must be multiples of 16 (e.g. 480x832)")
        if (f - 1) % 4:
            raise ValueError(f"{where}[{i}] = {list(b)}: Wan's VAE needs 4k + 1 frames (e.g. 17, 33, 49, 81), got {f}")
        if Bucket(h, w, f) in out:
            raise ValueError(f"{where}[{i}] = {list(b)} is listed twice; remove the duplicate")
        out.append(Bucket(h, w, f))
    return out


def crop_fraction(height: int, width: int, bucket: Bucket) -> float:
    """Share of the clip's pixels lost when it is scaled to cover ``bucket`` and centre-cropped."""
    r = bucket.aspect / (width / height)
    return 1.0 - min(r, 1.0 / r)


def assign_bucket(height: int, width: int, frames: int, buckets: Sequence[Bucket], max_crop: float = DEFAULT_MAX_CROP,
                  where: str = "clip") -> Bucket:
    """The bucket for a clip of ``frames`` usable frames at ``height x width``; raises NoBucketError.

    Nearest aspect ratio first (so the crop is smallest), then the longest length the clip fills."""
    if height < 1 or width < 1:
        raise NoBucketError(f"{where}: frame size {width}x{height} is empty; re-encode or remove the clip")
    fits = [b for b in buckets if b.frames <= frames]
    if not fits:
        shortest = min(b.frames for b in buckets)
        raise NoBucketError(
            f"{where}: {frames} usable frame(s) but the shortest bucket needs {shortest}; add a shorter bucket "
            f"(e.g. [..., ..., {max(1, (frames - 1) // 4 * 4 + 1)}]), lower data.frame_stride, or drop the clip"
        )
    log_ar = math.log(width / height)
    best = min(fits, key=lambda b: (round(abs(math.log(b.aspect) - log_ar), 9), -b.frames, -b.height * b.width))
    crop = crop_fraction(height, width, best)
    if crop > max_crop + 1e-9:
        raise NoBucketError(
            f"{where}: a {width}x{height} clip would lose {crop:.0%} of its pixels in the nearest bucket {best.name} "
            f"(data.max_crop = {max_crop:.0%}); add a bucket of about that aspect ratio to data.buckets, raise "
            "data.max_crop, or drop the clip"
        )
    return best


class BucketBatchStream(torch.utils.data.Sampler):
    """Endless stream of batches ``[(item, epoch), ...]`` whose items share one bucket.

    Epoch e: the items in a permutation seeded by (seed, e) are grouped by bucket in that order,
    each group is padded by repeating its own first items to a multiple of ``batch_size`` (so
    every batch is full and no clip is dropped), cut into batches, and the batches shuffled. Rank r
    of ``world`` takes batches r, r + world, ...; ``start`` counts the batches this rank already
    consumed, so a resumed run continues exactly where it stopped. The number of batches per
    epoch does not depend on e.
    """

    def __init__(self, buckets: Sequence[str], batch_size: int, seed: int = 0, start: int = 0, rank: int = 0,
                 world: int = 1):
        if not buckets:
            raise ValueError("no clips to batch")
        self.buckets, self.batch_size, self.seed = list(buckets), batch_size, seed
        self.start, self.rank, self.world = start, rank, world

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        groups: dict[str, list[int]] = {}
        for i in torch.randperm(len(self.buckets), generator=g).tolist():
            groups.setdefault(self.buckets[i], []).append(i)
        batches = []
        for key in sorted(groups):
            items = groups[key]
            pad = -len(items) % self.batch_size
            items = items + [items[j % len(items)] for j in range(pad)]
            batches += [items[k : k + self.batch_size] for k in range(0, len(items), self.batch_size)]
        order = torch.randperm(len(batches), generator=g).tolist()
        return [batches[k] for k in order]

    def batches_per_epoch(self) -> int:
        """Batches one rank draws per epoch."""
        n = len(self.epoch_batches(0))
        return len(range(self.rank, n, self.world)) or n

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, j = divmod(self.start, self.batches_per_epoch())
        while True:
            batches = self.epoch_batches(epoch)
            mine = batches[self.rank :: self.world] or batches  # more ranks than batches: every rank sees all
            for b in mine[j:]:
                yield [(i, epoch) for i in b]
            epoch, j = epoch + 1, 0

    def __len__(self) -> int:  # pragma: no cover - endless
        return 2**62
