"""``medvid prepare SRC OUT``: scan videos, write ``OUT/manifest.jsonl`` and ``OUT/report.json``.

SRC is a folder (scanned recursively; a folder of numbered png/jpg frames counts as one video) or a
CSV / JSON / JSONL metadata file in the MedVideoCap-55K style (a path column such as ``path``,
``video``, ``video_path`` or ``file_name``, plus caption fields that are copied into the manifest).
A folder may carry ``metadata.csv`` / ``metadata.jsonl`` (columns ``video``/``file_name`` and
``prompt``/``caption``) whose captions are attached to the videos found.

Every input is probed (opened, and its first, middle and last frame decoded); anything wrong is
recorded in the report with the reason and skipped, so one bad file never stops a long job.
Results are appended to ``OUT/.prepare/state.jsonl`` as they come, keyed by path, size and
modification time: a re-run after new files arrive probes only the new ones, and an interrupted run
continues where it stopped. The manifest and report are rewritten atomically (also periodically
during a long run), so nothing already prepared is lost.

``holdout_tail`` (``--holdout-tail FRACTION``) splits every video in time instead of by video: its
first frames become a ``train`` segment and its last ``FRACTION`` of frames a ``val`` segment, so
one video is enough to train and to evaluate on frames the model never saw. Each segment is one
manifest line pointing at the same file, with ``start_frame`` / ``end_frame`` (end exclusive) and
``num_frames`` = its length; ``ClipDataset`` reads clips only inside a segment.

Exit status: 0 when at least one video is usable, 1 when none is (the message says why), 2 for a
bad argument (SRC missing, unreadable metadata file).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvid.data.manifest import (
    SPLITS,
    is_within,
    make_video_id,
    resolve_path,
    split_for,
    write_json,
    write_jsonl,
)
from medvid.data.readers import (
    DICOM_EXTENSIONS,
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoReadError,
    has_suffix,
    natural_key,
    open_video,
)
from medvid.utils.logging import get_logger

log = get_logger("prepare")

PATH_KEYS = ("path", "video", "video_path", "file_name", "filename", "file", "video_file", "clip_path")
CAPTION_ALIASES = ("caption", "prompt", "text")
# Fields prepare measures itself; metadata columns of the same name are ignored.
MEASURED = ("path", "id", "num_frames", "fps", "height", "width", "duration", "reader")
METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.json")
STATE_VERSION = 1


@dataclass
class Candidate:
    path: str  # absolute
    rel: str  # as shown in the report and used for the id
    fields: dict[str, Any] = field(default_factory=dict)  # captions etc. from metadata
    error: str | None = None  # known bad before probing (escaping path, missing file)


def _hash_path(path: str) -> str:
    """sha256 of a file's bytes, or of a frame folder's (name, bytes) sequence."""
    h = hashlib.sha256()
    files = [path]
    if os.path.isdir(path):
        files = [os.path.join(path, n) for n in sorted(os.listdir(path), key=natural_key) if has_suffix(n, IMAGE_EXTENSIONS)]
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _stat_key(path: str) -> list[int]:
    st = os.stat(path)
    if os.path.isdir(path):
        inner = [os.stat(os.path.join(path, n)) for n in os.listdir(path)]
        return [sum(s.st_size for s in inner), max([s.st_mtime_ns for s in inner] + [st.st_mtime_ns]), len(inner)]
    return [st.st_size, st.st_mtime_ns, 1]


def _is_video_name(name: str) -> bool:
    return has_suffix(name, VIDEO_EXTENSIONS + DICOM_EXTENSIONS + NIFTI_EXTENSIONS)


def _load_metadata_rows(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as fh:
                return [dict(r) for r in csv.DictReader(fh)]
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: cannot read the metadata file ({e}); give UTF-8 CSV, JSON or JSONL") from e
    if isinstance(data, dict):
        for key in ("videos", "data", "items", "annotations"):
            if isinstance(data.get(key), list):
                return data[key]
        # {"relative/path.mp4": {"caption": ...}, ...}
        return [{"path": k, **(v if isinstance(v, dict) else {"caption": v})} for k, v in data.items()]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of objects; give one object per video")
    return data


def _row_fields(row: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(path, caption and other scalar fields) of one metadata row."""
    if not isinstance(row, dict):
        return None, {}
    path = next((str(row[k]) for k in PATH_KEYS if row.get(k) not in (None, "")), None)
    fields = {
        k: v
        for k, v in row.items()
        if k not in PATH_KEYS and k not in MEASURED and isinstance(v, (str, int, float, bool)) and v != ""
    }
    if "caption" not in fields:
        alias = next((row[k] for k in CAPTION_ALIASES if row.get(k)), None)
        if alias is not None:
            fields["caption"] = str(alias)
    if "split" in fields and fields["split"] not in SPLITS:
        fields.pop("split")
    return path, fields


def _scan_folder(src: Path, out: Path) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Videos and frame folders under ``src``; other files are reported as unsupported."""
    found: list[Candidate] = []
    ignored: list[dict[str, Any]] = []
    captions: dict[str, dict[str, Any]] = {}
    for name in METADATA_FILES:
        if (src / name).is_file():
            for row in _load_metadata_rows(src / name):
                p, fields = _row_fields(row)
                if p:
                    captions[os.path.normpath(p)] = fields
    out_real = os.path.realpath(out)
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(
            (d for d in dirnames if not d.startswith(".") and os.path.realpath(os.path.join(dirpath, d)) != out_real),
            key=natural_key,
        )
        images = [f for f in filenames if has_suffix(f, IMAGE_EXTENSIONS) and not f.startswith(".")]
        rel_dir = os.path.relpath(dirpath, src)
        if len(images) >= 2:  # a folder of frames is one video
            rel = src.resolve().name if rel_dir == "." else rel_dir
            found.append(Candidate(os.path.abspath(dirpath), rel + "/", captions.get(os.path.normpath(rel), {})))
        for f in sorted(filenames, key=natural_key):
            if f.startswith(".") or (rel_dir == "." and f in METADATA_FILES):
                continue
            rel = f if rel_dir == "." else os.path.join(rel_dir, f)
            full = os.path.join(dirpath, f)
            if _is_video_name(f):
                found.append(Candidate(os.path.abspath(full), rel, captions.get(os.path.normpath(rel), {})))
            elif has_suffix(f, IMAGE_EXTENSIONS) and len(images) >= 2:
                continue
            else:
                ignored.append({"path": rel, "status": "skipped", "reason": "not a supported video format (unknown extension)"})
    return found, ignored


def _scan_metadata(meta: Path, root: Path | None) -> list[Candidate]:
    base = meta.parent
    found: list[Candidate] = []
    for i, row in enumerate(_load_metadata_rows(meta)):
        p, fields = _row_fields(row)
        if not p:
            found.append(Candidate("", f"{meta.name}[row {i}]", {}, f"row has no video path (expected one of {list(PATH_KEYS)})"))
            continue
        try:
            full = str(resolve_path(p, base, root if root is not None else base))
        except ValueError as e:
            found.append(Candidate("", p, fields, str(e)))
            continue
        found.append(Candidate(full, p, fields))
    return found


def probe(path: str, *, min_frames: int = 2, min_side: int = 16, max_side: int = 8192, fps: float | None = None) -> dict[str, Any]:
    """Open a video, check it, decode its first/middle/last frame; return the manifest fields.

    Raises VideoReadError with the reason when the input is unusable.
    """
    with open_video(path, fps=fps, max_side=max_side) as r:  # headers are checked before decoding
        if r.metadata.get("truncated"):
            raise VideoReadError(
                path, f"truncated: the header announces {r.metadata['header_frames']} frames but only {r.num_frames} are present",
                "re-copy or re-export the file",
            )
        if r.num_frames < min_frames:
            raise VideoReadError(
                path, f"too short: {r.num_frames} frame(s), at least {min_frames} needed",
                "lower --min-frames or drop the file (a single frame is an image, not a video)",
            )
        if min(r.height, r.width) < min_side:
            raise VideoReadError(path, f"frames too small ({r.width}x{r.height}, shorter side < {min_side})", "use a higher-resolution export or lower --min-side")
        if max(r.height, r.width) > max_side:
            raise VideoReadError(
                path, f"frames too large ({r.width}x{r.height}, longer side > {max_side})",
                "downscale it first (e.g. `ffmpeg -vf scale=-2:1080`) or raise --max-side",
            )
        r.read(sorted({0, r.num_frames // 2, r.num_frames - 1}))
        return {
            "num_frames": int(r.num_frames),
            "fps": round(float(r.fps), 6),
            "height": int(r.height),
            "width": int(r.width),
            "duration": round(r.num_frames / r.fps, 6) if r.fps > 0 else 0.0,
            "reader": r.metadata.get("reader", ""),
        }


def _load_state(state_path: Path) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = {}
    if not state_path.is_file():
        return state
    with open(state_path, encoding="ascii", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption
            if rec.get("v") == STATE_VERSION:
                state[rec["path"]] = rec
    return state


def prepare(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    min_frames: int = 2,
    min_side: int = 16,
    max_side: int = 8192,
    fps: float | None = None,
    root: str | os.PathLike | None = None,
    flush_every: int = 100,
    progress: bool = True,
    holdout_tail: float = 0.0,
) -> dict[str, Any]:
    """Scan ``src`` and write ``out/manifest.jsonl`` + ``out/report.json``; return the summary.

    ``root`` bounds the paths a metadata file may point to (default: the metadata file's folder).
    ``fps`` is the frame rate given to frame folders (which carry none). ``holdout_tail`` > 0
    splits each video in time (see the module docstring) and replaces the per-video split.
    """
    from tqdm import tqdm

    src, out = Path(src), Path(out)
    if not src.exists():
        raise ValueError(f"{src}: does not exist; give a folder of videos or a CSV/JSON/JSONL metadata file")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}: must be in [0, 1)")
    if not 0.0 <= holdout_tail < 1.0:
        raise ValueError(f"--holdout-tail {holdout_tail}: must be in [0, 1) (e.g. 0.25 holds out the last quarter)")
    out.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        candidates, ignored = _scan_folder(src, out)
    elif src.suffix.lower() in (".csv", ".json", ".jsonl"):
        candidates, ignored = _scan_metadata(src, Path(root) if root else None), []
    else:
        raise ValueError(f"{src}: neither a folder nor a .csv/.json/.jsonl metadata file")

    state_dir = out / ".prepare"
    state_dir.mkdir(exist_ok=True)
    state_path = state_dir / "state.jsonl"
    state = _load_state(state_path)
    settings = {"min_frames": min_frames, "min_side": min_side, "max_side": max_side, "fps": fps}
    results: list[tuple[Candidate, dict[str, Any]]] = []
    n_new = 0
    last_flush = time.monotonic()
    with open(state_path, "a", encoding="ascii") as state_fh:
        bar = tqdm(candidates, desc="prepare", unit="video", disable=not progress)
        for i, cand in enumerate(bar):
            if cand.error:
                results.append((cand, {"status": "skipped", "reason": cand.error}))
                continue
            try:
                key = _stat_key(cand.path)
            except FileNotFoundError:
                results.append((cand, {"status": "skipped", "reason": "file does not exist"}))
                continue
            except OSError as e:
                results.append((cand, {"status": "skipped", "reason": f"cannot stat the file ({e})"}))
                continue
            rec = state.get(cand.path)
            if rec is None or rec.get("key") != key or rec.get("settings") != settings:
                rec = {"v": STATE_VERSION, "path": cand.path, "key": key, "settings": settings}
                try:
                    rec["info"] = probe(cand.path, min_frames=min_frames, min_side=min_side, max_side=max_side, fps=fps)
                    rec["sha256"] = _hash_path(cand.path)
                    rec["status"] = "kept"
                except VideoReadError as e:
                    rec.update(status="skipped", reason=e.reason + (f"; {e.fix}" if e.fix else ""))
                except Exception as e:  # nothing one file does may stop a long job
                    rec.update(status="skipped", reason=f"unexpected error while reading ({type(e).__name__}: {e})")
                state_fh.write(json.dumps(rec, ensure_ascii=True) + "\n")
                state_fh.flush()
                state[cand.path] = rec
                n_new += 1
            results.append((cand, rec))
            if flush_every and (i + 1) % flush_every == 0 and time.monotonic() - last_flush > 10:
                _write_outputs(out, results, ignored, val_fraction, seed, final=False, holdout_tail=holdout_tail)
                last_flush = time.monotonic()
    summary = _write_outputs(out, results, ignored, val_fraction, seed, final=True, holdout_tail=holdout_tail)
    summary["probed"] = n_new
    for split in SPLITS:
        if summary["kept"] and not summary[split]:
            hint = ("add videos or raise --val-fraction, or hold out the end of every video with --holdout-tail 0.25"
                    if split == "val" else "add videos or lower --val-fraction / --holdout-tail")
            log.warning("%s: the %r split is empty (%d usable video(s)); %s", out, split, summary["kept"], hint)
            summary.setdefault("warnings", []).append(f"the {split!r} split is empty; {hint}")
    return summary


def segments_for(num_frames: int, holdout_tail: float) -> list[tuple[str, int, int]]:
    """``[(split, start, end), ...]`` of one video split in time: the last ``holdout_tail`` of its
    frames (at least one) are held out; a video too short to give both parts stays whole in train."""
    n_val = max(1, int(round(num_frames * holdout_tail)))
    cut = num_frames - n_val
    if cut < 1:
        return [("train", 0, num_frames)]
    return [("train", 0, cut), ("val", cut, num_frames)]


def _write_outputs(out: Path, results, ignored, val_fraction: float, seed: int, final: bool,
                   holdout_tail: float = 0.0) -> dict[str, Any]:
    """Dedupe by content hash, assign ids and splits, write manifest and report atomically."""
    manifest: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    by_hash: dict[str, str] = {}
    ids: set[str] = set()
    for cand, rec in results:
        item: dict[str, Any] = {"path": cand.rel, "status": rec.get("status", "skipped")}
        if item["status"] != "kept":
            item["reason"] = rec.get("reason", "")
            report.append(item)
            continue
        warnings = []
        try:
            cand.rel.encode("utf-8")
        except UnicodeEncodeError:
            warnings.append("file name is not valid UTF-8; the id was sanitised and the path kept byte-exact")
        first = by_hash.get(rec["sha256"])
        if first is not None:
            item.update(status="skipped", reason=f"duplicate of {first} (identical content)")
            report.append(item)
            continue
        by_hash[rec["sha256"]] = cand.rel
        vid = make_video_id(cand.rel)
        base_id, n = vid, 1
        while vid in ids:
            n += 1
            vid = f"{base_id}-{n}"
        ids.add(vid)
        path = os.path.relpath(cand.path, out) if is_within(cand.path, out) else cand.path
        fields = dict(cand.fields)
        if holdout_tail > 0:
            fields.pop("split", None)
            n = int(rec["info"]["num_frames"])
            segs = segments_for(n, holdout_tail)
            for split, a, b in segs:
                seg_id = f"{vid}.{'head' if split == 'train' else 'tail'}"
                ids.add(seg_id)
                info = {**rec["info"], "num_frames": b - a, "duration": round((b - a) / rec["info"]["fps"], 6)
                        if rec["info"]["fps"] else 0.0}
                manifest.append({"path": path, "id": seg_id, **info, "split": split, "start_frame": a, "end_frame": b,
                                 "source_frames": n, "video": vid, "sha256": rec["sha256"], **fields})
            item.update(id=vid, split="+".join(s for s, _, _ in segs), segments=[[s, a, b] for s, a, b in segs])
            if len(segs) == 1:
                warnings.append(f"only {n} frame(s): too short to hold out a tail, kept whole in train")
            if warnings:
                item["warnings"] = warnings
            report.append(item)
            continue
        split = fields.pop("split", None) or split_for(vid, val_fraction, seed)
        entry = {"path": path, "id": vid, **rec["info"], "split": split, "sha256": rec["sha256"], **fields}
        manifest.append(entry)
        item.update(id=vid, split=split)
        if warnings:
            item["warnings"] = warnings
        report.append(item)
    report.extend(ignored)
    kept = sum(1 for r in report if r["status"] == "kept")
    summary = {
        "kept": kept,
        "skipped": len(report) - kept,
        "train": sum(1 for e in manifest if e["split"] == "train"),
        "val": sum(1 for e in manifest if e["split"] == "val"),
        "holdout_tail": holdout_tail,
        "complete": final,
        "manifest": str(out / "manifest.jsonl"),
        "report": str(out / "report.json"),
    }
    write_jsonl(out / "manifest.jsonl", manifest)
    write_json(out / "report.json", {"summary": summary, "inputs": report})
    return summary


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="folder of videos (recursive) or CSV/JSON/JSONL metadata file")
    parser.add_argument("out", help="output folder for manifest.jsonl and report.json")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of videos in the validation split")
    parser.add_argument("--holdout-tail", type=float, default=0.0, metavar="FRACTION",
                        help="hold out the last FRACTION of every video as the val split (e.g. 0.25), instead of "
                             "holding out whole videos; one video is then enough to train and evaluate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the deterministic train/val split")
    parser.add_argument("--min-frames", type=int, default=2, help="skip videos with fewer frames")
    parser.add_argument("--min-side", type=int, default=16, help="skip videos whose shorter side is smaller")
    parser.add_argument("--max-side", type=int, default=8192, help="skip videos whose longer side is larger")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of frame folders (default 30)")
    parser.add_argument("--root", default=None, help="data root that metadata paths must stay inside")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    try:
        summary = prepare(
            args.src, args.out, val_fraction=args.val_fraction, seed=args.seed, min_frames=args.min_frames,
            min_side=args.min_side, max_side=args.max_side, fps=args.fps, root=args.root,
            progress=not args.no_progress, holdout_tail=args.holdout_tail,
        )
    except ValueError as e:
        print(f"medvid prepare: {e}", file=sys.stderr)
        return 2
    unit = "segment" if args.holdout_tail > 0 else "video"
    print(
        f"{summary['kept']} usable video(s) ({summary['train']} train, {summary['val']} val {unit}s), "
        f"{summary['skipped']} skipped; see {summary['report']}"
    )
    for w in summary.get("warnings", []):
        print(f"medvid prepare: warning: {w}")
    if summary["kept"] == 0:
        print(f"medvid prepare: no usable video in {args.src}; the reasons are listed in {summary['report']}",
              file=sys.stderr)
        return 1
    return 0
