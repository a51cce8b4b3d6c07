"""Reading user-supplied text files: a wrong encoding names the file, the byte and the fix."""

from __future__ import annotations

from pathlib import Path


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """``Path(path).read_text(encoding)``; a file that is not valid text raises a ValueError that names
    it (Python's own ``UnicodeDecodeError`` names only the codec and the byte)."""
    path = Path(path)
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                         "save it as UTF-8") from e
