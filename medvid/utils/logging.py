"""Logging set-up: one logger per run, to the console and to ``log.txt``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER_NAME = "medvid"


def get_logger(name: str | None = None) -> logging.Logger:
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO, rank: int = 0) -> logging.Logger:
    """Console + file logging for rank 0; other ranks log warnings only."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level if rank == 0 else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if not any(isinstance(h, logging.StreamHandler) and getattr(h, "_medvid", False) for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        h._medvid = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    if log_file is not None and rank == 0:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == log_file.resolve() for h in logger.handlers):
            fh = logging.FileHandler(log_file, encoding="utf-8")
            fh.setFormatter(fmt)
            logger.addHandler(fh)
    logger.propagate = False
    return logger
