"""Training datasets: pixel clips from videos (``ClipDataset``) and cached latents (``LatentDataset``).

The clip protocol follows MedSora by default: 16 frames taken every 3rd frame, plus the next frame
that optical flow needs (17 in all), shorter side resized to 128 (bilinear, antialiased, as
torchvision's ``Resize`` on tensors), centre crop, values in [-1, 1], random horizontal flip; for
joint image-video training 8 single frames from *other* videos.

Determinism: everything random about item ``i`` (clip start, flip, which images) comes from a
generator seeded with ``(seed, epoch, i)``, so results do not depend on the number of DataLoader
workers or the order in which they ask for items. Call ``set_epoch`` before each epoch (with
``persistent_workers=False``, the default, workers pick the new epoch up when they restart).

Videos shorter than a clip's span, ``(T - 1) * stride + 1`` frames (47 for the default protocol):
``short_policy="loop"`` (default) plays the video as a loop, indices wrapping modulo its length. A
cardiac cine loop covers whole heartbeats, so its last frame is followed naturally by its first;
the embedded 30-frame echocardiogram gives clips this way at the paper's frame rate.
``short_policy="stride"`` lowers the stride until the clip fits (looping only if stride 1 still
does not fit): better for short non-periodic footage, at the cost of changing apparent speed.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medvid.data.manifest import ManifestError, read_manifest
from medvid.data.readers import VideoReadError, open_video
from medvid.utils.logging import get_logger

log = get_logger("data")

# Readers a DataLoader worker inherited from its parent through fork(). FFmpeg's decoder threads do
# not survive fork, so touching (or even closing) such a container in the child can wait forever on
# threads that no longer exist: the child keeps them referenced, untouched, and opens its own.
_INHERITED: list[Any] = []

CLIP_ID = re.compile(r"^(?P<video>.*)@s(?P<start>\d+)r(?P<stride>\d+)(?P<flip>[fn])$")
SHORT_POLICIES = ("loop", "stride")


def make_clip_id(video_id: str, start: int, stride: int, hflip: bool) -> str:
    """Stable id of a clip: its video, first frame, stride and flip (``echo@s12r3f``)."""
    return f"{video_id}@s{int(start)}r{int(stride)}{'f' if hflip else 'n'}"


def parse_clip_id(clip_id: str) -> dict[str, Any]:
    m = CLIP_ID.match(clip_id)
    if not m:
        raise ValueError(f"clip id {clip_id!r} is not of the form VIDEO@s<start>r<stride><f|n>")
    return {"video_id": m["video"], "start": int(m["start"]), "stride": int(m["stride"]), "hflip": m["flip"] == "f"}


def clip_frame_indices(num_video_frames: int, start: int, stride: int, length: int) -> np.ndarray:
    """Frame indices of a clip; they wrap modulo the video length (loop playback)."""
    return (int(start) + int(stride) * np.arange(length)) % int(num_video_frames)


def resize_center_crop(frames: np.ndarray | torch.Tensor, resolution: int, hflip: bool = False) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float ``(T, 3, R, R)`` in [-1, 1] (mirrored when ``hflip``).

    Shorter side to ``resolution`` (the longer side truncated as torchvision's Resize does),
    bilinear with antialiasing (Pillow's, which torchvision's antialiased tensor resize matches to
    within one grey level), then centre crop. Runs in Pillow and numpy, single-threaded on purpose:
    torch's intra-op threads in a data pipeline compete with the training step (and with each other
    across DataLoader workers), which on a loaded 2-core machine made loading ~10x slower.
    """
    from PIL import Image

    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"resize_center_crop: expected uint8 (T, H, W, 3) frames, got {arr.dtype} {arr.shape}")
    h, w = arr.shape[1:3]
    if h <= w:
        nh, nw = resolution, max(resolution, int(resolution * w / h))
    else:
        nh, nw = max(resolution, int(resolution * h / w)), resolution
    top, left = int(round((nh - resolution) / 2.0)), int(round((nw - resolution) / 2.0))
    out = np.empty((arr.shape[0], resolution, resolution, 3), np.uint8)
    for i, f in enumerate(arr):
        if (nh, nw) != (h, w):
            f = np.asarray(Image.fromarray(f).resize((nw, nh), Image.BILINEAR))
        out[i] = f[top : top + resolution, left : left + resolution]
    if hflip:
        out = out[:, :, ::-1]
    x = out.transpose(0, 3, 1, 2).astype(np.float32)  # (T, 3, R, R)
    x *= 1.0 / 127.5
    x -= 1.0
    return torch.from_numpy(np.ascontiguousarray(x))


def _load_entries(manifest: Any) -> tuple[list[dict[str, Any]], str]:
    if isinstance(manifest, (str, os.PathLike)):
        return read_manifest(manifest), str(manifest)
    entries = [dict(e) for e in manifest]
    return entries, "<in-memory manifest>"


class ClipDataset(Dataset):
    """Pixel clips for training; see the module docstring for the protocol.

    Items: ``{"video": (T, 3, R, R), "images": (num_images, 3, R, R), "video_id", "clip_id",
    "caption", "start", "stride", "hflip"}`` with ``T = num_frames + 1`` when ``extra_flow_frame``.
    The dataset holds ``clips_per_video`` items per video per epoch. A video that fails to decode at
    training time is logged, remembered in ``bad_videos`` and replaced by the next video, so one
    damaged file never stops a run.
    """

    def __init__(
        self,
        manifest: str | os.PathLike | Sequence[dict[str, Any]],
        split: str | None = "train",
        num_frames: int = 16,
        frame_stride: int = 3,
        resolution: int = 128,
        extra_flow_frame: bool = True,
        num_images: int = 8,
        hflip: bool = True,
        seed: int = 0,
        clips_per_video: int = 1,
        short_policy: str = "loop",
        max_open_readers: int = 4,
    ):
        if num_frames < 1 or frame_stride < 1 or resolution < 8 or num_images < 0 or clips_per_video < 1:
            raise ValueError(
                f"ClipDataset: num_frames={num_frames}, frame_stride={frame_stride}, resolution={resolution}, "
                f"num_images={num_images}, clips_per_video={clips_per_video}: need num_frames >= 1, "
                "frame_stride >= 1, resolution >= 8, num_images >= 0, clips_per_video >= 1"
            )
        if short_policy not in SHORT_POLICIES:
            raise ValueError(f"ClipDataset: short_policy={short_policy!r}; use one of {SHORT_POLICIES}")
        entries, self.source = _load_entries(manifest)
        if split not in (None, "all"):
            entries = [e for e in entries if e.get("split", "train") == split]
        if not entries:
            raise ManifestError(
                f"{self.source}: no videos in split {split!r}; run `medvid prepare` on more videos, "
                "lower --val-fraction, or pass split=None for all videos"
            )
        self.entries = entries
        self.by_id = {e["id"]: i for i, e in enumerate(entries)}
        self.split = split
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.resolution = resolution
        self.extra_flow_frame = extra_flow_frame
        self.clip_length = num_frames + (1 if extra_flow_frame else 0)
        self.num_images = num_images
        self.hflip = hflip
        self.seed = seed
        self.clips_per_video = clips_per_video
        self.short_policy = short_policy
        self.max_open_readers = max_open_readers
        self.epoch = 0
        self.bad_videos: dict[str, str] = {}
        self._readers: OrderedDict[str, Any] = OrderedDict()
        self._pid = os.getpid()
        if num_images and len(entries) == 1:
            log.warning(
                "%s: only one video in split %r; its joint-training images come from the same video "
                "(other videos are preferred)", self.source, split,
            )

    # -- protocol ---------------------------------------------------------------------------------
    def protocol(self) -> dict[str, Any]:
        """Everything needed to rebuild the clips (written into cached-latent folders)."""
        return {
            "num_frames": self.num_frames,
            "frame_stride": self.frame_stride,
            "resolution": self.resolution,
            "extra_flow_frame": self.extra_flow_frame,
            "num_images": self.num_images,
            "hflip": self.hflip,
            "seed": self.seed,
            "clips_per_video": self.clips_per_video,
            "short_policy": self.short_policy,
            "resize": "shorter side, bilinear antialias, centre crop",
        }

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries) * self.clips_per_video

    def _stride_for(self, n: int) -> int:
        if self.short_policy == "stride":
            return max(1, min(self.frame_stride, (n - 1) // max(self.clip_length - 1, 1)))
        return self.frame_stride

    def clip_spec(self, index: int, video_index: int | None = None) -> dict[str, Any]:
        """Which frames item ``index`` uses (no decoding): video, start, stride, flip, images."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        v = index // self.clips_per_video if video_index is None else video_index
        entry = self.entries[v]
        n = int(entry["num_frames"])
        stride = self._stride_for(n)
        span = (self.clip_length - 1) * stride + 1
        # Valid starts: [0, n - span] without looping, any frame with it. The clips of one video are
        # stratified over that range (clip k draws from the k-th of clips_per_video slices), so
        # several clips per video cover it instead of colliding.
        starts = n - span + 1 if span <= n else n
        k, kk = index % self.clips_per_video, self.clips_per_video
        lo = k * starts // kk
        hi = max(lo + 1, (k + 1) * starts // kk)
        start = int(rng.integers(lo, hi)) % n
        flip = bool(self.hflip and rng.random() < 0.5)
        images = []
        nv = len(self.entries)
        for _ in range(self.num_images):
            if nv > 1:
                u = int(rng.integers(0, nv - 1))
                w = u if u < v else u + 1  # uniform over the other videos
            else:
                w = v
            frame = int(rng.integers(0, int(self.entries[w]["num_frames"])))
            images.append((w, frame, bool(self.hflip and rng.random() < 0.5)))
        return {
            "video_index": v,
            "video_id": entry["id"],
            "start": start,
            "stride": stride,
            "hflip": flip,
            "looped": span > n,
            "clip_id": make_clip_id(entry["id"], start, stride, flip),
            "images": images,
        }

    # -- decoding ---------------------------------------------------------------------------------
    def _reader(self, v: int):
        if self._pid != os.getpid():  # forked into a DataLoader worker
            _INHERITED.append(self._readers)
            self._readers, self._pid = OrderedDict(), os.getpid()
        path = self.entries[v]["path"]
        r = self._readers.pop(path, None)
        if r is None:
            r = open_video(path, fps=self.entries[v].get("fps"))
            if r.num_frames != int(self.entries[v]["num_frames"]):
                log.warning("%s: %d frames now, %s in the manifest", path, r.num_frames, self.entries[v]["num_frames"])
        self._readers[path] = r
        while len(self._readers) > self.max_open_readers:
            _, old = self._readers.popitem(last=False)
            old.close()
        return r

    def read_clip(self, video_id: str, start: int, stride: int, hflip: bool, length: int | None = None) -> torch.Tensor:
        """The exact frames of a clip, ``(length or clip_length, 3, R, R)`` in [-1, 1]."""
        if video_id not in self.by_id:
            raise KeyError(f"video {video_id!r} is not in {self.source} (split {self.split!r})")
        v = self.by_id[video_id]
        n = int(self.entries[v]["num_frames"])
        idx = clip_frame_indices(n, start, stride, length or self.clip_length)
        return resize_center_crop(self._reader(v).read(idx), self.resolution, hflip=hflip)

    def get_clip(self, clip_id: str, length: int | None = None) -> dict[str, Any]:
        """Rebuild a clip from its id (the flow-feature cache uses this to line up with latents)."""
        spec = parse_clip_id(clip_id)
        video = self.read_clip(spec["video_id"], spec["start"], spec["stride"], spec["hflip"], length)
        entry = self.entries[self.by_id[spec["video_id"]]]
        return {"video": video, "video_id": spec["video_id"], "clip_id": clip_id, "caption": str(entry.get("caption", ""))}

    def _load(self, spec: dict[str, Any]) -> dict[str, Any]:
        video = self.read_clip(spec["video_id"], spec["start"], spec["stride"], spec["hflip"])
        images = []
        for w, frame, flip in spec["images"]:
            images.append(resize_center_crop(self._reader(w).read([frame]), self.resolution, hflip=flip)[0])
        r = self.resolution
        entry = self.entries[spec["video_index"]]
        return {
            "video": video,
            "images": torch.from_numpy(np.stack([i.numpy() for i in images])) if images else torch.zeros(0, 3, r, r),
            "video_id": spec["video_id"],
            "clip_id": spec["clip_id"],
            "caption": str(entry.get("caption", "")),
            "start": spec["start"],
            "stride": spec["stride"],
            "hflip": spec["hflip"],
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        spec = self.clip_spec(index)
        nv = len(self.entries)
        for attempt in range(min(nv, 8)):
            try:
                return self._load(spec)
            except VideoReadError as e:
                bad = e.path
                self.bad_videos[bad] = str(e)
                self._readers.pop(bad, None)
                log.warning("skipping unreadable video (%s); using the next one", e)
                spec = self.clip_spec(index, video_index=(spec["video_index"] + 1) % nv)
        raise RuntimeError(f"{self.source}: {len(self.bad_videos)} videos failed to decode: {self.bad_videos}")

    def __getstate__(self):  # open containers cannot cross process boundaries
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()
        state["_pid"] = None  # unpickled in another process: open fresh readers there
        return state

    def close(self) -> None:
        if self._pid != os.getpid():
            return
        for r in self._readers.values():
            r.close()
        self._readers.clear()


# ------------------------------------------------------------------------------------------------
# Cached latents (written by `medvid encode`) and flow features (written by `medvid flow-features`)
# ------------------------------------------------------------------------------------------------


def read_index(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """``FOLDER/index.jsonl`` lines; a last line cut short by an interruption is ignored."""
    path = Path(folder) / "index.jsonl"
    if not path.is_file():
        raise ValueError(f"{folder}: no index.jsonl; is this a folder written by `medvid encode` / `medvid flow-features`?")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class ShardReader:
    """Lazy tensor access into ``FOLDER/<shard>.safetensors`` files (one open handle per shard)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._handles: dict[str, Any] = {}

    def get(self, shard: str, key: str) -> torch.Tensor:
        from safetensors import safe_open

        h = self._handles.get(shard)
        if h is None:
            path = self.folder / f"{shard}.safetensors"
            if not path.is_file():
                raise ValueError(f"{path}: shard listed in index.jsonl is missing; re-run the command that wrote {self.folder}")
            h = self._handles[shard] = safe_open(str(path), framework="pt")
        return h.get_tensor(key)

    def __getstate__(self):
        return {"folder": self.folder, "_handles": {}}


class FlowFeatureCache:
    """Flow-feature cache: ``DIR/index.jsonl`` lines ``{"clip_id", "shard", "num_layers"}`` and tensors
    ``"<clip_id>/layer{i}"`` (F_video, tokens, channels) in ``DIR/<shard>.safetensors``."""

    def __init__(self, folder: str | os.PathLike):
        self.index = {r["clip_id"]: r for r in read_index(folder)}
        self.shards = ShardReader(folder)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.index

    def get(self, clip_id: str) -> list[torch.Tensor]:
        row = self.index[clip_id]
        return [self.shards.get(row["shard"], f"{clip_id}/layer{i}") for i in range(int(row["num_layers"]))]


class LatentDataset(Dataset):
    """Cached latents written by ``medvid encode``.

    Items: ``{"latents": (F_v + N_img, C, h, w), "num_images": int, "clip_id", "video_id",
    "caption"}``, plus ``"flow_features"`` (list of L tensors ``(F_video, tokens, channels)``) when
    ``flow_features_dir`` is given. Clips without cached flow features are left out (with a warning).

    One item per cached *window* of a video. When the cache holds several variants of a window (both
    flips, posterior samples) and an image pool, every epoch draws one variant and a fresh set of
    ``num_images`` pool images from other videos, as a function of ``(seed, epoch, index)`` only
    (call ``set_epoch``; the trainer does), so runs resume exactly and workers agree.
    """

    def __init__(self, latent_dir: str | os.PathLike, split: str | None = "train",
                 flow_features_dir: str | os.PathLike | None = None, seed: int = 0):
        self.latent_dir = Path(latent_dir)
        meta_path = self.latent_dir / "meta.json"
        if not meta_path.is_file():
            raise ValueError(f"{self.latent_dir}: no meta.json; run `medvid encode MANIFEST --vae PATH --out {self.latent_dir}` first")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        rows = read_index(self.latent_dir)
        if split not in (None, "all"):
            rows = [r for r in rows if r.get("split", "train") == split]
        self.flow = FlowFeatureCache(flow_features_dir) if flow_features_dir else None
        if self.flow is not None:
            missing = [r["clip_id"] for r in rows if r["clip_id"] not in self.flow]
            if missing:
                log.warning("%d of %d clips have no cached flow features in %s; leaving them out", len(missing), len(rows), flow_features_dir)
                rows = [r for r in rows if r["clip_id"] in self.flow]
        if not rows:
            raise ValueError(
                f"{self.latent_dir}: no cached clips for split {split!r}"
                + (f" with flow features in {flow_features_dir}" if flow_features_dir else "")
                + "; run `medvid encode` (and `medvid flow-features`) on this split"
            )
        self.rows = rows
        # Variants of one window (its flips) form one item; caches without "window" have one per row.
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(rows):
            key = (r.get("split"), r.get("video_id"), r["window"]) if "window" in r else r["clip_id"]
            groups.setdefault(key, []).append(i)
        self.groups = list(groups.values())
        self.shards = ShardReader(self.latent_dir)
        self.scaling_factor = float(self.meta.get("scaling_factor", 1.0))
        self.seed = int(seed)
        self.epoch = 0
        self.num_images = int(self.meta.get("protocol", {}).get("num_images", 0))
        self.pool: dict[str, dict[str, Any]] = {}
        pool_dir = self.latent_dir / "images"
        if self.num_images and (pool_dir / "index.jsonl").is_file():
            self.pool = {r["video_id"]: r for r in read_index(pool_dir)
                         if split in (None, "all") or r.get("split", "train") == split}
            self.pool_shards = ShardReader(pool_dir)
        self.pool_videos = sorted(self.pool)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.groups)

    def _pool_images(self, video_id: str, rng: np.random.Generator) -> tuple[torch.Tensor, list[list[Any]]]:
        """``num_images`` pool latents ``(N, C, h, w)`` from videos other than ``video_id`` (itself
        only when it is the only one), and which (video, pool position) each is."""
        others = [v for v in self.pool_videos if v != video_id] or self.pool_videos
        picks = []
        for _ in range(self.num_images):
            v = others[int(rng.integers(0, len(others)))]
            picks.append([v, int(rng.integers(0, int(self.pool[v]["num_images"])))])
        rows = {v: self.pool_shards.get(self.pool[v]["shard"], f"{self.pool[v]['clip_id']}/images") for v, _ in picks}
        return torch.stack([rows[v][j] for v, j in picks]), picks

    def __getitem__(self, index: int) -> dict[str, Any]:
        group = self.groups[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        row = self.rows[group[int(rng.integers(0, len(group)))] if len(group) > 1 else group[0]]
        cid = row["clip_id"]
        variants = int(row.get("video_variants", 1))
        p = int(rng.integers(0, variants)) if variants > 1 else 0
        video = self.shards.get(row["shard"], f"{cid}/video" if p == 0 else f"{cid}/video/{p}")  # (F_v, C, h, w)
        parts = [video]
        n_img = int(row.get("num_images", 0))
        if n_img:
            parts.append(self.shards.get(row["shard"], f"{cid}/images"))  # (N_img, C, h, w)
        elif self.pool:
            images, _ = self._pool_images(str(row.get("video_id", "")), rng)  # (N_img, C, h, w)
            parts.append(images)
            n_img = images.shape[0]
        if video.dtype == torch.bfloat16:
            latents = torch.cat(parts, 0).float()
        else:  # numpy: single-threaded, no intra-op thread pool contending with the training step
            latents = torch.from_numpy(np.concatenate([q.numpy() for q in parts]).astype(np.float32, copy=False))
        item = {
            "latents": latents,
            "num_images": n_img,
            "clip_id": cid,
            "video_id": row.get("video_id", ""),
            "caption": str(row.get("caption", "")),
        }
        if self.flow is not None:
            item["flow_features"] = self.flow.get(cid)
        return item
