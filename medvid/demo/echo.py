"""The embedded default data: real echocardiogram cine loops that ship inside pydicom / pydicom-data.

* ``color3d_jpeg_baseline.dcm`` (pydicom-data, MIT): an apical four-chamber echocardiogram,
  120 frames, 480x640 RGB, 30 fps (four seconds, several heartbeats).
* ``examples_ybr_color.dcm`` (pydicom, MIT): frames 0-29 of the same study at 240x320. It is *not*
  an independent recording (we checked: frame i matches frame i of the long study), so holding it
  out would leak training frames into the evaluation.

The demo therefore splits the long study in time: the first ``train_frames`` frames become the
training video and the remaining frames (later heartbeats, never seen in training) the held-out
video. Both are written as uncompressed RGB multi-frame DICOM files, so the demo exercises the
same DICOM reader a user's own cine loops go through. When pydicom-data is not installed, the
30-frame loop is split the same way (with a warning: it is only one heartbeat long).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medvid.utils.logging import get_logger

log = get_logger("demo")

CAPTION = (
    "Transthoracic echocardiogram, apical four-chamber view: the ventricles contract and relax "
    "while the mitral and tricuspid valves open and close."
)


def echo_source() -> tuple[Path, str]:
    """(path, name) of the longest echocardiogram available offline."""
    from pydicom.data import get_testdata_file

    try:
        long = get_testdata_file("color3d_jpeg_baseline.dcm")
    except Exception:  # pydicom-data absent: pydicom looks it up and may raise or return None
        long = None
    if long:
        return Path(long), "color3d_jpeg_baseline.dcm (pydicom-data)"
    short = get_testdata_file("examples_ybr_color.dcm")
    log.warning("pydicom-data is not installed: using the 30-frame loop (pip install pydicom-data for the 120-frame study)")
    return Path(short), "examples_ybr_color.dcm (pydicom)"


def write_segment(ds, frames: np.ndarray, path: Path, description: str) -> Path:
    """Write RGB uint8 frames (T, H, W, 3) as an uncompressed multi-frame DICOM based on ``ds``."""
    import copy

    out = copy.deepcopy(ds)
    out.set_pixel_data(np.ascontiguousarray(frames), photometric_interpretation="RGB", bits_stored=8)
    out.NumberOfFrames = int(frames.shape[0])
    out.SeriesDescription = description
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    out.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)
    return path


def export_echo_dataset(out_dir: str | Path, train_fraction: float = 0.75) -> dict:
    """Write ``out_dir/{train,heldout}`` DICOMs and ``out_dir/metadata.csv`` (path, split, caption)."""
    import pydicom

    out_dir = Path(out_dir)
    src, name = echo_source()
    ds = pydicom.dcmread(src)
    frames = ds.pixel_array  # pydicom 3 already converts YBR to RGB: (T, H, W, 3) uint8
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{src}: expected an RGB cine loop, got pixel array {frames.shape}")
    n = frames.shape[0]
    cut = int(round(n * train_fraction))
    files = {
        "train": write_segment(ds, frames[:cut], out_dir / "echo_a4c_train.dcm", f"frames 0-{cut - 1} of {name}"),
        "val": write_segment(ds, frames[cut:], out_dir / "echo_a4c_heldout.dcm", f"frames {cut}-{n - 1} of {name}"),
    }
    meta = out_dir / "metadata.csv"
    with open(meta, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "split", "caption", "category"])
        for split, p in files.items():
            w.writerow([p.name, split, CAPTION, "echocardiography"])
    return {"source": name, "frames": n, "train_frames": cut, "heldout_frames": n - cut,
            "height": int(frames.shape[1]), "width": int(frames.shape[2]), "metadata": str(meta)}
