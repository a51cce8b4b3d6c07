"""Atomic, pickle-free checkpoint folders.

A checkpoint is a folder ``OUT/step-00001000/`` holding

* ``<name>.safetensors`` for every tensor group (model, ema, optimizer tensors, RNG states, ...),
* ``state.json``: everything that is not a tensor (step, epoch, data position, scheduler state,
  optimizer hyper-parameters), with ``{"__tensor__": "group/key"}`` placeholders where tensors were,
* ``config.yaml``: the resolved run config.

It is written into a hidden temporary folder and renamed into place, and ``OUT/latest`` is
replaced atomically afterwards, so a process killed while saving (or a full disk) never damages the
last good checkpoint. Loading reads safetensors and JSON only: no pickled code is ever executed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

STEP_DIR = re.compile(r"^step-(\d{8,})$")


class CheckpointError(RuntimeError, ValueError):
    """A checkpoint that cannot be written or read."""


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested structure into (tensors by key, JSON skeleton with placeholders)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(o: Any, path: str) -> Any:
        if isinstance(o, torch.Tensor):
            key = path or "value"
            tensors[key] = o.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(o, dict):
            # JSON keys are strings; remember int keys (optimizer state is keyed by param index).
            return {
                "__dict__": [[k, walk(v, f"{path}.{k}" if path else str(k))] for k, v in o.items()]
            }
        if isinstance(o, (list, tuple)):
            items = [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(o)]
            return {"__tuple__": items} if isinstance(o, tuple) else items
        if isinstance(o, float) and (o != o or o in (float("inf"), float("-inf"))):
            return {"__float__": repr(o)}
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise CheckpointError(f"cannot store a {type(o).__name__} at {path!r} in a checkpoint")

    skeleton = walk(obj, prefix)
    return tensors, skeleton


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def walk(o: Any) -> Any:
        if isinstance(o, dict):
            if "__tensor__" in o:
                return tensors[o["__tensor__"]]
            if "__dict__" in o:
                return {k: walk(v) for k, v in o["__dict__"]}
            if "__tuple__" in o:
                return tuple(walk(v) for v in o["__tuple__"])
            if "__float__" in o:
                return float(o["__float__"])
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    return walk(skeleton)


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders under ``out_dir``, oldest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
    found = [p for p in found if (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (``OUT/latest`` if valid, else the highest step folder)."""
    out_dir = Path(out_dir)
    marker = out_dir / "latest"
    if marker.is_file():
        cand = out_dir / marker.read_text().strip()
        if (cand / "state.json").is_file():
            return cand
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    groups: dict[str, Any],
    state: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write ``out_dir/step-XXXXXXXX`` atomically and return its path.

    ``groups`` maps a file name (``model``, ``ema``, ``optimizer``...) to a state dict or any nested
    structure of tensors and plain values. Plain state dicts of tensors are stored as-is, so
    ``model.safetensors`` opens in any safetensors tool.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / step_dir_name(step)
    tmp = out_dir / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        skeletons: dict[str, Any] = {}
        for name, obj in groups.items():
            if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
                tensors = {k: v.detach().cpu().contiguous() for k, v in obj.items()}
                skeletons[name] = "safetensors"
            else:
                tensors, skeletons[name] = flatten_state(obj)
            # safetensors refuses tensors that share storage; clone to be safe.
            tensors = {k: v.clone() for k, v in tensors.items()}
            save_file(tensors, str(tmp / f"{name}.safetensors"), metadata={"format": "pt"})
        doc = {"step": step, "groups": skeletons, "state": flatten_state(state or {})[1]}
        state_tensors, _ = flatten_state(state or {})
        if state_tensors:
            raise CheckpointError("put tensors in `groups`, not in `state` (state.json is JSON only)")
        (tmp / "state.json").write_text(json.dumps(doc, indent=1))
        if config is not None:
            (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving the same step: move the old one aside first
            old = out_dir / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(out_dir)
        marker_tmp = out_dir / f".latest-{os.getpid()}"
        marker_tmp.write_text(final.name)
        os.replace(marker_tmp, out_dir / "latest")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        hint = " (the disk is full: free space or point --out elsewhere)" if e.errno == 28 else ""
        raise CheckpointError(
            f"could not write checkpoint {final}: {e.strerror or e}{hint}; "
            f"the previous checkpoint {latest_checkpoint(out_dir)} is intact"
        ) from e
    if keep_last:
        for old in list_checkpoints(out_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, groups: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """Read a checkpoint folder -> (groups, state, config). Never unpickles anything.

    ``path`` may be a run folder (its latest checkpoint is used) or a ``step-*`` folder.
    """
    path = Path(path)
    if not (path / "state.json").is_file():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(
                f"{path} is not a checkpoint folder (no state.json) and holds no step-* checkpoints"
            )
        path = latest
    try:
        doc = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / 'state.json'} is unreadable: {e}") from e
    out: dict[str, Any] = {}
    for name, skel in doc["groups"].items():
        if groups is not None and name not in groups:
            continue
        f = path / f"{name}.safetensors"
        try:
            tensors = load_file(str(f))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{f} is damaged or missing: {e}") from e
        out[name] = tensors if skel == "safetensors" else unflatten_state(skel, tensors)
    state = unflatten_state(doc.get("state", {}), {})
    state.setdefault("step", doc["step"])
    cfg_file = path / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else None
    return out, state, config


def rng_state() -> dict[str, Any]:
    """All RNG states needed to continue a run exactly (torch CPU/CUDA, numpy, python)."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    py_state = random.getstate()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype("int64")), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached"]))
    p = st["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(st["cuda"]))
