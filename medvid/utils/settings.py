"""Settings that flow from one pipeline stage to the next.

Each stage records what it was made with, and the next stage's unset flags take those values:

* ``medvid train-vae`` writes ``VAE_FOLDER/medvid_training.json`` (resolution, frames, stride);
* ``medvid encode`` writes the clip protocol into ``LATENTS/meta.json``;
* ``medvid train`` keeps ``data.*`` in every checkpoint's ``config.yaml``;
* ``medvid sample`` writes ``samples.json`` beside the videos (with the run's clip protocol).

``pick`` is the one rule: an unset flag (``None``) takes the recorded value (or the fallback when
nothing is recorded); a flag that disagrees with the record is refused with both values named, since
e.g. encoding at 128 px with a VAE trained at 64 px, or cutting real clips at another stride than the
generated ones, gives numbers that mean nothing.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

VAE_SETTINGS = "medvid_training.json"


class SettingsMismatch(ValueError):
    """An explicit flag disagrees with what an earlier stage recorded."""


def pick(name: str, flag: Any, recorded: Any, fallback: Any, where: str) -> Any:
    """``flag`` if given and consistent, else the recorded value, else ``fallback``."""
    if flag is None:
        return recorded if recorded is not None else fallback
    if recorded is not None and flag != recorded:
        raise SettingsMismatch(
            f"{name} {flag} disagrees with {where}, which was made with {name} {recorded}; "
            f"drop {name} (it follows {where}) or remake that stage with {name} {flag}"
        )
    return flag


def write_vae_settings(folder: str | os.PathLike, settings: dict[str, Any]) -> Path:
    from medvid.data.manifest import write_json

    return write_json(Path(folder) / VAE_SETTINGS, settings)


def vae_settings(vae: Any) -> dict[str, Any]:
    """What ``medvid train-vae`` recorded in a VAE folder; ``{}`` for a pretrained VAE or a name."""
    if not isinstance(vae, (str, os.PathLike)):
        return {}
    f = Path(vae) / VAE_SETTINGS
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}


def latent_meta(latent_dir: str | os.PathLike) -> dict[str, Any]:
    """``LATENTS/meta.json`` written by ``medvid encode`` (``{}`` when absent)."""
    f = Path(latent_dir) / "meta.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}


def manifest_fps(manifest: str | os.PathLike | None) -> float | None:
    """Median frame rate of a manifest's videos (None when it cannot be read)."""
    if not manifest:
        return None
    from medvid.data.manifest import ManifestError, read_manifest

    try:
        rates = [float(e["fps"]) for e in read_manifest(manifest) if float(e.get("fps") or 0) > 0]
    except (ManifestError, OSError, ValueError):
        return None
    return statistics.median(rates) if rates else None


def clip_fps(source_fps: float | None, frame_stride: int | None) -> float | None:
    """Frame rate of clips that take every ``frame_stride``-th frame of ``source_fps`` video."""
    if not source_fps or not frame_stride:
        return None
    return round(float(source_fps) / int(frame_stride), 4)


def run_protocol(config: dict[str, Any] | None) -> dict[str, Any]:
    """The clip protocol of a ``medvid train`` run (its config's ``data`` section and latent meta)."""
    data = (config or {}).get("data", {}) or {}
    proto = {k: data.get(k) for k in ("num_frames", "frame_stride", "resolution")}
    manifest = data.get("manifest")
    if data.get("source", "latents") == "latents" and data.get("latent_dir"):
        meta = latent_meta(data["latent_dir"])
        proto.update({k: v for k, v in meta.get("protocol", {}).items() if k in proto})
        manifest = meta.get("manifest", manifest)
    proto["manifest"] = manifest
    proto["source_fps"] = manifest_fps(manifest)
    proto["fps"] = clip_fps(proto["source_fps"], proto.get("frame_stride"))
    return proto
