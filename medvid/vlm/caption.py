"""``medvid caption MANIFEST --model DIR``: brief and detailed captions for clips that lack them.

As MedVideoCap-55K was captioned: 8 frames sampled uniformly from the clip plus whatever text
context the clip carries (title, description, category), a brief and a detailed caption from a
multimodal model. Captions go into the manifest as ``brief_caption`` / ``detailed_caption``
(``caption`` is filled with the detailed one when empty) with ``caption_model`` naming the model.
The manifest is rewritten atomically after every batch, so an interrupted run resumes where it
stopped; clips already captioned by this model are skipped, and clips that already have both
captions (e.g. imported from MedVideoCap) are kept unless ``--overwrite``.

Many processes: under ``torchrun --nproc-per-node N -m medvid caption ...`` rank r captions clips
r, r + N, ... and appends its finished records to ``.manifest.jsonl.parts/rank-0000r.jsonl``
instead of rewriting the manifest; rank 0 writes them into the manifest at the end. ``--shard I/N``
jobs do the same without a launcher and ``--merge`` writes the manifest. Every run first applies
parts left by an interrupted one, so a lost rank's clips are captioned again by whoever runs next.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvid.curation.manifest import read_manifest
from medvid.data.manifest import write_jsonl
from medvid.curation.reader import sample_frames
from medvid.utils.logging import get_logger
from medvid.utils.sharding import add_shard_arguments
from medvid.vlm.model import add_model_arguments
from medvid.vlm.prompts import default_template, load_template

log = get_logger("caption")

SECTIONS = ("brief", "detailed")
PLACEHOLDERS = {"context", "num_frames"}
CONTEXT_KEYS = (("title", "Title"), ("description", "Description"), ("category", "Category"), ("transcript", "Transcript"))


@dataclass
class CaptionConfig:
    model: str = ""                      # local model folder
    batch_size: int = 4
    prompt_template: str | None = None   # default: medvid/prompts/caption.txt
    num_frames: int = 8
    image_size: int = 448
    max_new_tokens_brief: int = 64
    max_new_tokens_detailed: int = 320
    overwrite: bool = False
    trust_remote_code: bool = False
    device: str = "auto"  # auto: CUDA when present
    dtype: str = "auto"
    model_name: str | None = None        # recorded in the manifest (default: the folder name)

    def __post_init__(self):
        if self.batch_size < 1 or self.num_frames < 1:
            raise ValueError("batch_size and num_frames must be >= 1")


def clip_context(rec: dict[str, Any], max_chars: int = 1500) -> str:
    """The clip's own text (title / description / ...) as prompt context, or '' when there is none."""
    parts = [f"{label}: {str(rec[k]).strip()}" for k, label in CONTEXT_KEYS if str(rec.get(k) or "").strip()]
    if not parts:
        return ""
    return ("Context from the video's metadata (may be incomplete):\n" + "\n".join(parts))[:max_chars]


def needs_caption(rec: dict[str, Any], model_name: str, overwrite: bool) -> bool:
    has_both = bool(str(rec.get("brief_caption") or "").strip()) and bool(str(rec.get("detailed_caption") or "").strip())
    if rec.get("caption_model") == model_name and "brief_caption" in rec and "detailed_caption" in rec:
        return False  # done by this model (possibly in an interrupted earlier run)
    return overwrite or not has_both


def _apply_parts(records: list[dict[str, Any]], parts: list[dict[str, Any]], where: Path) -> int:
    """Records finished by ranks (``{"i", "id", "record"}`` rows) -> ``records``; returns how many."""
    n = 0
    for row in parts:
        i = row["i"]
        if not (0 <= i < len(records) and records[i].get("id") == row["id"]):
            raise ValueError(f"{where}: a captioned record ({row['id']!r}) does not match the manifest; "
                             "was the manifest changed during the run? delete the folder to start over")
        records[i] = row["record"]
        n += 1
    return n


def caption(manifest: str | Path, cfg: CaptionConfig, model=None, progress: bool = True,
            shard: str | None = None, merge: bool = False) -> dict:
    """Caption the clips of ``manifest`` in place; returns counts and per-clip errors.

    ``model`` (a ``VisionLanguageModel``) may be passed to reuse a loaded one; otherwise it is
    loaded from ``cfg.model`` only if some clip needs a caption. Under torchrun (or with
    ``shard="I/N"``) only this process's share is captioned; ``merge=True`` writes the shares of
    earlier ``--shard`` jobs into the manifest (see the module doc).
    """
    from medvid.utils.sharding import sharding

    with sharding(shard, cfg.device, merge) as sh:
        return _caption(Path(manifest), cfg, model, progress, sh, merge)


def _caption(manifest: Path, cfg: CaptionConfig, model, progress: bool, sh, merge: bool) -> dict:
    from tqdm import tqdm

    from medvid.utils.sharding import RowLog, clear_parts, parts_folder, read_parts, sum_counts

    records = read_manifest(manifest)
    parts = parts_folder(manifest)
    if _apply_parts(records, read_parts(parts), parts) and not sh.sharded:  # left by an interrupted multi-process run
        write_jsonl(manifest, records)
        clear_parts(parts)
    rows = RowLog(parts, sh.rank) if sh.sharded else None
    template = load_template(cfg.prompt_template or default_template("caption"), SECTIONS, PLACEHOLDERS)
    name = cfg.model_name or (model.name if model is not None else Path(cfg.model).name)
    if not name:
        raise ValueError("caption: pass --model DIR (a local vision-language model folder)")
    mine = sh.take(range(len(records))) if not merge else []
    todo = [i for i in mine if needs_caption(records[i], name, cfg.overwrite)]
    stats: dict[str, Any] = {"todo": len(todo), "captioned": 0, "skipped": len(mine) - len(todo), "errors": []}

    def merged() -> dict:
        if sh.sharded:
            final = read_manifest(manifest)
            _apply_parts(final, read_parts(parts), parts)
            write_jsonl(manifest, final)
            clear_parts(parts)
        return total

    root = manifest.parent
    device = str(sh.device(cfg.device))
    if model is None and todo:
        from medvid.vlm.model import VisionLanguageModel

        model = VisionLanguageModel(cfg.model, cfg.trust_remote_code, device, cfg.dtype, cfg.image_size, name=name)
    bar = tqdm(total=len(todo), desc="caption", unit="clip", disable=not progress)
    for b in range(0, len(todo), cfg.batch_size):
        batch, frames = [], []
        for i in todo[b : b + cfg.batch_size]:
            rec = records[i]
            path = Path(rec["path"]) if Path(rec["path"]).is_absolute() else root / rec["path"]
            try:
                frames.append(sample_frames(path, cfg.num_frames))
                batch.append(i)
            except Exception as e:  # noqa: BLE001 - one unreadable clip never stops the run
                rec["caption_error"] = f"{type(e).__name__}: {e}"
                stats["errors"].append({"id": rec.get("id", rec["path"]), "error": rec["caption_error"]})
                log.warning("%s: %s", path, rec["caption_error"])
                bar.update()
        if batch:
            outs = {}
            for section, limit in (("brief", cfg.max_new_tokens_brief), ("detailed", cfg.max_new_tokens_detailed)):
                prompts = [template[section].format(context=clip_context(records[i]), num_frames=cfg.num_frames)
                           for i in batch]
                outs[section] = model.generate(list(zip(frames, prompts)), max_new_tokens=limit)
            for k, i in enumerate(batch):
                rec = records[i]
                previous_model_caption = rec.get("caption_model") is not None and rec.get("caption") == rec.get("detailed_caption")
                rec["brief_caption"], rec["detailed_caption"] = outs["brief"][k], outs["detailed"][k]
                if not str(rec.get("caption") or "").strip() or previous_model_caption:
                    rec["caption"] = rec["detailed_caption"]
                rec["caption_model"] = name
                rec.pop("caption_error", None)
                stats["captioned"] += 1
                bar.update()
        if rows is not None:  # a rank appends its finished records; rank 0 merges them at the end
            rows.append([{"i": i, "id": records[i].get("id"), "record": records[i]} for i in todo[b : b + cfg.batch_size]])
        else:
            write_jsonl(manifest, records)  # after every batch: an interrupted run resumes here
    bar.close()
    total = {"model": name, "clips": len(records), **sum_counts(sh.gather(stats))}
    return sh.finish(merged, total)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="manifest.jsonl to caption in place")
    add_model_arguments(parser, max_new_tokens=320, max_new_tokens_help="for the detailed caption")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--prompt-template", help="caption template file (default medvid/prompts/caption.txt)")
    parser.add_argument("--overwrite", action="store_true", help="re-caption clips that already have captions")
    add_shard_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from medvid.utils.logging import setup_logging

    setup_logging()
    cfg = CaptionConfig(model=args.model, batch_size=args.batch_size, prompt_template=args.prompt_template,
                        num_frames=args.num_frames, max_new_tokens_detailed=args.max_new_tokens,
                        overwrite=args.overwrite, trust_remote_code=args.trust_remote_code,
                        device=args.device, dtype=args.dtype)
    stats = caption(args.manifest, cfg, shard=args.shard, merge=args.merge)
    print(f"captioned {stats['captioned']} of {stats['clips']} clips with {stats['model']} "
          f"({stats['skipped']} already captioned, {len(stats['errors'])} errors)")
    for e in stats["errors"]:
        print(f"error: {e['id']}: {e['error']}", file=sys.stderr)
    return 0
