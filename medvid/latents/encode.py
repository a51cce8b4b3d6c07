"""``medvid encode``: encode training clips and images to VAE latents once.

Output folder::

    OUT/meta.json                  VAE description, scaling factor, latent shapes, clip protocol,
                                   the cached latents' mean/std and size on disk (``latent_stats``)
    OUT/index.jsonl                one line per clip variant: clip_id, video_id, split, shard, window,
                                   start, stride, hflip, video_variants, num_images, caption
    OUT/shard-00000.safetensors    "<clip_id>/video" (F_v, C, h, w), posterior samples 2.. as
                                   "<clip_id>/video/1", ...; "<clip_id>/images" (N, C, h, w) when the
                                   images are stored per clip (``image_pool=0``)
    OUT/images/                    the image pool: one row per video, "<video_id>#images" (K, C, h, w)

What is cached, by default, so that every epoch can see a different version of each video (the
reference code draws a new window, flip and image set for every item and samples the posterior):

* **Windows over the whole video.** ``clips_per_video=None`` places ``ceil((n - span) / span) + 1``
  windows evenly from the first frame to the last (consecutive windows overlap or touch, so every
  frame is in one), where ``span = num_frames * stride + 1`` frames with the flow frame; a video
  shorter than ``span`` plays as a loop and gets one window. An int places that many, evenly.
* **Both flips** of each window (``flips="both"``; ``"random"`` caches one random flip, ``"none"``
  none). The two share a window number: ``LatentDataset`` draws one of them per epoch.
* **An image pool** of ``image_pool`` frames per video (evenly spaced, alternating flips), each
  encoded alone, for joint image-video training: ``LatentDataset`` draws ``num_images`` of them from
  other videos for every item, anew every epoch. ``image_pool=0`` stores a fixed set of
  ``num_images`` per clip instead (the earlier protocol).
* **Posterior.** ``posterior="mean"`` (default, deterministic) or ``"sample"``:
  ``posterior_samples`` draws ``mean + std * eps`` per clip variant (and per pool image), eps seeded
  by the seed and the clip id, so the cache is a function of its inputs.

Cache size: a video of ``W`` windows costs ``W * flips * posterior_samples * F_v + image_pool *
posterior_samples`` latent frames of ``C * h * w`` values, against ``F_v + num_images`` for one
fixed clip; ``encode`` prints the total and the ratio.

Frames: a clip's ``clip_id`` (``video@s<start>r<stride><f|n>``) names its frames, so ``medvid
flow-features`` (fed this folder) and ``ClipDataset.get_clip(clip_id)`` rebuild them; only the first
``num_frames`` frames are encoded (16 -> 4 latents for the CogVideoX VAE, see ``medvid.latents.vae``).

Resumable: a shard is written to a temporary file and renamed, and only then are its clips appended
to ``index.jsonl``; a re-run skips every clip already in the index. A crash loses at most the shard
being filled; a shard file left without index lines by a crash is removed on the next run.

At the end the cached latents' mean and std are printed, with a warning when they are far from the
(0, 1) the diffusion noise schedule assumes (``medvid.latents.scale``: fit the VAE's latent scale).

Many processes: under ``torchrun --nproc-per-node N -m medvid encode ...`` rank r encodes windows
r, r + N, ... (and the image pools of videos r, r + N, ...) of the single-process order into its own
``shard-rank-0000r-*`` files and ``index-rank-0000r.jsonl``; rank 0 then merges the indexes into
``index.jsonl`` in the single-process order (``medvid.data.shards``) and writes the statistics.
``--shard I/N`` jobs do the same without a launcher, and ``--merge`` joins them. Tensors and index
rows equal a single process's; only the shard file names differ.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medvid.data.datasets import ClipDataset, make_clip_id, read_index, resize_center_crop
from medvid.data.manifest import ManifestError, read_manifest, resolve_manifest, write_json
from medvid.data.readers import VideoReadError
from medvid.data.shards import ShardWriter
from medvid.latents.scale import RunningMoments, scale_warning
from medvid.latents.vae import VideoVAE, load_vae
from medvid.utils.logging import get_logger
from medvid.utils.sharding import add_shard_arguments

log = get_logger("encode")

FORMAT = "medvid-latents/1"
POOL_FORMAT = "medvid-image-pool/1"
POOL_DIR = "images"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FLIPS = ("both", "random", "none")
POSTERIORS = ("mean", "sample")


# -- what to encode -------------------------------------------------------------------------------
def window_starts(num_frames: int, span: int, count: int | None = None) -> list[int]:
    """First frames of the windows of ``span`` frames cached for a video of ``num_frames`` frames.

    ``count=None``: enough windows, evenly spaced from the first frame to the last, that consecutive
    ones leave no frame out; a looped video (``span > num_frames``) gets one. An int: that many,
    evenly spaced (over the whole loop for a looped video). Duplicates are dropped.
    """
    if count is not None and count < 1:
        raise ValueError(f"clips_per_video={count}: need at least 1 (or None: windows over the whole video)")
    free = num_frames - span
    if free < 0:  # looped playback: every start is valid
        count = count or 1
        return sorted({i * num_frames // count for i in range(count)})
    count = count or (math.ceil(free / span) + 1 if free else 1)
    if count == 1:
        return [free // 2]
    return sorted({int(round(i * free / (count - 1))) for i in range(count)})


def variant_specs(ds: ClipDataset, clips_per_video: int | None, flips: str, seed: int) -> list[dict[str, Any]]:
    """One spec per window of every video of ``ds``: ``{video_index, video_id, window, start,
    stride, variants: [(hflip, clip_id), ...], images: [(video_index, frame, hflip), ...]}``."""
    windows = []
    nv = len(ds.entries)
    for v, entry in enumerate(ds.entries):
        n = int(entry["num_frames"])
        stride = ds._stride_for(n)
        span = (ds.clip_length - 1) * stride + 1
        for w, start in enumerate(window_starts(n, span, clips_per_video)):
            rng = np.random.default_rng([seed, v, w])
            if flips == "both":
                fl = (False, True)
            elif flips == "random":
                fl = (bool(rng.random() < 0.5),)
            else:
                fl = (False,)
            images = []  # the per-clip images of image_pool=0: frames of other videos, as ClipDataset draws
            for _ in range(ds.num_images):
                u = int(rng.integers(0, nv - 1)) if nv > 1 else 0
                o = (u if u < v else u + 1) if nv > 1 else v
                images.append((o, int(rng.integers(0, int(ds.entries[o]["num_frames"]))), bool(rng.random() < 0.5)))
            windows.append({"video_index": v, "video_id": entry["id"], "window": w, "start": start, "stride": stride,
                            "variants": [(f, make_clip_id(entry["id"], start, stride, f)) for f in fl],
                            "images": images})
    return windows


def pool_frames(num_frames: int, size: int) -> list[tuple[int, bool]]:
    """``size`` (frame, hflip) pairs evenly spaced over a video, flips alternating; no duplicates."""
    pairs = [(min(num_frames - 1, int((k + 0.5) * num_frames / size)), bool(k % 2)) for k in range(size)]
    return list(dict.fromkeys(pairs))


def _noise(seed: int, key: str, sample: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Posterior noise of one cached tensor: a function of (seed, its id, sample number) only."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode()) * 101 + sample) % (2**63))
    return torch.randn(shape, generator=g)


def _draws(mean: torch.Tensor, std: torch.Tensor, posterior: str, samples: int, seed: int, key: str) -> list[torch.Tensor]:
    if posterior == "mean":
        return [mean]
    return [mean + std * _noise(seed, key, p, tuple(mean.shape)).to(mean) for p in range(samples)]


class _Windows(Dataset):
    """Decodes the frames of windows (unflipped; flips are made from them) and per-clip images."""

    def __init__(self, ds: ClipDataset, windows: list[dict[str, Any]], num_frames: int):
        self.ds, self.windows, self.num_frames = ds, windows, num_frames

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        w, r = self.windows[i], self.ds.resolution
        try:
            video = self.ds.read_clip(w["video_id"], w["start"], w["stride"], False, length=self.num_frames)
            imgs = [resize_center_crop(self.ds._reader(o).read([f]), r, hflip=fl)[0] for o, f, fl in w["images"]]
            images = torch.stack(imgs) if imgs else torch.zeros(0, 3, r, r)
            return {"i": i, "video": video, "images": images, "error": ""}
        except VideoReadError as e:
            self.ds.bad_videos[e.path] = str(e)
            return {"i": i, "video": torch.zeros(self.num_frames, 3, r, r),
                    "images": torch.zeros(len(w["images"]), 3, r, r), "error": f"{e.path}\t{e}"}


# -- cache statistics -------------------------------------------------------------------------------
def cache_statistics(folder: str | os.PathLike, max_shards: int = 16) -> dict[str, Any]:
    """Mean and std of the cached latents (video, image and image-pool latents alike, as training sees
    them), read from up to ``max_shards`` shards spread over each cache, and the size on disk."""
    from safetensors import safe_open

    folder = Path(folder)
    moments = RunningMoments()
    out: dict[str, Any] = {"bytes": 0, "shards": 0, "shards_read": 0}
    for sub in (folder, folder / POOL_DIR):
        if not (sub / "index.jsonl").is_file():
            continue
        shards = sorted({r["shard"] for r in read_index(sub)})
        files = [sub / f"{s}.safetensors" for s in shards if (sub / f"{s}.safetensors").is_file()]
        size = sum(f.stat().st_size for f in files)
        out["bytes"] += size
        out["shards"] += len(files)
        if sub != folder:
            out["image_pool_bytes"] = size
        pick = files if len(files) <= max_shards else [files[round(i * (len(files) - 1) / (max_shards - 1))]
                                                       for i in range(max_shards)]
        for f in pick:
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():
                    moments.update(fh.get_tensor(key).float())
        out["shards_read"] += len(pick)
    return {"mean": moments.mean, "std": moments.std, "values": moments.count, **out}


def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    vae = {k: v for k, v in meta["vae"].items() if k != "source"}
    return {"protocol": meta["protocol"], "vae": vae, "dtype": meta["dtype"], "format": meta["format"]}


# -- encode -------------------------------------------------------------------------------------------
def encode(
    source: str | os.PathLike,
    vae: str | os.PathLike | torch.nn.Module,
    out: str | os.PathLike,
    *,
    splits: tuple[str, ...] = ("train", "val"),
    clips_per_video: int | None = None,
    num_frames: int = 16,
    frame_stride: int | None = None,
    resolution: int | None = None,
    num_images: int = 8,
    image_pool: int = 16,
    flips: str = "both",
    posterior: str = "mean",
    posterior_samples: int = 2,
    seed: int = 0,
    short_policy: str = "loop",
    hflip: bool = True,
    shard_size: int = 64,
    batch_size: int = 2,
    num_workers: int = 0,
    dtype: str = "float32",
    progress: bool = True,
    shard: str | None = None,
    merge: bool = False,
) -> dict[str, Any]:
    """Encode the clips of a manifest (or prepared folder) into ``out``; return a summary.

    See the module docstring for what is cached. ``hflip=False`` is ``flips="none"``.
    ``resolution`` and ``frame_stride`` default to what the VAE was trained with (its folder's
    ``medvid_training.json``), else 128 and 3; a value that disagrees with that record is refused.
    Under torchrun (or with ``shard="I/N"``) this process encodes its share only; ``merge=True``
    joins the rank indexes of earlier ``--shard`` jobs (see the module docstring).
    """
    from medvid.utils.sharding import sharding

    with sharding(shard, merge=merge) as sh:
        return _encode(source, vae, out, splits=splits, clips_per_video=clips_per_video, num_frames=num_frames,
                       frame_stride=frame_stride, resolution=resolution, num_images=num_images, image_pool=image_pool,
                       flips=flips, posterior=posterior, posterior_samples=posterior_samples, seed=seed,
                       short_policy=short_policy, hflip=hflip, shard_size=shard_size, batch_size=batch_size,
                       num_workers=num_workers, dtype=dtype, progress=progress, sh=sh, merge=merge)


def _encode(source, vae, out, *, splits, clips_per_video, num_frames, frame_stride, resolution, num_images, image_pool,
            flips, posterior, posterior_samples, seed, short_policy, hflip, shard_size, batch_size, num_workers, dtype,
            progress, sh, merge) -> dict[str, Any]:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from medvid.data.shards import merge_index
    from medvid.utils.sharding import sum_counts

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {sorted(DTYPES)}")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size={shard_size}, batch_size={batch_size}: both must be >= 1")
    if flips not in FLIPS or posterior not in POSTERIORS:
        raise ValueError(f"flips={flips!r}, posterior={posterior!r}: use flips in {FLIPS}, posterior in {POSTERIORS}")
    if posterior_samples < 1 or image_pool < 0:
        raise ValueError(f"posterior_samples={posterior_samples}, image_pool={image_pool}: need >= 1 and >= 0")
    flips = flips if hflip else "none"
    samples = posterior_samples if posterior == "sample" else 1
    pool = image_pool if num_images else 0
    manifest = resolve_manifest(source)
    entries = read_manifest(manifest)
    from medvid.utils.settings import pick, vae_settings

    rec = vae_settings(vae)
    resolution = pick("--resolution", resolution, rec.get("resolution"), 128, f"the VAE {vae}")
    frame_stride = pick("--frame-stride", frame_stride, rec.get("frame_stride"), 3, f"the VAE {vae}")
    vae = vae if isinstance(vae, VideoVAE) else load_vae(vae)
    vae.eval()
    if resolution % vae.spatial_compression:
        raise ValueError(
            f"resolution={resolution} is not a multiple of the VAE's spatial compression {vae.spatial_compression}; "
            f"pick e.g. {max(1, round(resolution / vae.spatial_compression)) * vae.spatial_compression}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    h = resolution // vae.spatial_compression
    meta = {
        "format": FORMAT,
        "manifest": str(manifest.resolve()),
        "vae": vae.describe(),
        "scaling_factor": vae.scaling_factor,
        "latent_channels": vae.latent_channels,
        "dtype": dtype,
        "protocol": {
            "num_frames": num_frames,
            "frame_stride": frame_stride,
            "resolution": resolution,
            "num_images": num_images,
            "seed": seed,
            "clips_per_video": clips_per_video,
            "windows": "whole video" if clips_per_video is None else "evenly spaced",
            "short_policy": short_policy,
            "hflip": flips != "none",
            "flips": flips,
            "image_pool": pool,
            "posterior": posterior,
            "posterior_samples": samples,
            "extra_flow_frame": True,
            "encoded_frames": num_frames,
            "images_encoded_alone": True,
        },
        "shapes": {
            "video": [vae.latent_frames(num_frames), vae.latent_channels, h, h],
            "images": [num_images, vae.latent_channels, h, h],
        },
    }
    meta_path = out / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        if _comparable(old) != _comparable(meta):
            raise ValueError(
                f"{out}: holds latents made with a different VAE, dtype or clip protocol "
                f"({meta_path}); use a new --out folder or delete this one"
            )
    write_json(meta_path, meta)

    writer = ShardWriter(out, FORMAT, shard_size, tag=sh.tag)
    pool_writer = ShardWriter(out / POOL_DIR, POOL_FORMAT, shard_size, tag=sh.tag) if pool else None
    done = writer.done
    torch_dtype = DTYPES[dtype]
    stats = {"encoded": 0, "already_done": 0, "duplicates": 0, "windows": 0, "videos": 0, "pool_images": 0}

    bad_videos: dict[str, str] = {}
    order: list[str] = []  # every clip id, and every image pool, in the single-process order
    pool_order: list[str] = []
    for split in splits:
        if not any(e.get("split", "train") == split for e in entries):
            continue
        ds = ClipDataset(
            entries, split=split, num_frames=num_frames, frame_stride=frame_stride, resolution=resolution,
            extra_flow_frame=True, num_images=0 if pool else num_images, hflip=flips != "none", seed=seed,
            short_policy=short_policy,
        )
        ds.source = str(manifest)
        windows = variant_specs(ds, clips_per_video, flips, seed)
        order += [cid for w in windows for _, cid in w["variants"]]
        pool_order += [f"{e['id']}#images" for e in ds.entries]
        if sh.is_main:  # counted once, not per rank
            stats["windows"] += len(windows)
            stats["videos"] += len(ds.entries)
        todo = []
        for w in sh.take(windows) if not merge else []:
            left = [cid for _, cid in w["variants"] if cid not in done]
            stats["already_done"] += len(w["variants"]) - len(left)
            if left:
                todo.append(w)
        if todo:
            loader = DataLoader(_Windows(ds, todo, num_frames), batch_size=batch_size, num_workers=num_workers,
                                shuffle=False)
            bar = tqdm(total=len(todo), desc=f"encode {split}", unit="window", disable=not progress)
            for batch in loader:
                ok = [b for b, err in enumerate(batch["error"]) if not err]
                for b, err in enumerate(batch["error"]):
                    if err:
                        path, msg = err.split("\t", 1)
                        bad_videos[path] = msg
                        log.warning("skipping a window of an unreadable video (%s)", msg)
                jobs = []  # (window, hflip, clip_id, row in the stacked batch)
                for b in ok:
                    w = todo[int(batch["i"][b])]
                    for f, cid in w["variants"]:
                        if cid in done:
                            continue
                        jobs.append((b, w, f, cid))
                if jobs:
                    video = torch.stack([batch["video"][b].flip(-1) if f else batch["video"][b] for b, _, f, _ in jobs])
                    with torch.no_grad():
                        mean, std = vae.posterior(video)  # (V, F_v, C, h, w) each
                        zi = vae.encode_images(batch["images"]) if batch["images"].shape[1] else None
                    for j, (b, w, f, cid) in enumerate(jobs):
                        if cid in done:
                            stats["duplicates"] += 1
                            continue
                        draws = _draws(mean[j], std[j], posterior, samples, seed, cid)
                        tensors = {f"{cid}/video": draws[0].to(torch_dtype)}
                        tensors.update({f"{cid}/video/{p}": d.to(torch_dtype) for p, d in enumerate(draws) if p})
                        row = {
                            "clip_id": cid, "video_id": w["video_id"], "split": split, "window": w["window"],
                            "start": w["start"], "stride": w["stride"], "hflip": f, "num_frames": num_frames,
                            "num_video_latents": int(mean.shape[1]), "video_variants": len(draws),
                            "num_images": 0, "caption": str(ds.entries[w["video_index"]].get("caption", "")),
                        }
                        if zi is not None:
                            tensors[f"{cid}/images"] = zi[b].to(torch_dtype)
                            row["num_images"] = int(zi.shape[1])
                            row["images"] = [[ds.entries[o]["id"], fr, fl] for o, fr, fl in w["images"]]
                        writer.add(row, tensors)
                        stats["encoded"] += 1
                bar.update(len(batch["error"]))
            bar.close()
            writer.flush()
        if pool_writer is not None and not merge:
            stats["pool_images"] += _encode_pool(ds, vae, pool_writer, split, pool, posterior, samples, seed,
                                                 batch_size, torch_dtype, bad_videos, progress,
                                                 sh.take(range(len(ds.entries))))
        bad_videos.update(ds.bad_videos)
        ds.close()
    part = {**stats, "shards_written": writer.shards_written, "bad_videos": bad_videos}
    summary = {**sum_counts(sh.gather(part)), "out": str(out)}

    def merged() -> int:
        if pool_writer is not None:
            merge_index(out / POOL_DIR, pool_order)
        return merge_index(out, order)

    total = sh.finish(merged, None)
    if total is None:  # a rank that does not merge: its own share only
        return {**part, "out": str(out), "shard": f"{sh.rank}/{sh.world_size}"}
    summary["total_clips"] = total
    if total == 0:
        raise ManifestError(f"{manifest}: no clip could be encoded (splits {list(splits)}); see the warnings above")
    summary["latents"] = cache_statistics(out)
    summary["cache"] = _cache_cost(out, summary, meta, torch_dtype)
    warning = scale_warning(summary["latents"]["mean"], summary["latents"]["std"],
                            vae_hint=vae.source if Path(vae.source).exists() else "VAE_DIR")
    if warning:
        log.warning("%s: %s", out, warning)
    summary["scale_warning"] = warning
    meta["latent_stats"] = {**summary["latents"], **summary["cache"]}
    write_json(meta_path, meta)
    return summary


def _encode_pool(ds: ClipDataset, vae: VideoVAE, writer: ShardWriter, split: str, size: int, posterior: str,
                 samples: int, seed: int, batch_size: int, torch_dtype: torch.dtype, bad_videos: dict[str, str],
                 progress: bool, videos: list[int] | None = None) -> int:
    """Encode ``size`` frames of every video of ``ds`` (or of the ``videos`` indices) alone into the
    image pool; return images written."""
    from tqdm import tqdm

    written = 0
    picked = range(len(ds.entries)) if videos is None else videos
    for v in tqdm(picked, desc=f"image pool {split}", unit="video", disable=not progress):
        entry = ds.entries[v]
        pid = f"{entry['id']}#images"
        if pid in writer.done:
            continue
        pairs = pool_frames(int(entry["num_frames"]), size)
        try:
            frames = ds._reader(v).read([f for f, _ in pairs])
        except VideoReadError as e:
            bad_videos[e.path] = str(e)
            log.warning("no image pool for an unreadable video (%s)", e)
            continue
        x = resize_center_crop(frames, ds.resolution)  # (K, 3, R, R)
        x = torch.stack([img.flip(-1) if fl else img for img, (_, fl) in zip(x, pairs)])
        means, stds = [], []
        for lo in range(0, len(x), max(batch_size * 4, 1)):
            with torch.no_grad():
                m, s = vae.posterior(x[lo : lo + batch_size * 4, None])  # (k, 1, C, h, w): each frame alone
            means.append(m[:, 0])
            stds.append(s[:, 0])
        mean, std = torch.cat(means), torch.cat(stds)  # (K, C, h, w)
        draws = _draws(mean, std, posterior, samples, seed, pid)
        images = torch.cat(draws).to(torch_dtype)  # (K * samples, C, h, w)
        refs = [[f, fl, p] for p in range(len(draws)) for f, fl in pairs]
        writer.add({"clip_id": pid, "video_id": entry["id"], "split": split, "num_images": len(refs),
                    "frames": refs}, {f"{pid}/images": images})
        written += len(refs)
    writer.flush()
    return written


def _cache_cost(out: Path, summary: dict[str, Any], meta: dict[str, Any], torch_dtype: torch.dtype) -> dict[str, Any]:
    """What the variants cost, in latent frames (from the index) and on disk, against one fixed clip
    (+ its ``num_images`` images) per video, the protocol before variants."""
    f_v, c, h, w = meta["shapes"]["video"]
    frame_bytes = c * h * w * torch.empty(0, dtype=torch_dtype).element_size()
    frames = sum(int(r.get("num_video_latents", f_v)) * int(r.get("video_variants", 1)) + int(r.get("num_images", 0))
                 for r in read_index(out))
    if (out / POOL_DIR / "index.jsonl").is_file():
        frames += sum(int(r["num_images"]) for r in read_index(out / POOL_DIR))
    videos = max(summary["videos"], 1)
    single = videos * (f_v + meta["protocol"]["num_images"])
    return {"cache_bytes": summary["latents"]["bytes"], "bytes_per_video": summary["latents"]["bytes"] / videos,
            "latent_frames": frames, "latent_frame_bytes": frame_bytes,
            "single_clip_bytes": single * frame_bytes, "ratio_to_single_clip": frames / max(single, 1)}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="manifest.jsonl or a folder written by `medvid prepare`")
    parser.add_argument("--vae", required=True, help="local diffusers VAE folder (config.json + safetensors)")
    parser.add_argument("--out", required=True, help="output folder for shards, index.jsonl, meta.json")
    parser.add_argument("--splits", default="train,val", help="comma-separated splits to encode")
    parser.add_argument("--clips-per-video", type=lambda v: None if v == "auto" else int(v), default=None,
                        help="windows per video: 'auto' (default: evenly over the whole video, none left out) or N")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--frame-stride", type=int, default=None, help="unset: what the VAE was trained with, else 3")
    parser.add_argument("--resolution", type=int, default=None, help="unset: what the VAE was trained with, else 128")
    parser.add_argument("--num-images", type=int, default=8, help="joint-training images per item (0: none)")
    parser.add_argument("--image-pool", type=int, default=16,
                        help="frames per video encoded alone, drawn among for --num-images every epoch "
                             "(0: a fixed set of --num-images per clip)")
    parser.add_argument("--flips", choices=FLIPS, default="both", help="cache both flips of each window, one random, or none")
    parser.add_argument("--posterior", choices=POSTERIORS, default="mean", help="posterior mean, or samples")
    parser.add_argument("--posterior-samples", type=int, default=2, help="with --posterior sample: draws per clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--short-policy", choices=("loop", "stride"), default="loop")
    parser.add_argument("--no-hflip", action="store_true", help="same as --flips none")
    parser.add_argument("--shard-size", type=int, default=64, help="clips per shard file")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--no-progress", action="store_true")
    add_shard_arguments(parser)


def main(args: argparse.Namespace) -> int:
    try:
        summary = encode(
            args.source, args.vae, args.out, splits=tuple(s for s in args.splits.split(",") if s),
            clips_per_video=args.clips_per_video, num_frames=args.num_frames, frame_stride=args.frame_stride,
            resolution=args.resolution, num_images=args.num_images, image_pool=args.image_pool, flips=args.flips,
            posterior=args.posterior, posterior_samples=args.posterior_samples, seed=args.seed,
            short_policy=args.short_policy, hflip=not args.no_hflip, shard_size=args.shard_size,
            batch_size=args.batch_size, num_workers=args.num_workers, dtype=args.dtype,
            progress=not args.no_progress, shard=args.shard, merge=args.merge,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"medvid encode: {e}", file=sys.stderr)
        return 2
    if "total_clips" not in summary:  # one --shard job: the index comes with --merge
        print(f"shard {args.shard}: encoded {summary['encoded']} clip(s) ({summary['already_done']} already cached); "
              "when every shard is done, run the same command with --merge instead of --shard")
        return 0
    print(
        f"encoded {summary['encoded']} clip(s) ({summary['already_done']} already cached); "
        f"{summary['total_clips']} clips ({summary['windows']} windows of {summary['videos']} videos) in {summary['out']}"
    )
    lat, cost = summary["latents"], summary["cache"]
    print(f"cached latents: mean {lat['mean']:.4f}, std {lat['std']:.4f} (over {lat['shards_read']} of "
          f"{lat['shards']} shards)")
    print(f"cache size: {_human(cost['cache_bytes'])} on disk, {_human(cost['bytes_per_video'])} per video; "
          f"{cost['latent_frames']} latent frames, {cost['ratio_to_single_clip']:.1f}x the "
          f"{_human(cost['single_clip_bytes'])} of one fixed clip per video")
    if summary["scale_warning"]:
        print(f"WARNING: {summary['scale_warning']}")
    if summary["bad_videos"]:
        print(f"{len(summary['bad_videos'])} video(s) could not be read: {sorted(summary['bad_videos'])}", file=sys.stderr)
    return 0
