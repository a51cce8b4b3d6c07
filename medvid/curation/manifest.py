"""Manifest lines (``manifest.jsonl``) for curated clips, and MedVideoCap-55K metadata import.

Keys are snake_case versions of MedVideoCap-55K's per-clip fields (file name, resolution, bit rate,
aesthetic score, DOVER technical score, duration, fps, camera-motion type, category, brief caption,
detailed caption); ``normalize_record`` also accepts the original column spellings, so the
data set's metadata can be imported directly.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from medvid.utils.text import read_text


# original / alternative column name (lower-cased, separators collapsed) -> medvid key
_ALIASES = {
    "file_name": "file_name", "filename": "file_name", "file": "file_name", "video": "file_name",
    "video_name": "file_name", "clip": "file_name",
    "resolution": "resolution", "bit_rate": "bit_rate", "bitrate": "bit_rate",
    "aesthetic_score": "aesthetic_score", "aesthetic": "aesthetic_score",
    "dover_score": "technical_score", "dover": "technical_score", "technical_score": "technical_score",
    "technical_quality": "technical_score", "technical_quality_score": "technical_score",
    "duration": "duration", "fps": "fps", "frame_rate": "fps",
    "camera_motion": "camera_motion", "camera_motion_type": "camera_motion", "motion_type": "camera_motion",
    "category": "category", "brief_caption": "brief_caption", "short_caption": "brief_caption",
    "detailed_caption": "detailed_caption", "dense_caption": "detailed_caption", "caption": "caption",
    "prompt": "caption",
}
_NUMERIC = {"bit_rate", "aesthetic_score", "technical_score", "duration", "fps"}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def normalize_record(rec: dict[str, Any]) -> dict[str, Any]:
    """MedVideoCap-55K column names (``"File Name"``, ``"DOVER score"``, ``"Brief Caption"``...) ->
    medvid keys; ``resolution`` "720x480" also fills ``width``/``height``. Unknown keys are kept."""
    out: dict[str, Any] = {}
    for k, v in rec.items():
        nk = _ALIASES.get(_key(k), k)
        if nk in _NUMERIC and isinstance(v, str) and v.strip():
            try:
                v = float(v.strip().split()[0])
            except ValueError:
                pass
        out[nk] = v
    res = out.get("resolution")
    if isinstance(res, str):
        m = re.match(r"\s*(\d+)\s*[x×*,]\s*(\d+)", res)
        if m:
            out.setdefault("width", int(m.group(1)))
            out.setdefault("height", int(m.group(2)))
    if "path" not in out and out.get("file_name"):
        out["path"] = str(out["file_name"])
    if "id" not in out and out.get("path"):
        out["id"] = Path(str(out["path"])).stem
    if "caption" not in out and out.get("detailed_caption"):
        out["caption"] = out["detailed_caption"]
    return out


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``manifest.jsonl``; a bad line raises ValueError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: manifest not found; create one with `medvid prepare` or `medvid curate`")
    out = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); fix or delete that line") from e
        if not isinstance(rec, dict) or "path" not in rec:
            raise ValueError(f"{path}:{n}: each line must be a JSON object with a 'path' key")
        out.append(rec)
    return out






def import_metadata(path: str | Path) -> list[dict[str, Any]]:
    """MedVideoCap-style metadata (CSV, JSON list or JSON lines) -> normalised records."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: metadata file not found")
    text = read_text(path, "utf-8-sig")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    elif path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg}); give a CSV, JSON list or JSON-lines file") from e
        if isinstance(rows, dict):
            rows = [dict(v, file_name=k) if isinstance(v, dict) else {"file_name": k, "caption": v} for k, v in rows.items()]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: expected a list of objects (one per clip)")
    return [normalize_record(r) for r in rows]
