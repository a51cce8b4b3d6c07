"""The report renders in a real browser (headless Chromium): the screenshot shows the metrics
table and both sets of clips."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from medvid.metrics.evaluate import evaluate


def _chromium():
    sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
    from cdp import find_chromium  # the one lookup the browser tests share

    return find_chromium()


def test_report_renders_in_chromium(run_and_folders, tmp_path):
    from PIL import Image

    browser = _chromium()
    _, real, fake = run_and_folders
    evaluate(real, fake, ["fd_effnet_clip"], tmp_path / "out", cache_dir=None, bootstrap=10, effnet_resolution=32)
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1100,900",
           "--hide-scrollbars", (tmp_path / "out" / "report.html").as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    red = (r > 200) & (g < 60) & (b < 60)  # real clips: red squares
    green = (g > 200) & (r < 60) & (b < 60)  # generated clips: green squares
    assert red.sum() > 4 * 16 * 16 * 0.8, "real clips are not visible"
    assert green.sum() > 4 * 16 * 16 * 0.8, "generated clips are not visible"
    # the table: its header background (#f6f8fa) and dark text above the clips
    header = (r == 246) & (g == 248) & (b == 250)
    rows = np.where(header.any(1))[0]
    assert len(rows) > 10 and rows.min() < np.where(red.any(1))[0].min(), "metrics table missing above the clips"
    dark = (img.sum(-1) < 150)[: np.where(red.any(1))[0].min()]
    assert dark.sum() > 2000, "no text rendered"
