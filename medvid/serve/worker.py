"""The single worker thread of `medvid serve`: one job at a time on the server's device.

Progress (step k of n, ETA) is written to the queue as the sampler reports each step; a cancel
request makes the next step raise, which stops the video before anything is written.
"""

from __future__ import annotations

import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from medvid.serve.backend import Backend
from medvid.serve.jobs import JobQueue
from medvid.utils.logging import get_logger

log = get_logger("serve")

PROGRESS_EVERY = 0.25  # seconds between progress writes (the first and last steps are always written)


class JobStopped(Exception):
    """Raised from the step callback to stop a video (cancelled job or server shutting down)."""


class Worker(threading.Thread):
    def __init__(self, queue: JobQueue, backend: Backend, out_dir: Path, poll_s: float = 1.0):
        super().__init__(name="medvid-serve-worker", daemon=True)
        self.queue, self.backend, self.out_dir, self.poll_s = queue, backend, Path(out_dir), poll_s
        self._wake = threading.Event()
        self._stop_event = threading.Event()
        self._cancelled: set[int] = set()
        self.load_error: str | None = None

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop_event.set()
        self._wake.set()

    def cancel(self, job_id: int) -> None:
        """Stop ``job_id`` at its next step if it is running."""
        self._cancelled.add(job_id)

    def run(self) -> None:
        try:
            self.backend.load()
        except Exception as e:  # noqa: BLE001 - shown in the page; each job reports it again when it tries
            log.exception("the model could not be loaded")
            self.load_error = str(e)
        while not self._stop_event.is_set():
            job = self.queue.claim_next()
            if job is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            self.run_job(job)

    @contextmanager
    def _device_turn(self, job_id: int):
        """Hold the device's lock file while a video is made: servers sharing a device take turns."""
        import fcntl

        name = "".join(c if c.isalnum() else "-" for c in str(self.backend.device))
        with open(Path(tempfile.gettempdir()) / f"medvid-serve-{name}.lock", "a+") as fh:
            waiting = False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if job_id in self._cancelled or self._stop_event.is_set():
                        raise JobStopped from None
                    if not waiting:
                        self.queue.note(job_id, f"waiting: another medvid serve is using {self.backend.device}")
                        waiting = True
                    time.sleep(0.5)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def run_job(self, job: dict) -> None:
        job_id = job["id"]
        self.queue.note(job_id, "starting" if self.backend.loaded else "loading the model (first video only)")
        t0 = time.monotonic()
        clock = {"first": None, "written": 0.0}

        def on_step(k: int, n: int) -> None:
            if job_id in self._cancelled or self._stop_event.is_set():
                raise JobStopped
            now = time.monotonic()
            if clock["first"] is None:
                clock["first"] = now  # the rate is measured from the first step on (model loading excluded)
            # ETA from the mean time per step so far; unknown until two steps are done.
            eta = (now - clock["first"]) / (k - 1) * (n - k) if k > 1 else None
            if k in (1, n) or now - clock["written"] >= PROGRESS_EVERY:
                message = "decoding and writing the video" if k == n else f"step {k} of {n}"
                self.queue.progress(job_id, k, n, eta, message)
                clock["written"] = now

        served = job["params"].get("served_by")
        if served not in (None, self.backend.caps.identity()):
            self.queue.finish(job_id, "failed", f"queued for {served['model']} {served['checkpoint']}, but this server "
                                                "runs another model; submit it again")
            return
        try:
            with self._device_turn(job_id):
                mp4 = self.backend.run(job["name"], job["params"], self.out_dir, on_step)
        except JobStopped:
            if self._stop_event.is_set() and job_id not in self._cancelled:
                return  # server shutting down: the job stays running and is queued again at the next start
            self.queue.finish(job_id, "cancelled", "cancelled while it ran")
        except (ValueError, FileNotFoundError) as e:  # bad input, missing weights: the message says the fix
            log.warning("job %d failed: %s", job_id, e)
            self.queue.finish(job_id, "failed", str(e))
        except Exception as e:  # noqa: BLE001 - one failed video never stops the server
            log.exception("job %d failed", job_id)
            self.queue.finish(job_id, "failed", f"{type(e).__name__}: {e} (details in the server's log)")
        else:
            self.queue.finish(job_id, "done", f"made in {time.monotonic() - t0:.1f} s", video=mp4.name)
        finally:
            self._cancelled.discard(job_id)
