"""Curation benchmark: per-filter throughput on this CPU, and kept/removed counts on a small set
of real recordings plus synthetic defect clips made from them.

    python benchmarks/curation.py [--repeats 3] [--workers 1]

The set: pydicom's echocardiogram (30 frames 240x320), pydicom-data's colour 3D JPEG echo
(120 frames 480x640), and clips derived from the first one with one defect each (blurred, frozen,
letterboxed, subtitled, an abrupt jump, a re-encoded duplicate, too short), plus one long
"recording" made by concatenating three different shots (scene cuts). Prints two tables and
writes benchmarks/results/curation.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def load_echoes():
    import pydicom
    from pydicom.data import get_testdata_file

    small = pydicom.dcmread(get_testdata_file("examples_ybr_color.dcm")).pixel_array
    paths = {"echo_ybr.dcm": get_testdata_file("examples_ybr_color.dcm")}
    try:
        big_path = get_testdata_file("color3d_jpeg_baseline.dcm")
        big = pydicom.dcmread(big_path).pixel_array
        paths["color3d.dcm"] = big_path
    except Exception:  # noqa: BLE001 - pydicom-data not installed
        big = None
    return small, big, paths


def subtitle(frames):
    out = frames.copy()
    lines = ["PATIENT DOE JOHN 1970 MRN 004213", "STUDY CARDIO LAB 2024 GAIN 45 DEPTH 16 CM",
             "HR 72 BPM FRAME RATE 30 PROBE S5 ADULT", "THIS SUBTITLE EXPLAINS WHAT THE VIEW SHOWS"]
    for f in out:
        for i, line in enumerate(lines):
            cv2.putText(f, line, (8, 120 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def build_set(root: Path):
    import shutil

    from medvid.utils.video import write_mp4

    echo, big, paths = load_echoes()
    for name, p in paths.items():
        shutil.copy(p, root / name)
    fps = 30.0
    # a bright-background version: letterbox bars only show against content that is not black
    bright = (echo * 0.7 + 70).astype(np.uint8)
    flash = echo.copy()
    flash[10] = 255 - flash[10]  # one inverted frame: too short for a scene cut, an abrupt jump
    clips = {
        "defect_blur.mp4": np.stack([cv2.GaussianBlur(f, (0, 0), 4) for f in echo]),
        "defect_frozen.mp4": np.repeat(echo[:1], 30, axis=0),
        "defect_letterbox.mp4": np.pad(bright, ((0, 0), (40, 40), (0, 0), (0, 0))),
        "defect_subtitles.mp4": subtitle(echo),
        "defect_jump.mp4": flash,
        "defect_duplicate.mp4": echo,
        "defect_short.mp4": echo[:10],
    }
    shot2 = (cv2.resize(big[40], (320, 240)) if big is not None else echo[0])[None].repeat(1, 0)
    shot2 = np.stack([np.roll(shot2[0], 2 * i, axis=1) for i in range(60)])
    jet = np.stack([cv2.cvtColor(cv2.applyColorMap(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.COLORMAP_JET),
                                 cv2.COLOR_BGR2RGB) for f in echo])
    shot3 = np.concatenate([jet, jet[::-1]])
    clips["recording_3_shots.mp4"] = np.concatenate([np.concatenate([echo, echo[::-1]]), shot2, shot3])
    for name, frames in clips.items():
        write_mp4(frames, root / name, fps=fps)
    return echo, big


def filter_throughput(echo, big, repeats: int):
    from medvid.curation.dedup import clip_hashes
    from medvid.curation.filters import (BlurFilter, BorderFilter, JumpFilter, SizeFilter, StaticFilter,
                                         TextFilter, find_content_box)
    from medvid.curation.scenes import HistogramCutDetector, have_pyscenedetect

    filters = {
        "size": SizeFilter(), "border (Canny+Hough)": BorderFilter(), "blur (Laplacian)": BlurFilter(),
        "static (DIS flow)": StaticFilter(), "jump (frame diff)": JumpFilter(),
        "text (opencv)": TextFilter(engine="opencv"),
        "crop box": lambda f, fps: find_content_box(f), "dedup (pHash)": lambda f, fps: clip_hashes(f),
    }

    if TextFilter().engine_used == "tesseract":
        filters["text (tesseract OCR)"] = TextFilter(engine="tesseract")

    def scene_hist(frames, fps):
        d = HistogramCutDetector()
        for i, f in enumerate(frames):
            d.process(i, cv2.resize(f, (256, int(256 * f.shape[0] / f.shape[1]))))

    filters["scene cuts (histogram)"] = scene_hist
    if have_pyscenedetect():
        from medvid.curation.scenes import PySceneDetectCutDetector

        def scene_psd(frames, fps):
            d = PySceneDetectCutDetector(fps=fps)
            for i, f in enumerate(frames):
                d.process(i, cv2.resize(f, (256, int(256 * f.shape[0] / f.shape[1]))))

        filters["scene cuts (PySceneDetect)"] = scene_psd
    inputs = {"240x320": echo}
    if big is not None:
        inputs["480x640"] = big[:30]
    rows = []
    for name, fn in filters.items():
        row = {"filter": name}
        for res, clip in inputs.items():
            reps = 1 if "tesseract" in name else repeats  # OCR takes seconds per clip
            if reps > 1:
                fn(clip, 30.0)  # warm-up
            t0 = time.perf_counter()
            for _ in range(reps):
                fn(clip, 30.0)
            dt = (time.perf_counter() - t0) / reps
            row[f"clips_per_s_{res}"] = round(1.0 / dt, 2)
        rows.append(row)
    return rows, list(inputs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "curation.json"))
    args = ap.parse_args()

    import cv2 as _cv2

    _cv2.setNumThreads(1)
    from medvid.curation.curate import CurateConfig, curate
    from medvid.curation.filters import TextFilter
    from medvid.curation.manifest import read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "raw"
        root.mkdir()
        echo, big = build_set(root)
        rows, resolutions = filter_throughput(echo, big, args.repeats)
        print("\nPer-filter throughput (one 30-frame clip per call, 1 thread)")
        print(f"{'filter':<30}" + "".join(f"{'clips/s ' + r:>20}" for r in resolutions))
        for r in rows:
            print(f"{r['filter']:<30}" + "".join(f"{r[f'clips_per_s_{res}']:>20.1f}" for res in resolutions))

        runs = {}
        presets = {
            "default (MedGen thresholds, crop borders, OpenCV text detector)": CurateConfig(
                workers=args.workers, val_fraction=0.0, text_engine="opencv"),
            "ultrasound (text_max_words=40, drop borders)": CurateConfig(
                workers=args.workers, val_fraction=0.0, text_engine="opencv", text_max_words=40, border_action="drop"),
        }
        if TextFilter().engine_used == "tesseract":
            presets["default with tesseract OCR"] = CurateConfig(workers=args.workers, val_fraction=0.0,
                                                                 text_engine="tesseract")
        for k, (label, cfg) in enumerate(presets.items()):
            out = Path(tmp) / f"out{k}"
            t0 = time.perf_counter()
            report = curate(root, out, cfg, progress=False)
            wall = time.perf_counter() - t0
            kept = read_manifest(out / "manifest.jsonl")
            removed = [json.loads(x) for x in (out / "removed.jsonl").read_text().splitlines()]
            print(f"\nCurate [{label}] on {report['sources']} files ({wall:.1f} s wall, workers={args.workers}, "
                  f"scene detector {report['scene_detector']}, text engine {report['text_engine']})")
            print(f"{'clip':<28}{'decision':<10}reason")
            for r in kept:
                print(f"{r['id']:<28}{'kept':<10}text words {r.get('text_score')}, blur {r.get('blur_score')}"
                      + (f", cropped to {r['crop']}" if "crop" in r else ""))
            for r in removed:
                print(f"{r['id']:<28}{'removed':<10}{r['filter']}: {r['reason']}")
            print(f"kept {report['kept']} / removed {report['removed']}  by filter: {report['removed_by_filter']}")
            print("in-run time per filter (clips/s):", {n: v["clips_per_second"] for n, v in report["timing"].items()})
            runs[label] = {"wall_seconds": round(wall, 2), "report": report, "kept": [r["id"] for r in kept],
                           "removed": [{"id": r["id"], "filter": r["filter"], "reason": r["reason"],
                                        "score": r["score"]} for r in removed]}

    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "filters": rows,
        "curate": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
