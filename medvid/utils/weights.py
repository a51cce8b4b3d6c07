"""Pretrained weights are never downloaded at run time: callers pass local paths.

``require_weights`` turns a missing path into an error that names the file the user needs and
where it comes from, so a user with internet access knows what to fetch and a user without it
knows which feature is unavailable.
"""

from __future__ import annotations

from pathlib import Path


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights a feature needs are not on this machine."""

    def __init__(self, what: str, expected: str, path: str | Path | None = None, hint: str = ""):
        self.what, self.expected, self.path = what, expected, path
        where = f"not found at {path}" if path else "no path was given"
        msg = f"{what} needs {expected}: {where}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


def require_weights(path: str | Path | None, what: str, expected: str, hint: str = "") -> Path:
    """Return ``Path(path)`` if it exists, else raise MissingWeightsError naming the needed file."""
    if path is None or str(path) == "" or not Path(path).exists():
        raise MissingWeightsError(what, expected, path, hint)
    return Path(path)
