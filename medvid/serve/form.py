"""The job form's values -> job parameters, with every bound checked and a message for the page."""

from __future__ import annotations

import base64
import binascii
import io
import math
import secrets
from dataclasses import dataclass
from typing import Any

from medvid.serve.backend import Capabilities

MAX_SEED = 2**32 - 1


@dataclass
class Limits:
    max_prompt_chars: int = 1000
    max_steps: int = 250
    max_frames: int = 129
    max_queue: int = 20
    max_guidance: float = 20.0
    max_image_mb: float = 10.0
    max_image_side: int = 4096

    def __post_init__(self) -> None:
        for k in ("max_prompt_chars", "max_steps", "max_frames", "max_queue"):
            if getattr(self, k) < 1:
                raise ValueError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(self, k)}")


class FormError(ValueError):
    """A value the page must correct; ``field`` names the form field it belongs to."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _int(body: dict, key: str, lo: int, hi: int, label: str, default: int | None = None) -> int:
    v = body.get(key)
    if v in (None, ""):
        if default is None:
            raise FormError(key, f"{label}: enter a whole number from {lo} to {hi}")
        return default
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise FormError(key, f"{label}: {str(v)[:40]!r} is not a number; enter a whole number from {lo} to {hi}") from None
    if not f.is_integer() or not lo <= f <= hi:
        raise FormError(key, f"{label}: {v} is out of range; enter a whole number from {lo} to {hi}")
    return int(f)


def _text(body: dict, key: str, limit: int, label: str) -> str | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise FormError(key, f"{label} must be text")
    if len(v) > limit:
        raise FormError(key, f"{label} is {len(v)} characters long; shorten it to at most {limit}")
    return v.strip()


def job_params(body: Any, caps: Capabilities, limits: Limits) -> dict[str, Any]:
    """Checked job parameters from the submitted form (a JSON object). Raises :class:`FormError`."""
    if not isinstance(body, dict):
        raise FormError("", "the request must be a JSON object of form fields")
    p: dict[str, Any] = {}
    if caps.conditioning == "text":
        prompt = _text(body, "prompt", limits.max_prompt_chars, "Prompt")
        if not prompt:
            raise FormError("prompt", "Prompt: describe the video to make (for example the view, anatomy and motion)")
        p["prompt"] = prompt
        negative = _text(body, "negative_prompt", limits.max_prompt_chars, "Negative prompt")
        # MedSora: empty = the null text (None); Wan: None = MedGen's default, "" = no negative prompt.
        p["negative_prompt"] = (negative or None) if caps.model == "medsora" else negative
    elif caps.conditioning == "class":
        p["class_id"] = _int(body, "class_id", 0, caps.num_classes - 1, "Class")
    p["seed"] = _int(body, "seed", 0, MAX_SEED, "Seed", default=secrets.randbelow(2**31))
    p["steps"] = _int(body, "steps", 1, limits.max_steps, "Steps", default=min(caps.steps, limits.max_steps))
    if caps.guidance is None:
        g = body.get("guidance")
        if g not in (None, "") and g != 1 and g != "1":
            raise FormError("guidance", "Guidance: this model is unconditional, so guidance does not apply")
        p["guidance"] = 1.0
    else:
        p["guidance"] = _guidance(body, caps.guidance, limits.max_guidance)
    if caps.num_frames is not None:
        hi = limits.max_frames
        n = _int(body, "num_frames", 5, hi, "Frames", default=min(caps.num_frames, hi))
        if n % 4 != 1:
            raise FormError("num_frames", f"Frames: Wan makes 4k+1 frames (5, 9, 13, ..., 81); {n} is not one, "
                                          f"try {max(5, (n // 4) * 4 + 1)}")
        p["num_frames"] = n
    elif body.get("num_frames") not in (None, ""):
        raise FormError("num_frames", "Frames: this MedSora checkpoint makes the clip length it was trained on")
    image = body.get("image")
    if image:
        if not caps.first_frame:
            raise FormError("image", "First frame: this checkpoint makes videos from text only (no image-to-video)")
        p["image_png"] = decode_image(image, limits)
    return p


def _guidance(body: dict, default: float, hi: float) -> float:
    v = body.get("guidance")
    if v in (None, ""):
        return default
    try:
        g = float(v)
    except (TypeError, ValueError):
        raise FormError("guidance", f"Guidance: {str(v)[:40]!r} is not a number; enter one from 0 to {hi:g}") from None
    if not math.isfinite(g) or not 0 <= g <= hi:
        raise FormError("guidance", f"Guidance: {v} is out of range; enter a number from 0 to {hi:g} (1 = no guidance)")
    return g


def decode_image(data_url: Any, limits: Limits) -> bytes:
    """A ``data:image/...;base64,`` URL from the page -> PNG bytes of the checked RGB image."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data_url, str) or not data_url.startswith("data:image/") or ";base64," not in data_url:
        raise FormError("image", "First frame: choose a PNG or JPEG image file")
    raw_b64 = data_url.split(";base64,", 1)[1]
    if len(raw_b64) * 3 / 4 > limits.max_image_mb * 2**20:
        raise FormError("image", f"First frame: the file is larger than {limits.max_image_mb:g} MB; use a smaller image")
    try:
        raw = base64.b64decode(raw_b64, validate=True)
        img = Image.open(io.BytesIO(raw))
        if img.format not in ("PNG", "JPEG"):
            raise FormError("image", f"First frame: {img.format} images are not accepted; use PNG or JPEG")
        if max(img.size) > limits.max_image_side:
            raise FormError("image", f"First frame: {img.size[0]}x{img.size[1]} pixels is too large; "
                                     f"use at most {limits.max_image_side} pixels a side")
        img = img.convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise FormError("image", "First frame: the file is not a readable PNG or JPEG image") from None
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
