"""`medvid serve --checkpoint PATH [--model medsora|wan] [--lora DIR] [--host 127.0.0.1] [--port N]`.

Starts the web app on this machine only (127.0.0.1) unless ``--allow-remote`` is given with another
``--host``; then every request must carry the access token (``--token``, ``$MEDVID_SERVE_TOKEN`` or
a random one printed at start).
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medvid.serve.form import Limits

LOOPBACK = ("127.0.0.1", "localhost", "::1")
LOCK_FILE = ".serve.lock"


@dataclass
class ServeConfig:
    checkpoint: str
    model: Literal["medsora", "wan"] | None = None
    """None: wan for a diffusers folder or train-wan run, medsora for a `medvid train` run."""
    lora: str | None = None
    out: str = "gallery"
    """The gallery folder: videos, their sidecars and the job queue (queue.sqlite)."""
    host: str = "127.0.0.1"
    port: int = 7860
    allow_remote: bool = False
    token: str | None = None
    device: str = "auto"
    height: int | None = None
    width: int | None = None
    limits: Limits | None = None

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK and not self.allow_remote:
            raise ValueError(
                f"--host {self.host}: the app would be reachable from other machines. Add --allow-remote to mean it; "
                "every request will then need the access token (--token, $MEDVID_SERVE_TOKEN, or the one printed)"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port}: choose a port from 1 to 65535 (0 = any free port)")
        if self.token is not None and len(self.token) < 16:
            raise ValueError("--token: use at least 16 characters (or leave it out for a random one)")


def detect_model(checkpoint: str | Path) -> str:
    ck = Path(checkpoint)
    if (ck / "model_index.json").is_file() or ((ck / "config.yaml").is_file() and
                                               ((ck / "lora").is_dir() or (ck / "transformer").is_dir())):
        return "wan"
    return "medsora"


def _lock(out: Path):
    """Hold ``OUT/.serve.lock`` while serving: one server (and so one worker) per gallery folder."""
    import fcntl

    fh = open(out / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise ValueError(f"--out {out}: another `medvid serve` is using this gallery folder; stop it or choose "
                         "another folder") from None
    return fh


def serve(cfg: ServeConfig, ready=None) -> None:
    """Run the app until interrupted. ``ready(url)`` is called once the socket listens."""
    import uvicorn

    from medvid.serve.app import create_app
    from medvid.serve.backend import Backend, inspect_checkpoint
    from medvid.training.distributed import resolve_device

    device = str(resolve_device(cfg.device))  # "cuda" without CUDA: say so before anything starts
    token = cfg.token
    if cfg.allow_remote and cfg.host not in LOOPBACK:
        token = token or os.environ.get("MEDVID_SERVE_TOKEN") or secrets.token_urlsafe(24)
    caps = inspect_checkpoint(cfg.model or detect_model(cfg.checkpoint), cfg.checkpoint, cfg.lora)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    family, kind, proto, _, addr = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        lock.close()
        raise ValueError(f"--host {cfg.host} --port {cfg.port}: cannot listen there ({e.strerror}); "
                         "choose another --port") from None
    port = sock.getsockname()[1]
    shown = cfg.host if cfg.host not in ("0.0.0.0", "::") else socket.gethostname()
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    app = create_app(Backend(caps, device, cfg.height, cfg.width), out, cfg.limits, token,
                     loopback_only=cfg.host in LOOPBACK)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    detail = {"text": "text prompts", "class": f"{caps.num_classes} classes", "none": "unconditional"}[caps.conditioning]
    print(f"medvid serve: {url}\n  {caps.model} ({detail}) from {cfg.checkpoint}; gallery {out.resolve()}", flush=True)
    if ready is not None:
        ready(url)
    try:
        server.run(sockets=[sock])
    finally:
        lock.close()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="medsora: a `medvid train` run folder; wan: a diffusers Wan2.1 folder or train-wan run")
    parser.add_argument("--model", choices=["medsora", "wan"], default=None, help="default: told by the checkpoint folder")
    parser.add_argument("--lora", default=None, help="wan: LoRA folder / .safetensors / train-wan run folder")
    parser.add_argument("--out", default="gallery", help="gallery folder: videos, sidecars, job queue (default: gallery)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="0 = any free port")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a --host other than 127.0.0.1/localhost/::1; requests then need the access token")
    parser.add_argument("--token", default=None, help="access token (default: $MEDVID_SERVE_TOKEN or a random one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--height", type=int, default=None, help="wan: video height (default 480)")
    parser.add_argument("--width", type=int, default=None, help="wan: video width (default 832)")
    parser.add_argument("--max-queue", type=int, default=Limits.max_queue, help="videos waiting or being made at once")
    parser.add_argument("--max-steps", type=int, default=Limits.max_steps)
    parser.add_argument("--max-frames", type=int, default=Limits.max_frames, help="wan: longest clip in frames")
    parser.add_argument("--max-prompt-chars", type=int, default=Limits.max_prompt_chars)


def main(args: argparse.Namespace) -> int:
    from medvid.utils.weights import MissingWeightsError

    try:
        limits = Limits(max_queue=args.max_queue, max_steps=args.max_steps, max_frames=args.max_frames,
                        max_prompt_chars=args.max_prompt_chars)
        serve(ServeConfig(checkpoint=args.checkpoint, model=args.model, lora=args.lora, out=args.out, host=args.host,
                          port=args.port, allow_remote=args.allow_remote, token=args.token, device=args.device,
                          height=args.height, width=args.width, limits=limits))
    except (ValueError, MissingWeightsError) as e:
        print(f"medvid serve: {e}", file=sys.stderr)
        return 2
    return 0
