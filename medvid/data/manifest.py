"""``manifest.jsonl``: one JSON object per usable video, written by ``medvid prepare``.

Fields: ``path`` (relative to the manifest's folder, or absolute), ``id``, ``num_frames``, ``fps``,
``height``, ``width``, ``duration``, ``split`` ("train"/"val"), optional ``start_frame`` /
``end_frame`` (a segment of the file, end exclusive; ``num_frames`` is then the segment's length,
written by ``medvid prepare --holdout-tail``), optional caption fields
(``caption``, ``brief_caption``, ``detailed_caption``, ``category``, ...) and scores.

Relative paths must stay inside the data root (the manifest's folder unless ``root`` is given): a
line such as ``{"path": "../../etc/passwd"}`` is refused. When ``root`` is given, absolute paths
must lie under it too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from medvid.utils.logging import get_logger
from medvid.utils.text import read_text

log = get_logger("data")

REQUIRED = ("path", "id", "num_frames", "fps", "height", "width")
SPLITS = ("train", "val")


class ManifestError(ValueError):
    """A manifest file that cannot be used; the message names the file and line."""


def resolve_manifest(path: str | os.PathLike) -> Path:
    """A manifest file or a prepared folder holding ``manifest.jsonl``."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.jsonl"
    if not p.is_file():
        raise ManifestError(
            f"{p}: no manifest here; run `medvid prepare SRC OUT` first and pass OUT or OUT/manifest.jsonl"
        )
    return p


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when ``path`` (symlinks resolved) lies inside ``root``."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
        return True
    except ValueError:
        return False


def resolve_path(entry_path: str, base: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Manifest/metadata path -> absolute path; raises ValueError if it escapes the data root."""
    p = Path(entry_path)
    absolute = p.is_absolute()
    full = p if absolute else Path(base) / p
    check_root = root if root is not None else (None if absolute else base)
    if check_root is not None and not is_within(full, check_root):
        raise ValueError(
            f"path {entry_path!r} escapes the data root {check_root}; keep videos inside the data folder "
            "(or pass an explicit root that contains them)"
        )
    return Path(os.path.abspath(full))


def read_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Read ``manifest.jsonl`` (or a folder holding one); paths come back absolute.

    Raises ``ManifestError`` for malformed lines, missing fields, unknown splits and paths that
    escape the data root.
    """
    mpath = resolve_manifest(path)
    base = mpath.parent
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, line in enumerate(read_text(mpath).split("\n"), 1):
        if not line.strip():
            continue
        where = f"{mpath}, line {lineno}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{where}: not valid JSON ({e}); fix or delete that line") from e
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: expected a JSON object")
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ManifestError(f"{where}: missing field(s) {missing}; re-run `medvid prepare`")
        try:
            entry["path"] = str(resolve_path(entry["path"], base, root))
        except ValueError as e:
            raise ManifestError(f"{where}: {e}") from e
        entry.setdefault("split", "train")
        if entry["split"] not in SPLITS:
            raise ManifestError(f"{where}: split {entry['split']!r} is not one of {SPLITS}")
        if entry["id"] in seen:
            raise ManifestError(f"{where}: duplicate id {entry['id']!r}; ids must be unique")
        seen.add(entry["id"])
        if "start_frame" in entry or "end_frame" in entry:
            a, b = int(entry.get("start_frame", 0)), int(entry.get("end_frame", -1))
            if not 0 <= a < b or b - a != int(entry["num_frames"]):
                raise ManifestError(
                    f"{where}: segment start_frame={entry.get('start_frame')} end_frame={entry.get('end_frame')} "
                    f"does not match num_frames={entry['num_frames']}; re-run `medvid prepare`"
                )
        entry.setdefault("duration", entry["num_frames"] / entry["fps"] if entry["fps"] else 0.0)
        entries.append(entry)
    return entries


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    """Atomic JSONL write. ``ensure_ascii`` keeps non-UTF-8 file names (surrogate escapes) lossless."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="ascii") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def complete_rows(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """The JSON rows of JSONL bytes up to the first incomplete or unparsable line, and the byte
    length they span."""
    rows, good = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good += len(line)
    return rows, good


def read_jsonl_repairing(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of an append-only JSONL index; a last line cut short by a crash is dropped from the file.

    Caches (``medvid encode``, ``medvid flow-features``) append a line only after the data it
    points to is safely on disk, so a torn last line means "not written": removing it is the repair.
    """
    path = Path(path)
    if not path.is_file():
        return []
    raw = path.read_bytes()
    rows, good = complete_rows(raw)
    if good != len(raw):
        log.warning("%s: dropping a partly written last line (interrupted run)", path)
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return rows


def write_json(path: str | os.PathLike, obj: Any, default: Any = None) -> Path:
    """Write JSON atomically (temporary file in the same folder, fsync, rename).

    ``default`` converts values JSON does not know, as in ``json.dump``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="ascii") as fh:
        json.dump(obj, fh, indent=1, ensure_ascii=True, default=default)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def make_video_id(rel_path: str) -> str:
    """A readable, file-name-safe id from a relative path (``a/b c.mp4`` -> ``a__b_c``).

    Characters outside ``[A-Za-z0-9._-]`` (spaces, non-ASCII, undecodable bytes) are replaced, and a
    short hash of the original path is appended whenever anything was replaced, so two names that
    differ only in such characters keep distinct ids.
    """
    stem = rel_path
    for suffix in (".nii.gz",):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    else:
        stem = os.path.splitext(stem)[0] if not stem.endswith("/") else stem
    parts = [p for p in stem.replace("\\", "/").split("/") if p]
    clean = "__".join(_UNSAFE.sub("_", p) for p in parts) or "video"
    raw = "__".join(parts)
    if clean != raw:
        digest = hashlib.sha1(rel_path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        clean = f"{clean}-{digest}"
    return clean


def split_for(video_id: str, val_fraction: float, seed: int = 0) -> str:
    """Deterministic split by video: a hash of (seed, id) -> uniform [0, 1) -> "val" below the fraction.

    Depends on nothing but the id, so adding videos never moves an existing video between splits.
    """
    h = hashlib.sha256(f"{seed}:{video_id}".encode("utf-8", "surrogateescape")).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    return "val" if u < val_fraction else "train"
