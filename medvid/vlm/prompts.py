"""Editable prompt templates (``medvid/prompts/*.txt``): ``[section]`` blocks of text with
``{placeholders}``; lines starting with ``#`` are comments."""

from __future__ import annotations

import re
import string
from pathlib import Path

from medvid.utils.text import read_text

PROMPT_DIR = Path(__file__).resolve().parent.parent / "prompts"


def default_template(name: str) -> Path:
    return PROMPT_DIR / f"{name}.txt"


def load_template(path: str | Path, sections: tuple[str, ...], placeholders: set[str]) -> dict[str, str]:
    """Read a template file -> ``{section: text}``; checks sections and placeholder names."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt template {path} does not exist; copy one from {PROMPT_DIR} and edit it")
    out: dict[str, list[str]] = {}
    current = None
    for line in read_text(path).splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"\s*\[([A-Za-z0-9_]+)\]\s*", line)
        if m:
            current = m.group(1)
            out[current] = []
        elif current is not None:
            out[current].append(line)
    missing = [s for s in sections if s not in out]
    if missing:
        raise ValueError(f"prompt template {path}: missing section(s) {missing}; it needs "
                         + ", ".join(f"[{s}]" for s in sections))
    texts = {k: "\n".join(v).strip() for k, v in out.items() if k in sections}
    for k, text in texts.items():
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
        except ValueError as e:
            raise ValueError(f"prompt template {path} [{k}]: {e}; write literal braces as {{{{ and }}}}") from e
        unknown = sorted(used - placeholders)
        if unknown:
            raise ValueError(f"prompt template {path} [{k}]: unknown placeholder(s) {unknown}; "
                             f"available: {sorted(placeholders)}")
    return texts
