"""Splitting an offline stage's work across processes: torchrun ranks or independent ``--shard I/N`` jobs.

Every stage (encode, flow-features, sample, generate --batch, caption, judge, curate, evaluate's
feature extraction) follows the same pattern:

* the work is a list of items in the order a single process would do them; rank ``r`` of ``N``
  takes items ``r, r + N, r + 2N, ...`` of the *whole* list (:meth:`Sharding.take`), so the split
  depends only on the list and ``N``, never on what earlier runs finished;
* before that, every item finished by any earlier run (any rank, any world size) is skipped, so a
  run resumes after a crash of one rank and after a change of world size;
* each rank writes only its own files: per-item outputs whose names come from the item, or
  append-only ``rank-XXXXX`` parts (:class:`RowLog`, ``ShardWriter(tag=...)``); two ranks never
  write the same file;
* rank 0 merges the parts into the single-process outputs once every rank is done (under torchrun
  after a barrier; for ``--shard I/N`` jobs by running the same command again with ``--merge``).

Under torchrun the process group is the one ``medvid train`` uses (:mod:`medvid.training.distributed`):
NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from medvid.utils.logging import get_logger

log = get_logger("sharding")

T = TypeVar("T")
SHARD_ARG = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    m = SHARD_ARG.match(text)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--shard {text!r}: write it as I/N with 0 <= I < N, e.g. --shard 0/4 for the first of 4 jobs")
    return int(m.group(1)), int(m.group(2))


@dataclass
class Sharding:
    """Which part of a stage's work this process does. ``launched``: a torchrun process group joins
    the ranks (barriers, gathers); otherwise each shard is an independent job."""

    rank: int = 0
    world_size: int = 1
    launched: bool = False
    local_rank: int = 0
    _dist: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @property
    def merges(self) -> bool:
        """True for the process that writes the merged outputs at the end of this run: the single
        process, or rank 0 of a torchrun job. Independent ``--shard`` jobs leave it to ``--merge``."""
        return self.is_main and (self.launched or not self.sharded)

    @property
    def tag(self) -> str | None:
        """Name part of this rank's own files; None for a single process (the plain file names)."""
        return f"rank-{self.rank:05d}" if self.sharded else None

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's items of the whole, ordered work list: every ``world_size``-th from ``rank``."""
        return list(items[self.rank :: self.world_size])

    def device(self, name: str):
        """``name`` with "cuda"/"auto" mapped to this rank's GPU (``LOCAL_RANK``)."""
        from medvid.training.distributed import resolve_device

        return resolve_device(name, self.local_rank)

    def finish(self, merge: Callable[[], T], partial: Any = None) -> T | Any:
        """Once every rank is done: ``merge()`` on the merging process (:attr:`merges`), while the
        other ranks wait for it; returns its result there and ``partial`` elsewhere."""
        self.barrier()
        result = merge() if self.merges else partial
        self.barrier()
        return result

    def barrier(self) -> None:
        if self.launched:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (torchrun); ``[obj]`` for a single process or a job."""
        if not self.launched:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (torchrun); ``obj`` otherwise."""
        if not self.launched:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def current(shard: str | None = None, device: str = "cpu", merge: bool = False) -> Sharding:
    """The sharding of this process: ``--shard I/N`` if given, else torchrun's environment
    (joining its process group, see :func:`medvid.training.distributed.init_distributed`), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if shard is not None and merge:
        raise ValueError(f"--shard {shard} with --merge: run the --shard jobs first, then --merge once without --shard")
    if shard is not None:
        if world > 1:
            raise ValueError(f"--shard {shard} under torchrun (WORLD_SIZE={world}): use one or the other; "
                             "torchrun already gives each rank its share")
        rank, n = parse_shard(shard)
        return Sharding(rank, n)
    if world <= 1:
        return Sharding()
    from medvid.training.distributed import init_distributed

    # gloo carries the barriers and object gathers whatever the stage computes on
    info = init_distributed("cpu" if device == "cpu" else device)
    return Sharding(info.rank, info.world_size, True, info.local_rank, info)


def release(sh: Sharding) -> None:
    """Leave the process group :func:`current` joined (nothing for a single process or a job)."""
    if sh._dist is not None:
        from medvid.training.distributed import cleanup

        cleanup(sh._dist)
        sh._dist = None


@contextmanager
def sharding(shard: str | None = None, device: str = "cpu", merge: bool = False) -> Iterator[Sharding]:
    """:func:`current`, leaving the process group it joined when the block ends."""
    sh = current(shard, device, merge)
    try:
        yield sh
    finally:
        release(sh)


def add_shard_arguments(parser: argparse.ArgumentParser, merge: bool = True) -> None:
    """``--shard I/N`` and (for stages whose outputs are joined) ``--merge`` for a command line."""
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="do only part I of N of the work (independent jobs, e.g. an array job)"
                             + ("; join the parts afterwards with the same command and --merge" if merge else ""))
    if merge:
        parser.add_argument("--merge", action="store_true",
                            help="join the outputs of --shard jobs (or of an interrupted multi-process run)")


# ------------------------------------------------------------------------------------------------
# Per-rank append-only row files
# ------------------------------------------------------------------------------------------------


def read_jsonl_tolerant(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of an append-only JSONL file another process may be writing: a torn last line is
    ignored (never truncated, that is its writer's repair to make)."""
    from medvid.data.manifest import complete_rows

    path = Path(path)
    if not path.is_file():
        return []
    return complete_rows(path.read_bytes())[0]


class RowLog:
    """``FOLDER/rank-XXXXX.jsonl``: rows one rank appends (and fsyncs) as items finish.

    A torn last line (a crash mid-write) is dropped when the rank opens its file again.
    """

    def __init__(self, folder: str | os.PathLike, rank: int):
        from medvid.data.manifest import read_jsonl_repairing

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"rank-{rank:05d}.jsonl"
        read_jsonl_repairing(self.path)

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        with open(self.path, "a", encoding="ascii") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def part_files(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    return sorted(folder.glob("rank-*.jsonl")) if folder.is_dir() else []


def read_parts(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """All ranks' rows (any earlier world size), in rank-file order."""
    return [r for p in part_files(folder) for r in read_jsonl_tolerant(p)]


def clear_parts(folder: str | os.PathLike) -> None:
    """Remove the merged part files (and the folder when it is left empty)."""
    folder = Path(folder)
    for p in part_files(folder):
        p.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def parts_folder(output: str | os.PathLike) -> Path:
    """Where the rank parts of a merged output file ``OUT/x.json`` live: ``OUT/.x.json.parts/``."""
    output = Path(output)
    return output.with_name(f".{output.name}.parts")


def sum_counts(dicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-rank summaries -> one: numbers add, lists concatenate, dicts merge, the rest from rank 0."""
    out: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if k not in out:
                out[k] = list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
            elif isinstance(v, bool) or not isinstance(v, (int, float, list, dict)):
                continue
            elif isinstance(v, list):
                out[k] += v
            elif isinstance(v, dict):
                out[k].update(v)
            else:
                out[k] += v
    return out


# ------------------------------------------------------------------------------------------------
# Local launcher (tests, benchmarks): N gloo processes on this machine, as torchrun would start them
# ------------------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, threads: int, fn, args: tuple, kwargs: dict) -> None:
    import torch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    fn(*args, **kwargs)


def spawn_local(fn, nprocs: int, *args, threads: int | None = None, **kwargs) -> None:
    """Run ``fn(*args, **kwargs)`` in ``nprocs`` fresh processes with torchrun's environment
    (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); ``fn`` must be importable (a module-level function).
    ``threads``: torch threads per process (default: this process's, so float reductions match)."""
    import torch
    import torch.multiprocessing as mp

    threads = threads or torch.get_num_threads()
    mp.spawn(_rank_main, args=(nprocs, free_port(), threads, fn, args, kwargs), nprocs=nprocs)
