"""Append-only sharded safetensors caches (``medvid encode`` latents, ``medvid flow-features``).

Layout: ``DIR/shard-XXXXX.safetensors`` (tensors named ``<clip_id>/<what>``) and ``DIR/index.jsonl``
(one line per clip, with the shard that holds it). A shard is written to a temporary file and
renamed into place *before* its index lines are appended (and fsynced), so after a crash:

* a torn last index line means "not written" and is dropped (``read_jsonl_repairing``);
* a shard file without index lines was never committed and is removed when the writer opens;
* everything indexed is complete, and a re-run skips it (``writer.done``).
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

SHARD = re.compile(r"^shard-(\d{5,})\.safetensors$")


class ShardWriter:
    """Collects per-clip tensors and index rows, and commits them a shard at a time."""

    def __init__(self, out: str | os.PathLike, fmt: str, shard_size: int):
        if shard_size < 1:
            raise ValueError(f"shard_size={shard_size}: must be >= 1")
        self.out, self.format, self.shard_size = Path(out), fmt, shard_size
        self.out.mkdir(parents=True, exist_ok=True)
        self.index_path = self.out / "index.jsonl"
        rows = read_jsonl_repairing(self.index_path)
        self.done: set[str] = {r["clip_id"] for r in rows}
        used = {r["shard"] for r in rows}
        numbers = []
        for p in list(self.out.iterdir()):
            m = SHARD.match(p.name)
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
        name = f"shard-{self.next_shard:05d}"
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
        """Clips committed to the index so far."""
        return len(read_jsonl_repairing(self.index_path))
