"""``medvid curate SRC OUT``: long recordings -> scene-cut clips -> filters -> kept clips + report.

Per source file (in parallel worker processes): scene cuts, long scenes split into pieces of at
most ``max_clip_seconds``, then each clip goes through the filters in order (borders, size, blur,
static, jumps, burnt-in text, learned scores); the first filter that fails removes the clip with
its reason and score. Filters see the clip shrunk to ``analysis_max_side`` (decoded in chunks, so
a long 1080p clip is never held at full size); kept clips are streamed to mp4 at full size,
cropped to the content box when ``border_action="crop"``. Near-duplicates are then removed across all
files in the main process (perceptual hashes), in a fixed order so the result does not depend on
which worker finished first.

Output folder::

    OUT/clips/*.mp4          kept clips
    OUT/manifest.jsonl       one line per kept clip (MedVideoCap-style keys)
    OUT/removed.jsonl        one line per removed clip: filter, reason, score
    OUT/report.json          counts per reason, per-filter time (clips/s), errors
    OUT/curate_config.yaml   the resolved config
    OUT/.state/*.json        per-source results: a rerun skips finished sources (resume)

One unreadable file is recorded under ``errors`` and never stops the run.

Many processes: ``torchrun --nproc-per-node N -m medvid curate SRC OUT`` gives each rank every N-th
source file and rank 0 writes the manifest; on a cluster without a launcher, ``--shard I/N`` jobs
each do part I, and ``medvid curate SRC OUT --merge`` joins them. The result is the same as one
process's (``report.json``'s timings aside).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from medvid.config import from_dict, load_config, save_yaml, to_dict
from medvid.curation.dedup import Deduplicator, clip_hashes
from medvid.curation.filters import (BlurFilter, BorderFilter, JumpFilter, LearnedScoreFilter, SizeFilter,
                                     StaticFilter, TextFilter, find_content_box, load_scorer, resize_max_side)
from medvid.data.manifest import write_json, write_jsonl
from medvid.curation.reader import find_videos, open_source
from medvid.utils.sharding import add_shard_arguments
from medvid.curation.scenes import detect_scenes, iter_frames, make_cut_detector, split_long
from medvid.utils.logging import get_logger
from medvid.utils.video import write_mp4

log = get_logger("curate")

FILTER_ORDER = ("border", "size", "blur", "static", "jump", "text")


@dataclass
class LearnedScoreConfig:
    """A learned quality score: ``factory`` ("package.module:function") is called with ``weights``
    and returns ``scorer(frames uint8 (T,H,W,3)) -> float`` (frames at ``analysis_max_side``).
    Stored as ``<name>_score``: name them ``aesthetic`` / ``technical`` for MedVideoCap's
    ``aesthetic_score`` / ``technical_score`` (LAION aesthetic predictor, DOVER)."""

    name: str = "aesthetic"
    factory: str = ""
    weights: str = ""
    min_score: float | None = None


@dataclass
class CurateConfig:
    """Thresholds for ``medvid curate``; every field is also a ``--set key=value`` override."""

    # scene cuts
    scene_detector: str = "auto"          # auto (PySceneDetect if installed) | pyscenedetect | histogram
    scene_threshold: float | None = None  # ContentDetector 27.0 / histogram Bhattacharyya 0.4
    min_scene_seconds: float = 0.5
    max_clip_seconds: float = 10.0        # longer scenes are split (MedVideoCap clips are ~8 s)
    # size
    min_side: int = 224
    min_seconds: float = 1.0
    min_frames: int = 16
    # black borders
    border_action: str = "crop"           # crop | drop | off
    border_max_fraction: float = 0.05
    border_black_level: float = 20.0
    # burnt-in text
    text_engine: str = "auto"             # auto | tesseract | opencv
    text_max_words: int = 20              # MedGen: > 20 OCR words on 5 frames dropped
    text_max_area: float = 0.1
    # blur / motion
    blur_min_variance: float = 30.0
    static_min_flow: float = 0.05
    jump_max: float = 0.12
    # duplicates
    dedup_max_distance: float = 6.0
    learned_scores: list[LearnedScoreConfig] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)  # filter names to skip
    val_fraction: float = 0.1             # split by source file, so clips of one recording stay together
    workers: int = 1
    crf: int = 18
    analysis_max_side: int = 640          # filters and learned scores see frames shrunk to this size

    def __post_init__(self):
        if self.border_action not in ("crop", "drop", "off"):
            raise ValueError(f"border_action {self.border_action!r}: use crop, drop or off")
        known = set(FILTER_ORDER) | {"duplicate"} | {s.name for s in self.learned_scores}
        bad = sorted(set(self.disable) - known)
        if bad:
            raise ValueError(f"disable: unknown filter(s) {bad}; known: {sorted(known)}")
        if self.max_clip_seconds <= 0 or self.workers < 1:
            raise ValueError("max_clip_seconds must be > 0 and workers >= 1")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction {self.val_fraction}: use a value in [0, 1)")


def build_filters(cfg: CurateConfig) -> list:
    filters: list = []
    if cfg.border_action == "drop" and "border" not in cfg.disable:
        filters.append(BorderFilter(cfg.border_max_fraction, cfg.border_black_level))
    candidates = {
        "size": SizeFilter(cfg.min_side, cfg.min_seconds, cfg.min_frames),
        "blur": BlurFilter(cfg.blur_min_variance),
        "static": StaticFilter(cfg.static_min_flow),
        "jump": JumpFilter(cfg.jump_max),
        "text": TextFilter(cfg.text_max_words, cfg.text_max_area, engine=cfg.text_engine),
    }
    filters += [f for n, f in candidates.items() if n not in cfg.disable]
    for s in cfg.learned_scores:
        if s.name not in cfg.disable:
            filters.append(LearnedScoreFilter(s.name, load_scorer(s.factory, s.weights), s.min_score))
    return filters


def _slug(rel: str) -> str:
    stem = rel.rsplit(".", 1)[0] if not rel.endswith(".nii.gz") else rel[: -len(".nii.gz")]
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)


def _sidecar(path: Path) -> dict[str, Any]:
    """title / description / category from ``<video>.json`` next to the source, if present."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        log.warning("%s: sidecar is not valid JSON; ignored", side)
        return {}
    return {k: meta[k] for k in ("title", "description", "category", "transcript") if isinstance(meta, dict) and k in meta}


def _analysis_frames(reader, s: int, e: int, max_side: int, chunk: int = 64) -> np.ndarray:
    """Frames ``s..e`` shrunk to ``max_side``, decoded in chunks: a 10 s 1080p clip never sits in
    memory at full size (the filters measure at 96-320 px anyway)."""
    out = []
    for a in range(s, e, chunk):
        out += [resize_max_side(f, max_side) for f in reader.read(np.arange(a, min(a + chunk, e)))]
    return np.stack(out)


def write_clip(reader, s: int, e: int, box: tuple[int, int, int, int], path: Path, fps: float, crf: int,
               chunk: int = 64) -> Path:
    """Stream frames ``s..e`` of ``reader``, cropped to ``box`` (even size), into an H.264 mp4
    (temporary file, then rename), decoding ``chunk`` frames at a time."""
    y0, y1, x0, x1 = box

    def frames():
        for a in range(s, e, chunk):
            for f in reader.read(np.arange(a, min(a + chunk, e))):
                yield f[y0:y1, x0:x1]

    return write_mp4(frames(), path, fps=fps, crf=crf)


def process_source(path: str, rel: str, out: str, cfg_dict: dict) -> dict:
    """Cut, filter and write one source file. Runs in a worker process; never raises."""
    import cv2

    cv2.setNumThreads(1)
    cfg = from_dict(CurateConfig, cfg_dict)
    result: dict[str, Any] = {"source": rel, "clips": [], "error": None, "timings": {}}
    timings: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])

    def timed(name: str, fn, *a):
        t1 = time.perf_counter()
        r = fn(*a)
        timings[name][0] += time.perf_counter() - t1
        timings[name][1] += 1
        return r

    try:
        filters = build_filters(cfg)
        reader = open_source(path)
        fps = float(reader.fps) or 30.0
        H, W = int(reader.height), int(reader.width)
        t0 = time.perf_counter()
        detector = make_cut_detector(cfg.scene_detector, cfg.scene_threshold,
                                     max(1, round(cfg.min_scene_seconds * fps)), fps)
        scenes = detect_scenes(iter_frames(reader), reader.num_frames, detector)
        clips = split_long(scenes, max(1, round(cfg.max_clip_seconds * fps)))
        timings["scenes"] = [time.perf_counter() - t0, len(clips)]
        slug, meta = _slug(rel), _sidecar(Path(path))
        for k, (s, e) in enumerate(clips):
            clip_id = f"{slug}-{k:03d}"
            rec: dict[str, Any] = {"id": clip_id, "source": rel, "start_frame": s, "end_frame": e,
                                   "start_time": round(s / fps, 3), "end_time": round(e / fps, 3)}
            small = _analysis_frames(reader, s, e, cfg.analysis_max_side)
            sy, sx = H / small.shape[1], W / small.shape[2]
            # H.264 4:2:0 wants even sizes: trim a pixel rather than pad with black
            box = (0, H // 2 * 2, 0, W // 2 * 2)
            if cfg.border_action == "crop" and "border" not in cfg.disable:
                y0, y1, x0, x1 = timed("border", find_content_box, small, cfg.border_black_level)
                if (y0, y1, x0, x1) != (0, small.shape[1], 0, small.shape[2]):
                    Y0, X0 = round(y0 * sy), round(x0 * sx)
                    Y1, X1 = Y0 + (round(y1 * sy) - Y0) // 2 * 2, X0 + (round(x1 * sx) - X0) // 2 * 2
                    box = (Y0, Y1, X0, X1)
                    rec["crop"] = [Y0, Y1, X0, X1]
                    small = small[:, y0:y1, x0:x1]
            h, w = box[1] - box[0], box[3] - box[2]
            scores: dict[str, float] = {}
            failed = None
            for f in filters:
                if isinstance(f, SizeFilter):
                    r = timed(f.name, f.check, e - s, h, w, fps)
                else:
                    r = timed(f.name, f, small, fps)
                scores[f"{f.name}_score"] = round(float(r.score), 4)
                if not r.keep:
                    failed = (f.name, r)
                    break
            rec["scores"] = scores
            if failed:
                rec.update(status="removed", filter=failed[0], reason=failed[1].reason, score=float(failed[1].score))
            else:
                rec["hashes"] = timed("duplicate", clip_hashes, small)
                clip_path = Path(out) / "clips" / f"{clip_id}.mp4"
                timed("write", write_clip, reader, s, e, box, clip_path, fps, cfg.crf)
                rec.update(status="kept", path=f"clips/{clip_id}.mp4", file_name=clip_path.name, num_frames=e - s,
                           fps=fps, height=h, width=w, resolution=f"{w}x{h}", duration=round((e - s) / fps, 3),
                           **meta)
            result["clips"].append(rec)
        reader.close()
    except Exception as e:  # noqa: BLE001 - one bad file never stops the run
        result["error"] = f"{type(e).__name__}: {e}"
    result["timings"] = {k: list(v) for k, v in timings.items()}
    return result


def _split_for(rel: str, val_fraction: float) -> str:
    h = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def _fingerprint(cfg: CurateConfig) -> str:
    d = to_dict(cfg)
    d.pop("workers", None)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def curate(src: str | Path, out: str | Path, cfg: CurateConfig | None = None, progress: bool = True,
           shard: str | None = None, merge: bool = False) -> dict:
    """Curate every video under ``src`` into ``out``; returns the report (also ``out/report.json``).

    Under torchrun each rank cuts and filters every N-th source file and rank 0 writes the manifest;
    ``shard="I/N"`` does part I of N as an independent job, and ``merge=True`` (after all jobs) writes
    the manifest from their saved per-source results (``medvid.utils.sharding``).
    """
    from tqdm import tqdm

    from medvid.utils.sharding import sharding

    cfg = cfg or CurateConfig()
    build_filters(cfg)  # fail fast on bad thresholds / missing learned-score weights
    src, out = Path(src), Path(out)
    # an output folder inside the source folder must not feed its own clips back in on a rerun
    sources = [p for p in find_videos(src) if not p.resolve().is_relative_to(out.resolve())]
    if not sources:
        raise ValueError(f"{src}: no videos found (looked for mp4/avi/mov/mkv/webm/gif/dcm/nii...)")
    out.mkdir(parents=True, exist_ok=True)
    state_dir = out / ".state"
    state_dir.mkdir(exist_ok=True)
    save_yaml(cfg, out / "curate_config.yaml")
    fp = _fingerprint(cfg)
    base = src if src.is_dir() else src.parent
    rels = {p: p.relative_to(base).as_posix() for p in sources}

    def state_file(rel: str) -> Path:
        return state_dir / f"{hashlib.sha1(rel.encode()).hexdigest()[:16]}.json"

    def saved(rel: str) -> dict | None:
        """The saved result of ``rel`` made with this config (errors included), or None."""
        sf = state_file(rel)
        if sf.is_file():
            try:
                st = json.loads(sf.read_text(encoding="utf-8"))
                if st.get("fingerprint") == fp:
                    return st
            except json.JSONDecodeError:
                pass
        return None

    with sharding(shard, merge=merge) as sh:
        todo, resumed = [], 0
        if not merge:
            for p in sh.take(sources):
                st = saved(rels[p])
                if st is not None and not st.get("error"):  # an error is retried
                    resumed += 1
                else:
                    todo.append(p)
        cfg_dict = to_dict(cfg)

        def done(res: dict) -> None:
            res["fingerprint"] = fp
            if res["error"]:
                log.warning("%s: %s", res["source"], res["error"])
            write_json(state_file(res["source"]), res)  # errors too: the merge reports them

        bar = tqdm(total=len(todo), desc="curate", unit="file", disable=not progress)
        if cfg.workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")) as pool:
                futs = [pool.submit(process_source, str(p), rels[p], str(out), cfg_dict) for p in todo]
                for fut in as_completed(futs):
                    done(fut.result())
                    bar.update()
        else:
            for p in todo:
                done(process_source(str(p), rels[p], str(out), cfg_dict))
                bar.update()
        bar.close()
        resumed = sum(sh.gather(resumed))

        def merged() -> dict:
            results: dict[str, dict] = {}
            for p in sources:
                st = saved(rels[p])
                if st is not None:
                    results[rels[p]] = st
            missing = sorted(set(rels.values()) - set(results))
            if missing:
                raise ValueError(f"{out}: {len(missing)} source(s) have no saved result, e.g. {missing[0]}; "
                                 "run the missing --shard jobs (or the command without --merge) first")
            return _finish(results, out, cfg, len(sources), resumed)

        report = sh.finish(merged, {"sources": len(sources), "shard": shard, "processed": len(todo),
                                    "resumed_sources": resumed})
    return report


def _finish(results: dict[str, dict], out: Path, cfg: CurateConfig, num_sources: int, resumed: int) -> dict:
    """Near-duplicates across all sources, manifest, removed list and report, from per-source results."""
    # near-duplicates across all sources, in source then clip order (deterministic)
    dedup = Deduplicator(cfg.dedup_max_distance)
    kept, removed, errors = [], [], []
    timings: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for rel in sorted(results):
        res = results[rel]
        if res.get("error"):
            errors.append({"source": rel, "error": res["error"]})
            continue
        for k, v in res.get("timings", {}).items():
            timings[k][0] += v[0]
            timings[k][1] += v[1]
        for rec in res["clips"]:
            rec = dict(rec)
            if rec["status"] == "kept" and "duplicate" not in cfg.disable:
                r = dedup(rec["id"], rec["hashes"])
                rec["scores"]["duplicate_score"] = round(r.score, 3)
                if not r.keep:
                    rec.update(status="removed", filter="duplicate", reason=r.reason, score=r.score)
                    (out / rec.pop("path")).unlink(missing_ok=True)
            rec.pop("hashes", None)
            if rec.pop("status") == "kept":
                rec["split"] = _split_for(rel, cfg.val_fraction)
                kept.append(_flatten_scores(rec))
            else:
                removed.append(rec)
    write_jsonl(out / "manifest.jsonl", kept)
    write_jsonl(out / "removed.jsonl", removed)
    per_filter = {k: {"clips": int(n), "seconds": round(s, 4), "clips_per_second": round(n / s, 2) if s > 0 else None}
                  for k, (s, n) in sorted(timings.items())}
    report = {
        "sources": num_sources, "resumed_sources": resumed, "errors": errors,
        "clips_total": len(kept) + len(removed), "kept": len(kept), "removed": len(removed),
        "removed_by_filter": dict(Counter(r["filter"] for r in removed)),
        "timing": per_filter,
        "text_engine": TextFilter(engine=cfg.text_engine).engine_used if "text" not in cfg.disable else None,
        "scene_detector": type(make_cut_detector(cfg.scene_detector)).__name__,
    }
    write_json(out / "report.json", report)
    return report


def _flatten_scores(rec: dict) -> dict:
    """Manifest lines carry scores as top-level ``*_score`` keys (MedVideoCap style)."""
    scores = rec.pop("scores", {})
    rec.update(scores)
    return rec


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="a video file or a folder of videos (searched recursively)")
    parser.add_argument("out", help="output folder (clips/, manifest.jsonl, removed.jsonl, report.json)")
    parser.add_argument("--config", help="YAML file with CurateConfig fields")
    parser.add_argument("--workers", type=int, help="parallel worker processes (default 1)")
    parser.add_argument("--border-action", choices=["crop", "drop", "off"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set text_max_words=10 (repeatable)")
    add_shard_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from medvid.config import parse_value
    from medvid.utils.logging import setup_logging

    setup_logging()
    overrides: dict[str, Any] = {}
    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: write it as KEY=VALUE, e.g. --set blur_min_variance=50")
        k, v = item.split("=", 1)
        overrides[k.strip()] = parse_value(v)
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.border_action:
        overrides["border_action"] = args.border_action
    cfg = load_config(CurateConfig, args.config, overrides)
    report = curate(args.src, args.out, cfg, shard=args.shard, merge=args.merge)
    if "kept" not in report:  # one --shard job: the manifest comes with --merge
        print(f"shard {args.shard}: {report['processed']} source(s) processed, {report['resumed_sources']} already done; "
              f"when every shard is done: medvid curate {args.src} {args.out} --merge")
        return 0
    print(json.dumps({k: report[k] for k in ("sources", "kept", "removed", "removed_by_filter")}, indent=2))
    print(f"{'filter':<12}{'clips':>8}{'clips/s':>10}")
    for name, t in report["timing"].items():
        print(f"{name:<12}{t['clips']:>8}{t['clips_per_second'] or 0:>10.1f}")
    for e in report["errors"]:
        print(f"error: {e['source']}: {e['error']}", file=sys.stderr)
    return 0
