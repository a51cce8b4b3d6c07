"""``medvid encode``: encode training clips and images to VAE latents once.

Output folder::

    OUT/meta.json                  VAE description, scaling factor, latent shapes, clip protocol
    OUT/index.jsonl                one line per clip: clip_id, video_id, split, shard, start, stride,
                                   hflip, num_images, image sources, caption
    OUT/shard-00000.safetensors    tensors "<clip_id>/video" (F_v, C, h, w), "<clip_id>/images" (N, C, h, w)

Clips are drawn by ``ClipDataset`` exactly as training draws them (epoch 0, the same seed), with the
extra flow frame, so a clip's ``clip_id`` and frames match what ``medvid flow-features`` computes:
``index.jsonl`` records ``video_id, start, stride, hflip`` and ``ClipDataset.get_clip(clip_id)``
rebuilds the frames. Only the first ``num_frames`` frames are encoded (16 -> 4 latents for the
CogVideoX VAE, see ``medvid.latents.vae``); each joint-training image is encoded alone.

Resumable: a shard is written to a temporary file and renamed, and only then are its clips appended
to ``index.jsonl``; a re-run skips every clip already in the index. A crash loses at most the shard
being filled; a shard file left without index lines by a crash is removed on the next run.

Many processes: under ``torchrun --nproc-per-node N -m medvid encode ...`` rank r encodes clips
r, r + N, ... of the single-process order into its own ``shard-rank-0000r-*`` files and
``index-rank-0000r.jsonl``; rank 0 then merges the indexes into ``index.jsonl`` in the single-process
order (``medvid.data.shards``). ``--shard I/N`` jobs do the same without a launcher, and ``--merge``
joins them. Tensors and index rows equal a single process's; only the shard file names differ.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from medvid.data.datasets import ClipDataset
from medvid.data.manifest import ManifestError, read_manifest, resolve_manifest, write_json
from medvid.data.shards import ShardWriter
from medvid.latents.vae import VideoVAE, load_vae
from medvid.utils.logging import get_logger
from medvid.utils.sharding import add_shard_arguments

log = get_logger("encode")

FORMAT = "medvid-latents/1"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}




def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    vae = {k: v for k, v in meta["vae"].items() if k != "source"}
    return {"protocol": meta["protocol"], "vae": vae, "dtype": meta["dtype"], "format": meta["format"]}


def encode(
    source: str | os.PathLike,
    vae: str | os.PathLike | torch.nn.Module,
    out: str | os.PathLike,
    *,
    splits: tuple[str, ...] = ("train", "val"),
    clips_per_video: int = 1,
    num_frames: int = 16,
    frame_stride: int = 3,
    resolution: int = 128,
    num_images: int = 8,
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

    Under torchrun (or with ``shard="I/N"``) this process encodes its share only; ``merge=True``
    joins the rank indexes of earlier ``--shard`` jobs (see the module doc)."""
    from medvid.utils.sharding import sharding

    with sharding(shard, merge=merge) as sh:
        return _encode(source, vae, out, splits=splits, clips_per_video=clips_per_video, num_frames=num_frames,
                       frame_stride=frame_stride, resolution=resolution, num_images=num_images, seed=seed,
                       short_policy=short_policy, hflip=hflip, shard_size=shard_size, batch_size=batch_size,
                       num_workers=num_workers, dtype=dtype, progress=progress, sh=sh, merge=merge)


def _encode(source, vae, out, *, splits, clips_per_video, num_frames, frame_stride, resolution, num_images, seed,
            short_policy, hflip, shard_size, batch_size, num_workers, dtype, progress, sh, merge) -> dict[str, Any]:
    from medvid.data.shards import merge_index
    from medvid.utils.sharding import sum_counts
    from torch.utils.data import DataLoader, Subset
    from tqdm import tqdm

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {sorted(DTYPES)}")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size={shard_size}, batch_size={batch_size}: both must be >= 1")
    manifest = resolve_manifest(source)
    entries = read_manifest(manifest)
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
            "epoch": 0,
            "clips_per_video": clips_per_video,
            "short_policy": short_policy,
            "hflip": hflip,
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
    done = writer.done
    torch_dtype = DTYPES[dtype]
    stats = {"encoded": 0, "already_done": 0, "duplicates": 0}

    bad_videos: dict[str, str] = {}
    order: list[str] = []  # every clip id in the single-process order
    for split in splits:
        if not any(e.get("split", "train") == split for e in entries):
            continue
        ds = ClipDataset(
            entries, split=split, num_frames=num_frames, frame_stride=frame_stride, resolution=resolution,
            extra_flow_frame=True, num_images=num_images, hflip=hflip, seed=seed,
            clips_per_video=clips_per_video, short_policy=short_policy,
        )
        ds.source = str(manifest)
        specs = [ds.clip_spec(i) for i in range(len(ds))]
        order += [spec["clip_id"] for spec in specs]
        todo = []
        for i in sh.take(range(len(specs))) if not merge else []:
            spec = specs[i]
            if spec["clip_id"] in done:
                stats["already_done"] += 1
            else:
                todo.append(i)
        if not todo:
            continue
        loader = DataLoader(Subset(ds, todo), batch_size=batch_size, num_workers=num_workers, shuffle=False)
        bar = tqdm(total=len(todo), desc=f"encode {split}", unit="clip", disable=not progress)
        pos = 0
        for batch in loader:
            idx = todo[pos : pos + len(batch["clip_id"])]
            pos += len(idx)
            with torch.no_grad():
                zv = vae.encode(batch["video"][:, :num_frames])  # (B, F_v, C, h, w)
                zi = vae.encode_images(batch["images"])  # (B, N, C, h, w)
            for b, cid in enumerate(batch["clip_id"]):
                if cid in done:
                    stats["duplicates"] += 1
                    continue
                spec = specs[idx[b]]
                row = {
                    "clip_id": cid,
                    "video_id": batch["video_id"][b],
                    "split": split,
                    "start": int(batch["start"][b]),
                    "stride": int(batch["stride"][b]),
                    "hflip": bool(batch["hflip"][b]),
                    "num_frames": num_frames,
                    "num_video_latents": int(zv.shape[1]),
                    "num_images": int(zi.shape[1]),
                    "caption": batch["caption"][b],
                }
                if spec["clip_id"] == cid:  # not replaced by another video after a read error
                    row["images"] = [[ds.entries[w]["id"], f, fl] for w, f, fl in spec["images"]]
                tensors = {f"{cid}/video": zv[b].to(torch_dtype)}
                if zi.shape[1]:
                    tensors[f"{cid}/images"] = zi[b].to(torch_dtype)
                writer.add(row, tensors)
                stats["encoded"] += 1
            bar.update(len(idx))
        bar.close()
        writer.flush()
        bad_videos.update(ds.bad_videos)
    part = {**stats, "shards_written": writer.shards_written, "bad_videos": bad_videos}
    summary = sum_counts(sh.gather(part))
    total = sh.finish(lambda: merge_index(out, order), writer.total())
    summary.update(total_clips=total, out=str(out))
    if total == 0:
        raise ManifestError(f"{manifest}: no clip could be encoded (splits {list(splits)}); see the warnings above")
    return summary


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="manifest.jsonl or a folder written by `medvid prepare`")
    parser.add_argument("--vae", required=True, help="local diffusers VAE folder (config.json + safetensors)")
    parser.add_argument("--out", required=True, help="output folder for shards, index.jsonl, meta.json")
    parser.add_argument("--splits", default="train,val", help="comma-separated splits to encode")
    parser.add_argument("--clips-per-video", type=int, default=1)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--frame-stride", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--short-policy", choices=("loop", "stride"), default="loop")
    parser.add_argument("--no-hflip", action="store_true")
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
            resolution=args.resolution, num_images=args.num_images, seed=args.seed,
            short_policy=args.short_policy, hflip=not args.no_hflip, shard_size=args.shard_size,
            batch_size=args.batch_size, num_workers=args.num_workers, dtype=args.dtype,
            progress=not args.no_progress, shard=args.shard, merge=args.merge,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"medvid encode: {e}")
        return 2
    print(
        f"encoded {summary['encoded']} clip(s) ({summary['already_done']} already cached); "
        f"{summary['total_clips']} clips in {summary['out']}"
    )
    if summary["bad_videos"]:
        print(f"{len(summary['bad_videos'])} video(s) could not be read: {sorted(summary['bad_videos'])}")
    return 0
