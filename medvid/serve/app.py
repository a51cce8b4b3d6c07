"""The web app: a FastAPI application serving one plain page (no external assets) and a JSON API.

    GET  /                      the page (page.html, page.css, page.js from this package)
    GET  /api/info              what the checkpoint can do, the bounds, the evaluation reports
    GET  /api/jobs              the queue (active jobs and the latest finished ones)
    POST /api/jobs              a new job from the form's values (JSON); 400 with a message on bad values
    POST /api/jobs/{id}/cancel  cancel a queued or running job
    GET  /api/gallery           finished videos with their sidecars and judge scores
    GET  /files/{path}          a file of the gallery folder (nothing outside it, ever)

Safety: every request must carry the access token when one is set (header ``Authorization: Bearer``
or ``X-Medvid-Token``, the cookie the page gets from ``/?token=...``, or ``?token=``); when the
server listens on loopback, requests must name a loopback host (no DNS rebinding); a request that
changes something must come from the page's own origin and be JSON (no cross-site form posts).
"""

from __future__ import annotations

import json
import secrets
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from medvid.serve.backend import Backend, Capabilities
from medvid.serve.form import FormError, Limits, job_params
from medvid.serve.gallery import SERVED_SUFFIXES, find_reports, list_videos, safe_file
from medvid.serve.jobs import FINAL, JobQueue
from medvid.serve.worker import Worker
from medvid.t2v.prompts import slugify
from medvid.utils.logging import get_logger

log = get_logger("serve")

TOKEN_COOKIE = "medvid_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ASSETS = {"/app.css": ("page.css", "text/css"), "/app.js": ("page.js", "text/javascript")}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self'; "
            "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
# Served report.html files run in a sandbox (a unique origin): they can show their data: images but
# never act on the server with the page's cookie.
FILE_CSP = "sandbox; default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'"


def _asset(name: str) -> str:
    return resources.files("medvid.serve").joinpath(name).read_text(encoding="utf-8")


def _host_name(host_header: str) -> str:
    """'127.0.0.1:7860' -> '127.0.0.1'; '[::1]:7860' -> '::1'."""
    return urlsplit("//" + host_header).hostname or ""


def create_app(backend: Backend, out_dir: str | Path, limits: Limits | None = None, token: str | None = None,
               loopback_only: bool = True):
    """The FastAPI app serving ``out_dir``; its worker thread starts with the app and stops with it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    limits = limits or Limits()
    caps: Capabilities = backend.caps
    queue = JobQueue(out)
    requeued = queue.requeue_interrupted()
    if requeued:
        log.info("%d job(s) interrupted by the last stop are queued again", requeued)
    worker = Worker(queue, backend, out)

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="medvid", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def error(status: int, message: str, field: str = "") -> JSONResponse:
        return JSONResponse({"error": message, "field": field}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = _host_name(request.headers.get("host", ""))
        if loopback_only and host not in LOOPBACK_HOSTS:
            return PlainTextResponse("Open this page at http://127.0.0.1 (the server accepts local requests only).",
                                     status_code=403)
        if token is not None:
            given = (request.headers.get("x-medvid-token") or request.cookies.get(TOKEN_COOKIE)
                     or request.query_params.get("token") or "")
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not secrets.compare_digest(given.encode(), token.encode()):
                return PlainTextResponse("This medvid server needs its access token: open the link that "
                                         "`medvid serve` printed (http://HOST:PORT/?token=...).", status_code=401)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
                return PlainTextResponse("cross-site request refused", status_code=403)
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return error(415, "send the form as JSON (Content-Type: application/json)")
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - the page gets a message, the log gets the traceback
            log.exception("%s %s failed", request.method, request.url.path)
            return error(500, "the server hit an internal error; the details are in its log")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.get("/")
    async def page(request: Request):
        if token is not None and request.query_params.get("token"):
            # Trade the token in the link for a cookie, so it does not stay in the address bar.
            r = RedirectResponse("/", status_code=303)
            r.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return r
        return HTMLResponse(_asset("page.html"), headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"})

    for path, (name, media) in ASSETS.items():
        app.add_api_route(path, (lambda name=name, media=media: Response(_asset(name), media_type=media)),
                          methods=["GET"])

    # Plain `def` handlers run in FastAPI's thread pool: their file and database reads never block the loop.
    @app.get("/api/info")
    def info():
        from medvid import __version__

        return {"capabilities": asdict(caps) | {"checkpoint_name": Path(caps.checkpoint).name},
                "limits": asdict(limits), "reports": find_reports(out), "device": backend.device,
                "version": __version__}

    @app.get("/api/jobs")
    def jobs():
        return {"jobs": [_public(j) for j in queue.recent()],
                "model": {"ready": backend.loaded, "error": worker.load_error}}

    @app.post("/api/jobs")
    async def submit(request: Request):
        # Read at most what a form with the largest first frame can be (base64 is 4/3 of the bytes).
        limit = int(limits.max_image_mb * 2**20 * 4 / 3) + 2**20
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                return error(413, f"the form is larger than {limit // 2**20} MB; use a smaller first frame", "image")
        try:
            body = json.loads(raw)
        except ValueError:
            return error(400, "the form could not be read (malformed JSON)")
        return await run_in_threadpool(add_job, body)

    def add_job(body: Any) -> JSONResponse:
        try:
            params = job_params(body, caps, limits)
        except FormError as e:
            return error(400, str(e), e.field)
        if queue.count_active() >= limits.max_queue:
            return error(429, f"The queue is full ({limits.max_queue} videos waiting or being made). "
                              "Wait for some to finish, or cancel one.")
        png = params.pop("image_png", None)
        if png is not None:
            rel = f"uploads/{uuid.uuid4().hex}.png"
            (out / "uploads").mkdir(exist_ok=True)
            (out / rel).write_bytes(png)
            params["image"] = rel
        params["served_by"] = caps.identity()
        job = queue.submit(lambda i: _video_name(out, i, caps, params), params)
        worker.wake()
        return JSONResponse({"job": _public(job)}, status_code=201)

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: int):
        before = queue.cancel(job_id)
        if before is None:
            return error(404, f"there is no job {job_id}")
        if before in FINAL:
            return error(409, f"job {job_id} is already {before}")
        if before == "running":
            worker.cancel(job_id)
        return {"job": _public(queue.get(job_id))}

    @app.get("/api/gallery")
    def gallery():
        return {"videos": list_videos(out), "reports": find_reports(out)}

    @app.get("/files/{rel:path}")
    def files(rel: str, download: bool = False):
        path = safe_file(out, rel)
        if path is None:
            return PlainTextResponse("not found", status_code=404)
        headers = {"Content-Security-Policy": FILE_CSP}
        return FileResponse(path, media_type=SERVED_SUFFIXES[path.suffix.lower()], headers=headers,
                            filename=path.name if download else None,
                            content_disposition_type="attachment" if download else "inline")

    return app


def _video_name(out: Path, job_id: int, caps: Capabilities, params: dict[str, Any]) -> str:
    if caps.conditioning == "text":
        stem = slugify(params["prompt"])
    elif caps.conditioning == "class":
        stem = f"class-{params['class_id']}"
    else:
        stem = "sample"
    name = f"{job_id:05d}-{stem}"
    if (out / f"{name}.json").exists() or (out / f"{name}.mp4").exists():  # a queue file deleted by hand
        name = f"{name}-{uuid.uuid4().hex[:6]}"
    return name


def _public(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """A job as the page sees it (the video as a URL under /files)."""
    if job is None:
        return None
    d = dict(job)
    d["video_url"] = f"files/{d['video']}" if d.get("video") else None
    return d
