"""Append-only sharded safetensors caches (``medvid encode`` latents, ``medvid flow-features``).

Layout: ``DIR/shard-XXXXX.safetensors`` (tensors named ``<clip_id>/<what>``) and ``DIR/index.jsonl``
(one line per clip, with the shard that holds it). A shard is written to a temporary file and
renamed into place *before* its index lines are appended (and fsynced), so after a crash:

* a torn last index line means "not written" and is dropped (``read_jsonl_repairing``);
* a shard file without index lines was never committed and is removed when the writer opens;
* everything indexed is complete, and a re-run skips it (``writer.done``).

Many processes (``medvid.utils.sharding``): rank ``r`` writes ``shard-rank-0000r-XXXXX.safetensors``
and ``index-rank-0000r.jsonl`` (``tag``), so two ranks never touch the same file; every writer
counts a clip in any index as done, whatever rank or world size wrote it; :func:`merge_index`
then joins the rank indexes into ``index.jsonl`` in the single-process order. The merged index
holds the same rows as a single process's, tensor for tensor, except the ``shard`` names.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from medvid.data.manifest import read_jsonl_repairing
from medvid.utils.logging import get_logger

log = get_logger("data")

RANK_INDEX = "index-rank-*.jsonl"


def _shard_pattern(tag: str | None) -> re.Pattern:
    return re.compile(rf"^shard-{re.escape(tag) + '-' if tag else ''}(\d{{5,}})\.safetensors$")


def all_rows(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of ``index.jsonl`` and of every rank's index (torn last lines ignored, never cut)."""
    from medvid.utils.sharding import read_jsonl_tolerant

    out = Path(out)
    return [r for p in [out / "index.jsonl", *sorted(out.glob(RANK_INDEX))] for r in read_jsonl_tolerant(p)]


class ShardWriter:
    """Collects per-clip tensors and index rows, and commits them a shard at a time.

    ``tag`` (a rank's name, ``medvid.utils.sharding.Sharding.tag``): write ``index-<tag>.jsonl`` and
    ``shard-<tag>-XXXXX`` files of this rank only.
    """

    def __init__(self, out: str | os.PathLike, fmt: str, shard_size: int, tag: str | None = None):
        if shard_size < 1:
            raise ValueError(f"shard_size={shard_size}: must be >= 1")
        self.out, self.format, self.shard_size, self.tag = Path(out), fmt, shard_size, tag
        self.out.mkdir(parents=True, exist_ok=True)
        self.index_path = self.out / (f"index-{tag}.jsonl" if tag else "index.jsonl")
        own = read_jsonl_repairing(self.index_path)  # this writer's own file: a torn line is cut
        rows = all_rows(self.out)
        self.done: set[str] = {r["clip_id"] for r in rows}
        used = {r["shard"] for r in rows} | {r["shard"] for r in own}
        self.prefix = f"shard-{tag}-" if tag else "shard-"
        pattern = _shard_pattern(tag)
        numbers = []
        for p in list(self.out.iterdir()):
            m = pattern.match(p.name)
            if m:
                numbers.append(int(m.group(1)))
                if p.stem not in used:  # renamed into place but never indexed: an interrupted run
                    log.warning("%s: not in index.jsonl (interrupted run); removing it", p)
                    p.unlink()
        self.next_shard = max(numbers, default=-1) + 1
        self.shards_written = 0
        self._tensors: dict[str, torch.Tensor] = {}
        self._rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Queue one clip (``row["clip_id"]`` names it); commits a shard when it is full."""
        self._tensors.update({k: v.contiguous().cpu() for k, v in tensors.items()})
        self._rows.append(row)
        self.done.add(row["clip_id"])
        if len(self._rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        name = f"{self.prefix}{self.next_shard:05d}"
        tmp = self.out / f".{name}.tmp{os.getpid()}"
        save_file(self._tensors, str(tmp), metadata={"format": self.format})
        os.replace(tmp, self.out / f"{name}.safetensors")
        with open(self.index_path, "a", encoding="utf-8") as fh:
            for r in self._rows:
                fh.write(json.dumps({**r, "shard": name}, ensure_ascii=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.next_shard += 1
        self.shards_written += 1
        self._tensors, self._rows = {}, []

    def total(self) -> int:
        """Clips committed to the indexes so far (this rank's and every other's)."""
        return len({r["clip_id"] for r in all_rows(self.out)})


def merge_index(out: str | os.PathLike, order: list[str] | None = None) -> int:
    """Join ``index.jsonl`` and the rank indexes into ``index.jsonl`` (first row of a clip wins),
    sorted by ``order`` (the single-process order of clip ids; others follow by id), and remove the
    rank indexes. Safe to repeat: a crash between the write and the removals leaves duplicates that
    the next merge drops. Returns the number of clips."""
    from medvid.data.manifest import write_jsonl

    out = Path(out)
    ranks = sorted(out.glob(RANK_INDEX))
    rows: dict[str, dict[str, Any]] = {}
    for r in read_jsonl_repairing(out / "index.jsonl") + [r for p in ranks for r in read_jsonl_repairing(p)]:
        rows.setdefault(r["clip_id"], r)
    pos = {c: i for i, c in enumerate(order or [])}
    ids = sorted(rows, key=lambda c: (pos.get(c, len(pos)), c))
    if ranks or ids != [r["clip_id"] for r in read_jsonl_repairing(out / "index.jsonl")]:
        write_jsonl(out / "index.jsonl", [rows[c] for c in ids])
    for p in ranks:
        p.unlink()
    return len(ids)
