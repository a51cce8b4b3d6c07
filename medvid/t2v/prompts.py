"""Prompt files for batch generation.

``prompts.json`` is a JSON list whose entries are either strings or objects::

    ["an echocardiogram, apical four-chamber view",
     {"prompt": "laparoscopic cholecystectomy ...", "seed": 7, "negative_prompt": "...", "name": "chole-1"}]

Every entry becomes a :class:`PromptSpec` with a file-safe output ``name`` (default
``0003-first-words-of-prompt``) and a ``seed`` (default ``base_seed + index``), so a batch run is
reproducible and a resumed run finds the videos it already wrote. Mistakes are reported with the
entry's index and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALLOWED_KEYS = ("prompt", "seed", "negative_prompt", "name", "image")
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")


class PromptFileError(ValueError):
    """A prompt file (or one of its entries) that cannot be used."""


@dataclass(frozen=True)
class PromptSpec:
    prompt: str
    seed: int
    name: str
    negative_prompt: str | None = None
    image: str | None = None
    """Image-to-video: the first frame (a path; relative paths resolve against the prompt file)."""


def slugify(text: str, max_words: int = 6) -> str:
    words = re.findall(r"[A-Za-z0-9]+", text.lower())[:max_words]
    return "-".join(words) or "video"


def parse_prompts(entries: Any, source: str = "prompts", base_seed: int = 0) -> list[PromptSpec]:
    """Validate a decoded prompt list -> PromptSpecs. ``source`` names the file in errors."""
    if not isinstance(entries, list):
        raise PromptFileError(
            f"{source}: expected a JSON list of prompts (strings or objects with \"prompt\"), "
            f"got a {type(entries).__name__}"
        )
    if not entries:
        raise PromptFileError(f"{source}: the prompt list is empty; add at least one prompt")
    specs: list[PromptSpec] = []
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):
        where = f"{source}: entry {i}"
        if isinstance(e, str):
            e = {"prompt": e}
        elif not isinstance(e, dict):
            raise PromptFileError(
                f"{where} is a {type(e).__name__}; each entry must be a string or an object with \"prompt\""
            )
        unknown = sorted(set(e) - set(ALLOWED_KEYS))
        if unknown:
            raise PromptFileError(f"{where} has unknown key(s) {unknown}; allowed keys: {list(ALLOWED_KEYS)}")
        if "prompt" not in e:
            raise PromptFileError(f"{where} has no \"prompt\" key; add \"prompt\": \"<text>\"")
        prompt = e["prompt"]
        if not isinstance(prompt, str):
            raise PromptFileError(f"{where}: \"prompt\" must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise PromptFileError(f"{where}: the prompt is empty; write the text to generate or remove the entry")
        seed = e.get("seed", base_seed + i)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise PromptFileError(f"{where}: \"seed\" must be a non-negative integer, got {seed!r}")
        neg = e.get("negative_prompt")
        if neg is not None and not isinstance(neg, str):
            raise PromptFileError(f"{where}: \"negative_prompt\" must be a string, got {type(neg).__name__}")
        name = e.get("name", f"{i:04d}-{slugify(prompt)}")
        if not isinstance(name, str) or not _NAME_OK.match(name):
            raise PromptFileError(
                f"{where}: \"name\" {name!r} is not a usable file name; use letters, digits, '.', '_' or '-'"
            )
        if name in seen:
            raise PromptFileError(f"{where}: \"name\" {name!r} is already used by entry {seen[name]}; names must be unique")
        seen[name] = i
        image = e.get("image")
        if image is not None and (not isinstance(image, str) or not image.strip()):
            raise PromptFileError(f"{where}: \"image\" must be the path of the first frame, got {image!r}")
        specs.append(PromptSpec(prompt=prompt.strip(), seed=int(seed), name=name, negative_prompt=neg, image=image))
    return specs


def load_prompts(path: str | Path, base_seed: int = 0) -> list[PromptSpec]:
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompt file {path} does not exist")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                              "save it as UTF-8 JSON") from e
    except json.JSONDecodeError as e:
        raise PromptFileError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from e
    specs = parse_prompts(entries, source=str(path), base_seed=base_seed)
    from dataclasses import replace

    return [replace(s, image=str(path.parent / s.image)) if s.image and not Path(s.image).is_absolute() else s
            for s in specs]
