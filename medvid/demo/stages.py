"""Resumable pipeline stages for long multi-step jobs (the demo, scripted runs).

A stage is done when its marker ``OUT/.stages/<name>.json`` exists; the marker holds what the stage
returned (paths, numbers), so a re-run skips finished stages and later stages still get their
inputs. Stages that train write their own checkpoints and resume from them, so an interrupted
stage continues where it stopped rather than starting over.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from medvid.data.manifest import write_json


@dataclass
class StageRunner:
    out_dir: Path
    log: Callable[[str], None] = print
    results: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def marker(self, name: str) -> Path:
        return Path(self.out_dir) / ".stages" / f"{name}.json"

    def done(self, name: str) -> bool:
        return self.marker(name).is_file()

    def run(self, name: str, fn: Callable[[], dict[str, Any]], title: str | None = None) -> dict[str, Any]:
        m = self.marker(name)
        if m.is_file():
            self.results[name] = json.loads(m.read_text())
            self.log(f"[{name}] already done (delete {m} to redo)")
            return self.results[name]
        self.log(f"[{name}] {title or name}")
        t0 = time.perf_counter()
        result = fn() or {}
        dt = time.perf_counter() - t0
        result = {**result, "seconds": round(dt, 2)}
        write_json(m, result, default=str)
        self.results[name] = result
        self.timings[name] = dt
        self.log(f"[{name}] finished in {dt:.1f} s")
        return result
