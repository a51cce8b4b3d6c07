"""``medvid demo --source DIR``: the demo's data stage on a user's own videos.

Every video under ``DIR`` that the readers take (mp4/avi/mov/mkv/webm, DICOM cine, NIfTI 4D, folders
of numbered frames) is split in time: its first part trains and its last ``holdout_tail`` is held
out (``medvid prepare --holdout-tail``), so even one video gives a training and an evaluation set
and the held-out frames are never seen in training. ``prepare`` is resumable (it re-probes only
new or changed files), and the demo's stage marker records which ``DIR`` the run was made from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvid.utils.logging import get_logger

log = get_logger("demo")

SHOWN_REASONS = 12  # skipped inputs listed in the error before "... and N more"


class SourceError(ValueError):
    """``--source`` cannot give a training and a held-out set; the message says what was skipped and why."""


def _skipped_lines(report_path: Path) -> list[str]:
    inputs = json.loads(report_path.read_text(encoding="utf-8"))["inputs"]
    lines = [f"  {r['path']}: {r.get('reason', '')}" for r in inputs if r.get("status") != "kept"]
    if len(lines) > SHOWN_REASONS:
        lines = lines[:SHOWN_REASONS] + [f"  ... and {len(lines) - SHOWN_REASONS} more (all in {report_path})"]
    return lines


def prepare_source(source: str | Path, out: str | Path, *, holdout_tail: float = 0.25, fps: float | None = None) -> dict[str, Any]:
    """``prepare`` the videos under ``source`` into ``out/prepared`` with a per-video temporal split.

    Returns what the demo's data stage returns (``prepared``, the ``prepare`` summary) plus
    ``source``. Raises ``SourceError`` when no video is usable or none is long enough to hold out
    its tail, naming every skipped input with its reason.
    """
    from medvid.data.prepare import prepare

    source = Path(source).expanduser()
    if not source.is_dir():
        raise SourceError(f"--source {source}: not a folder; give a folder of videos (mp4/avi/mov/mkv, DICOM cine, "
                          "NIfTI 4D or folders of numbered frames)")
    if not 0.0 < holdout_tail < 1.0:
        raise SourceError(f"--holdout-tail {holdout_tail}: must be in (0, 1), e.g. 0.25 holds out the last quarter")
    prepared = Path(out) / "prepared"
    summary = prepare(source, prepared, holdout_tail=holdout_tail, fps=fps, progress=False)
    report = Path(summary["report"])
    if summary["kept"] == 0:
        skipped = _skipped_lines(report)
        raise SourceError(
            f"--source {source}: no usable video"
            + (f"; {len(skipped)} input(s) skipped:\n" + "\n".join(skipped) if skipped else " (the folder holds no files)")
            + "\nGive videos the readers take: mp4/avi/mov/mkv/webm, DICOM cine (.dcm), NIfTI 4D (.nii/.nii.gz) "
              "or folders of numbered .png/.jpg frames."
        )
    if summary["val"] == 0:
        raise SourceError(
            f"--source {source}: {summary['kept']} usable video(s), but none is long enough to hold out its last "
            f"{holdout_tail:.0%} (see {report}); give longer videos or raise --holdout-tail"
        )
    for line in _skipped_lines(report):
        log.warning("--source: skipped%s", line)
    log.info("--source %s: %d video(s), %d train / %d held-out segments", source, summary["kept"],
             summary["train"], summary["val"])
    return {"source": str(source.resolve()), "holdout_tail": holdout_tail, "prepare": summary,
            "prepared": str(prepared)}
