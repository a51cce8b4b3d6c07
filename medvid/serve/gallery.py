"""The gallery folder as the page sees it: finished videos with their sidecars, the judge's scores
(``judge.json`` from `medvid judge --videos GALLERY`) and evaluation reports (``report.html`` from
`medvid evaluate --fake GALLERY --out GALLERY/...`); and the one function that maps a URL path to a
file, which never leaves the folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from medvid.utils.logging import get_logger

log = get_logger("serve")

# What /files/ serves; everything else in the folder (the queue database, lock, hidden files) is 404.
SERVED_SUFFIXES = {".mp4": "video/mp4", ".webm": "video/webm", ".gif": "image/gif", ".png": "image/png",
                   ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".json": "application/json",
                   ".csv": "text/csv", ".html": "text/html"}
REPORT_DEPTH = 3  # folders below the gallery searched for report.html


def safe_file(root: Path, rel: str) -> Path | None:
    """``root/rel`` if it is a served file inside ``root`` (after resolving ``..`` and symbolic
    links) and no part of it is hidden; otherwise None."""
    if not rel or "\x00" in rel or "\\" in rel:
        return None
    parts = Path(rel).parts
    if Path(rel).is_absolute() or any(p.startswith(".") for p in parts):  # also rejects ".." and ".work"
        return None
    try:
        base = root.resolve(strict=True)
        path = (base / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(base) or not path.is_file() or path.suffix.lower() not in SERVED_SUFFIXES:
        return None
    return path


def file_url(rel: str) -> str:
    return "files/" + quote(rel)


def judge_scores(root: Path) -> dict[str, list[dict[str, Any]]]:
    """video path (relative to the gallery) -> its judge.json entries (one per judging model)."""
    f = root / "judge.json"
    if not f.is_file():
        return {}
    try:
        entries = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        log.warning("%s is unreadable (%s); judge scores are not shown", f, e)
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, dict) and isinstance(e.get("video"), str) and isinstance(e.get("scores"), dict):
            out.setdefault(e["video"], []).append({
                "model": e.get("model"), "status": e.get("status"), "scores": e["scores"],
                "reasons": e.get("reasons") if isinstance(e.get("reasons"), dict) else {}})
    return out


def list_videos(root: Path, limit: int = 200) -> list[dict[str, Any]]:
    """Finished videos (``NAME.mp4`` with its sidecar ``NAME.json``) in the gallery, newest first."""
    items = []
    for side in root.glob("*.json"):
        mp4 = side.with_suffix(".mp4")
        if side.name.startswith(".") or not mp4.is_file():
            continue
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(meta, dict):
            items.append((side.stat().st_mtime, mp4, side, meta))
    items.sort(key=lambda t: (t[0], t[1].name), reverse=True)
    scores = judge_scores(root) if items else {}
    return [{
        "name": mp4.stem, "video": file_url(mp4.name), "sidecar": file_url(side.name), "created": mtime,
        "meta": meta, "judge": scores.get(mp4.name, []),
    } for mtime, mp4, side, meta in items[:limit]]


def find_reports(root: Path) -> list[dict[str, str]]:
    """Evaluation reports (``report.html``) in the gallery folder or up to REPORT_DEPTH folders below it."""
    found = []
    for depth in range(REPORT_DEPTH + 1):
        for f in sorted(root.glob("/".join(["*"] * depth + ["report.html"]))):
            rel = f.relative_to(root).as_posix()
            if safe_file(root, rel) is not None:
                found.append({"title": f.parent.relative_to(root).as_posix() if depth else "this folder",
                              "url": file_url(rel)})
    return found
