"""The job queue of `medvid serve`: one SQLite file in the gallery folder, so jobs outlive the server.

A job goes ``queued -> running -> done | failed | cancelled``. Jobs that were running when the
server stopped are queued again when it starts (they restart from the first step). The worker
claims the oldest queued job inside an immediate transaction, so a job is never run twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

QUEUE_FILE = "queue.sqlite"
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    eta REAL,
    message TEXT NOT NULL DEFAULT '',
    video TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL
)
"""


class JobQueue:
    """Thread-safe access to ``<folder>/queue.sqlite`` (one short connection per call)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / QUEUE_FILE
        self._lock = threading.Lock()
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers (the page's polling) never wait for progress writes
            db.execute(_SCHEMA)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _run(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            db = self._connect()
            try:
                return [_row(r) for r in db.execute(sql, args).fetchall()]
            finally:
                db.close()

    # ------------------------------------------------------------------ submit / read

    def submit(self, name_of, params: dict[str, Any]) -> dict[str, Any]:
        """Add a job; ``name_of(job_id)`` gives its video name (the id makes names unique)."""
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                cur = db.execute("INSERT INTO jobs (name, params, created) VALUES ('', ?, ?)",
                                 (json.dumps(params), time.time()))
                job_id = cur.lastrowid
                db.execute("UPDATE jobs SET name = ? WHERE id = ?", (name_of(job_id), job_id))
                db.execute("COMMIT")
                return _row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
            finally:
                db.close()

    def get(self, job_id: int) -> dict[str, Any] | None:
        rows = self._run("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """Every active job, then the latest finished ones; newest first."""
        return self._run(
            "SELECT * FROM jobs WHERE status IN ('queued', 'running') OR id IN "
            "(SELECT id FROM jobs WHERE status NOT IN ('queued', 'running') ORDER BY id DESC LIMIT ?) ORDER BY id DESC",
            (limit,),
        )

    def count_active(self) -> int:
        return self._run("SELECT COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'running')")[0]["n"]

    # ------------------------------------------------------------------ worker side

    def requeue_interrupted(self) -> int:
        """Jobs left running by a server that stopped go back to the queue; returns how many."""
        rows = self._run(
            "UPDATE jobs SET status = 'queued', step = 0, total = 0, eta = NULL, started = NULL, "
            "message = 'the server stopped while this video was being made; it starts again' "
            "WHERE status = 'running' RETURNING id"
        )
        return len(rows)

    def claim_next(self) -> dict[str, Any] | None:
        """Mark the oldest queued job running and return it (None when the queue is empty)."""
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
                if row is None:
                    db.execute("COMMIT")
                    return None
                db.execute("UPDATE jobs SET status = 'running', started = ?, step = 0, total = 0, eta = NULL, "
                           "message = 'starting' WHERE id = ?", (time.time(), row["id"]))
                db.execute("COMMIT")
                return _row(db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())
            finally:
                db.close()

    def progress(self, job_id: int, step: int, total: int, eta: float | None, message: str) -> None:
        self._run("UPDATE jobs SET step = ?, total = ?, eta = ?, message = ? WHERE id = ? AND status = 'running'",
                  (step, total, eta, message, job_id))

    def note(self, job_id: int, message: str) -> None:
        self._run("UPDATE jobs SET message = ? WHERE id = ?", (message, job_id))

    def finish(self, job_id: int, status: str, message: str = "", video: str | None = None) -> None:
        assert status in FINAL, status
        self._run("UPDATE jobs SET status = ?, message = ?, video = ?, eta = NULL, finished = ? WHERE id = ?",
                  (status, message, video, time.time(), job_id))

    def cancel(self, job_id: int) -> str | None:
        """Cancel a queued job now; a running one is only marked here (the worker stops it).
        Returns the job's status before the call (None: no such job)."""
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is not None and row["status"] == "queued":
                    db.execute("UPDATE jobs SET status = 'cancelled', message = 'cancelled before it started', "
                               "finished = ? WHERE id = ?", (time.time(), job_id))
                elif row is not None and row["status"] == "running":
                    db.execute("UPDATE jobs SET message = 'stopping' WHERE id = ?", (job_id,))
                db.execute("COMMIT")
                return None if row is None else row["status"]
            finally:
                db.close()


def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    if "params" in d:
        d["params"] = json.loads(d["params"])
    return d
