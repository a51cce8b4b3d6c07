"""Tiny random MedSora checkpoints laid out as `medvid train` writes them (text, class, unconditional),
and a running `medvid serve` in a subprocess."""

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

LATENT = (2, 4, 8, 8)  # (F, C, h, w): the tiny random VAE decodes it to 8 frames of 64x64


def _t2v_helpers():
    """tests/t2v/conftest.py's offline tokenizer and T5 builders."""
    spec = importlib.util.spec_from_file_location("t2v_tiny_encoders", Path(__file__).parents[1] / "t2v" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_checkpoint(out: Path, conditioning: str, t5_dir: Path | None = None) -> Path:
    from medvid.models import create_model
    from medvid.utils.checkpoint import save_checkpoint

    kw = {"context_dim": 32} if conditioning == "text" else {"num_classes": 3} if conditioning == "class" else {}
    torch.manual_seed(0)
    model = create_model("medsora-s", depth=2, hidden_size=32, input_size=8, in_channels=4, d_state=8, headdim=16,
                         patch_size=2, **kw)
    with torch.no_grad():  # adaLN-zero output layers would make every video the same at init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    sd = model.state_dict()
    state = {"model_config": dict(model.config), "latent_shape": list(LATENT), "learn_sigma": True,
             "diffusion": {"num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
             "vae": "tiny-random(seed=0)", "num_classes": 3 if conditioning == "class" else 0}
    config = {"sample": {"steps": 20, "fps": 8.0}}
    if conditioning == "text":
        config["text"] = {"enabled": True, "encoder": "t5", "encoder_path": str(t5_dir), "caption_field": "caption",
                          "dropout": 0.1, "max_length": 16, "cache_dir": None}
    save_checkpoint(out, 10, {"model": sd, "ema": sd}, state=state, config=config)
    return out


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory):
    h = _t2v_helpers()
    d = tmp_path_factory.mktemp("tiny-t5")
    tok = h.make_tokenizer()
    h.make_t5(len(tok)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def text_checkpoint(t5_dir, tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("medsora-text"), "text", t5_dir)


class Server:
    """`python -m medvid serve ...` in a subprocess, on a free port of 127.0.0.1."""

    def __init__(self, *args: str, log: Path):
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "medvid.cli", "serve", "--port", "0", *args],
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180  # importing torch, diffusers and transformers on a busy machine
        while time.monotonic() < deadline:
            text = log.read_text()
            if "medvid serve: http" in text:
                self.url = text.split("medvid serve: ", 1)[1].split()[0]
                self.base = self.url.split("?")[0]
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"medvid serve exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"medvid serve did not start in 180 s:\n{log.read_text()}")

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(timeout=20)


class GatedBackend:
    """A stand-in for :class:`medvid.serve.backend.Backend` whose jobs wait for ``release`` between
    steps and write a small real video with the same mp4 + sidecar as the real ones."""

    def __init__(self, caps, steps: int = 4):
        import threading

        self.caps, self.device, self.steps = caps, "cpu", steps
        self.release = threading.Semaphore(0)
        self.loaded = True
        self.started: list[str] = []

    def load(self) -> None:
        pass

    def run(self, name, params, out_dir, on_step):
        import numpy as np

        from medvid.t2v.generate import save_video, video_record

        self.started.append(name)
        for k in range(1, self.steps + 1):
            assert self.release.acquire(timeout=30), "the test never released the job"
            on_step(k, self.steps)
        frames = np.zeros((4, 16, 16, 3), np.uint8)
        return save_video(out_dir, frames, 4.0, video_record(
            name=name, prompt=params.get("prompt"), negative_prompt=None, seed=params["seed"], model="medsora",
            checkpoint="ck", lora=None, source={}, settings={"steps": params["steps"]}, frames=frames, seconds=0.1))


class AppServer:
    """An app from :func:`medvid.serve.app.create_app` served by uvicorn in a thread of this process."""

    def __init__(self, app):
        import socket
        import threading

        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def request(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None):
        """-> (status, headers, body bytes); ``path`` is sent exactly as given (no normalisation)."""
        import http.client
        import json

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        h = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if body is not None:
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        conn.close()
        return out

    def json(self, method: str, path: str, body=None, headers=None):
        import json

        status, _, data = self.request(method, path, body, headers)
        return status, json.loads(data)

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def app_server(tmp_path, monkeypatch):
    """-> make(caps=None, steps=4, **create_app kwargs) -> (AppServer, GatedBackend); closed after the test.
    The device lock files go to the test's own folder (a real server on this machine is not disturbed)."""
    import tempfile

    from medvid.serve.app import create_app
    from medvid.serve.backend import Capabilities

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    servers = []

    def make(caps=None, steps=4, **kw):
        caps = caps or Capabilities("medsora", "ck", "text", steps=20, guidance=4.0, negative_prompt="")
        backend = GatedBackend(caps, steps)
        s = AppServer(create_app(backend, tmp_path / "gallery", **kw))
        servers.append((s, backend))
        return s, backend

    yield make
    for s, backend in servers:
        for _ in range(100):
            backend.release.release()  # let a job that is still waiting finish
        s.close()
