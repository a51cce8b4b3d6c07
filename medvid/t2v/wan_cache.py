"""``medvid wan-cache``: encode every clip's Wan VAE latents and every caption's UMT5 embeddings once.

    medvid wan-cache --config configs/wan/lora_1.3b.yaml --out cache/wan13b [--data.path ...]
    medvid train-wan --config configs/wan/lora_1.3b.yaml --out runs/wan-lora --data.cache cache/wan13b

Training from the cache loads neither the VAE nor the text encoder (UMT5-XXL alone is ~10.6 GiB
in bf16): the step is the DiT's forward and backward only. The cache is written with the same
config file as training (data, buckets, model, max_sequence_length, validation prompts), so the two
cannot disagree; ``train-wan`` refuses a cache made with other settings.

Layout (the same resumable shard format as ``medvid encode``, ``medvid.data.shards``)::

    OUT/meta.json                 model, kind (t2v / i2v), buckets, text length, dtype, data source
    OUT/index.jsonl               one line per clip: clip_id, path, caption, bucket [h, w, f], text_len, shard
    OUT/shard-00000.safetensors   "<id>/latents" (C, f, h, w) normalised Wan latents,
                                  "<id>/text" (L, D) the caption's UMT5 states (its L real tokens;
                                  the zero padding to max_sequence_length is added back on load,
                                  exactly as WanPipeline pads), and for image-to-video models
                                  "<id>/condition" (4 + C, f, h, w) and "<id>/image" (N, D)
    OUT/prompts.safetensors       validation prompts and the negative prompt, encoded once

Each clip is cut at its bucket with the clip start drawn for epoch 0 (training from the cache sees
that one crop every epoch, as musubi-tuner and finetrainers caches do). Resumable: a re-run skips
every clip already in the index. Clips that fit no bucket and captions over the encoder's length
are skipped with a warning naming the file and the fix; they are listed in the summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medvid.utils.logging import get_logger

log = get_logger("t2v.cache")

FORMAT = "medvid-wan-cache/1"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def clip_id(path: str) -> str:
    from medvid.data.manifest import make_video_id

    return f"{make_video_id(Path(path).name)}-{hashlib.sha1(path.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("format", "model_path", "kind", "buckets", "max_crop", "frame_stride", "seed", "max_sequence_length", "dtype")
    return {k: meta.get(k) for k in keys}


def cache_meta(cfg, kind: str, dtype: str) -> dict[str, Any]:
    return {"format": FORMAT, "model_path": str(Path(cfg.model_path).resolve()), "kind": kind,
            "buckets": [list(b) for b in cfg.data.buckets], "max_crop": cfg.data.max_crop,
            "frame_stride": cfg.data.frame_stride, "seed": cfg.seed, "max_sequence_length": cfg.max_sequence_length,
            "dtype": dtype, "data": {"path": cfg.data.path, "caption_field": cfg.data.caption_field, "split": cfg.data.split}}


def check_cache(folder: str | Path, cfg) -> dict[str, Any]:
    """The cache's meta.json, after checking it was made with ``cfg``'s model, buckets and text length."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise ValueError(f"data.cache {folder}: no meta.json; build it first with "
                         f"`medvid wan-cache --config <this config> --out {folder}`")
    meta = json.loads(meta_path.read_text())
    want = _comparable(cache_meta(cfg, meta.get("kind"), meta.get("dtype")))
    have = _comparable(meta)
    diff = [k for k in want if want[k] != have[k]]
    if diff:
        raise ValueError(f"data.cache {folder} was made with other settings ({', '.join(diff)}: "
                         f"{[have[k] for k in diff]} vs {[want[k] for k in diff]}); rebuild it with "
                         "`medvid wan-cache` from this config, or use the config it was made with")
    return meta


@torch.no_grad()
def encode_text(pipe, texts: list[str], max_len: int) -> list[torch.Tensor]:
    """Each text -> (L_i, D) UMT5 states of its real tokens (WanPipeline's embeddings without padding)."""
    from medvid.t2v.wan import encode_prompts

    lens = pipe.tokenizer(texts, padding="max_length", max_length=max_len, truncation=True, add_special_tokens=True,
                          return_attention_mask=True, return_tensors="pt").attention_mask.sum(1).tolist()
    embeds = encode_prompts(pipe, texts, max_len)  # (B, max_len, D), zeros after each text's end
    return [embeds[i, : int(n)].cpu() for i, n in enumerate(lens)]


def build_cache(cfg, out: str | Path, *, shard_size: int = 16, dtype: str = "bfloat16", num_workers: int = 0,
                device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Encode the clips and captions of ``cfg`` (a WanTrainConfig) into ``out``; returns a summary."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from medvid.data.manifest import write_json
    from medvid.data.shards import ShardWriter
    from medvid.t2v import wan as W
    from medvid.t2v.buckets import parse_buckets
    from medvid.t2v.wan_validate import validation_specs
    from medvid.t2v.wan_data import (CaptionedClipDataset, assign_buckets, caption_tokens, check_caption_lengths,
                                     read_captioned_videos)

    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    t0 = time.perf_counter()
    out = Path(out)
    items = read_captioned_videos(cfg.data.path, cfg.data.caption_field, cfg.data.split)
    items, buckets, skipped = assign_buckets(items, parse_buckets(cfg.data.buckets), cfg.data.frame_stride, cfg.data.max_crop)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    enc_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    pipe = W.load_wan_pipeline(cfg.model_path, dtype=enc_dtype, device=dev, transformer=False)
    kind = "i2v" if getattr(pipe, "image_encoder", None) is not None else "t2v"
    meta = cache_meta(cfg, kind, dtype)
    if (out / "meta.json").is_file() and _comparable(json.loads((out / "meta.json").read_text())) != _comparable(meta):
        raise ValueError(f"{out}: holds a cache made with other settings ({out / 'meta.json'}); use a new --out "
                         "folder or delete this one")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "meta.json", meta)

    keep, too_long = check_caption_lengths(items, pipe.tokenizer, cfg.max_sequence_length)
    skipped.update(too_long)
    items, buckets = [items[i] for i in keep], [buckets[i] for i in keep]

    # Validation prompts and the negative prompt: small, rewritten on every run.
    val = [(sp.name, sp.prompt) for sp in validation_specs(cfg)]
    negative = cfg.validation.negative_prompt if cfg.validation.negative_prompt is not None else W.WAN_NEGATIVE_PROMPT
    texts = [p for _, p in val] + [negative]
    for (name, p), n in zip(val, [caption_tokens(pipe.tokenizer, t) for t in texts[:-1]]):
        if n > cfg.max_sequence_length:
            raise ValueError(f"validation prompt {name!r} is {n} tokens, over max_sequence_length "
                             f"{cfg.max_sequence_length}; shorten it")
    enc = encode_text(pipe, texts, cfg.max_sequence_length)
    tensors = {f"prompt/{name}": e.to(DTYPES[dtype]).contiguous() for (name, _), e in zip(val, enc)}
    tensors["negative"] = enc[-1].to(DTYPES[dtype]).contiguous()
    tmp = out / ".prompts.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "negative_prompt": negative,
                                           "prompts": json.dumps(dict(val))})
    tmp.replace(out / "prompts.safetensors")

    writer = ShardWriter(out, FORMAT, shard_size)
    ids = [clip_id(it.path) for it in items]
    todo = [i for i, cid in enumerate(ids) if cid not in writer.done]
    ds = CaptionedClipDataset(items, buckets, cfg.data.frame_stride, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, sampler=[(i, 0) for i in todo], num_workers=num_workers)
    bar = tqdm(total=len(todo), desc="wan-cache", unit="clip", disable=not progress)
    encoded = 0
    for i, item in zip(todo, loader):
        video = item["video"][None]  # (1, T, 3, H, W)
        row = {"clip_id": ids[i], "path": items[i].path, "caption": items[i].caption,
               "bucket": [buckets[i].height, buckets[i].width, buckets[i].frames]}
        text = encode_text(pipe, [items[i].caption], cfg.max_sequence_length)[0]
        row["text_len"] = int(text.shape[0])
        t = {f"{ids[i]}/latents": W.encode_video(pipe.vae, video.to(dev))[0].to(DTYPES[dtype]),
             f"{ids[i]}/text": text.to(DTYPES[dtype])}
        if kind == "i2v":
            first = video[:, 0].to(dev)  # (1, 3, H, W)
            t[f"{ids[i]}/condition"] = W.i2v_condition(pipe.vae, first, buckets[i].frames)[0].to(DTYPES[dtype])
            t[f"{ids[i]}/image"] = W.encode_first_frames(pipe, first)[0].to(DTYPES[dtype])
        writer.add(row, t)
        encoded += 1
        bar.update(1)
    writer.flush()
    bar.close()
    summary = {"encoded": encoded, "already_done": len(ids) - len(todo), "total_clips": writer.total(),
               "skipped": skipped, "validation_prompts": len(val), "kind": kind, "out": str(out),
               "seconds": round(time.perf_counter() - t0, 2)}
    write_json(out / "summary.json", summary)
    return summary


class WanCacheDataset(torch.utils.data.Dataset):
    """Items of a ``medvid wan-cache`` folder, keyed ``(index, epoch)`` like CaptionedClipDataset:
    ``{"latents" (C, f, h, w) float32, "text" (max_sequence_length, D) zero-padded, "caption",
    "path"}`` and, for image-to-video caches, ``"condition"`` and ``"image"``."""

    def __init__(self, folder: str | Path, max_sequence_length: int):
        from medvid.data.datasets import ShardReader, read_index

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.rows = read_index(self.folder)
        if not self.rows:
            raise ValueError(f"data.cache {folder}: the index is empty; run `medvid wan-cache` to completion")
        self.shards = ShardReader(self.folder)
        self.max_len = max_sequence_length
        self.kind = self.meta.get("kind", "t2v")

    def __len__(self) -> int:
        return len(self.rows)

    def bucket_names(self) -> list[str]:
        return ["x".join(map(str, r["bucket"])) for r in self.rows]

    def pad_text(self, text: torch.Tensor) -> torch.Tensor:
        out = text.new_zeros(self.max_len, text.shape[-1])
        out[: text.shape[0]] = text
        return out.float()

    def __getitem__(self, key: tuple[int, int]) -> dict:
        row = self.rows[key[0]]
        get = lambda what: self.shards.get(row["shard"], f"{row['clip_id']}/{what}")  # noqa: E731
        item = {"latents": get("latents").float(), "text": self.pad_text(get("text")), "caption": row["caption"],
                "path": row["path"]}
        if self.kind == "i2v":
            item["condition"], item["image"] = get("condition").float(), get("image").float()
        return item

    def prompts(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Cached validation prompt embeddings by name (zero-padded) and the negative prompt's."""
        from safetensors.torch import load_file

        f = self.folder / "prompts.safetensors"
        if not f.is_file():
            raise ValueError(f"data.cache {self.folder}: no prompts.safetensors; re-run `medvid wan-cache`")
        t = load_file(str(f))
        return ({k[len("prompt/"):]: self.pad_text(v) for k, v in t.items() if k.startswith("prompt/")},
                self.pad_text(t["negative"]))


def configure(parser: argparse.ArgumentParser) -> None:
    from medvid.t2v.wan_train import WanTrainConfig, _config_flags

    parser.add_argument("--config", required=True, help="the train-wan YAML file (data, buckets, model, validation)")
    parser.add_argument("--out", required=True, help="cache folder (index.jsonl, shard-*.safetensors, meta.json)")
    parser.add_argument("--shard-size", type=int, default=16, help="clips per shard file")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="stored precision")
    parser.add_argument("--num-workers", type=int, default=0, help="video decoding processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    parser.epilog = "Every config key is also a flag: --data.path metadata.csv --model_path DIR"
    _config_flags(parser, WanTrainConfig)


def main(args: argparse.Namespace) -> int:
    from medvid.config import load_config, parse_value
    from medvid.t2v.wan_train import WanTrainConfig
    from medvid.utils.weights import MissingWeightsError

    overrides = {k[4:]: parse_value(v) for k, v in vars(args).items() if k.startswith("cfg:")}
    try:
        cfg = load_config(WanTrainConfig, args.config, overrides or None)
        s = build_cache(cfg, args.out, shard_size=args.shard_size, dtype=args.dtype, num_workers=args.num_workers,
                        device=args.device, progress=not args.no_progress)
    except (ValueError, MissingWeightsError) as e:
        print(f"medvid wan-cache: {e}", file=sys.stderr)
        return 2
    print(f"encoded {s['encoded']} clip(s) ({s['already_done']} already cached, {len(s['skipped'])} skipped); "
          f"{s['total_clips']} clips in {s['out']}")
    return 0
