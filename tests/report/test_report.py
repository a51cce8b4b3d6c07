"""report.html: self-contained, holds the table, the clips, the run's curves/config and the judge scores."""

import json
import re

import pytest

from medvid.metrics.evaluate import evaluate
from medvid.report.report import find_run, read_training_curves


def test_report_is_self_contained_and_complete(run_and_folders, tmp_path):
    run, real, fake = run_and_folders
    res = evaluate(real, fake, ["fd_effnet_clip", "fvd", "motion_smoothness"], tmp_path / "out", cache_dir=None,
                   bootstrap=10, effnet_resolution=32)
    page = (tmp_path / "out" / "report.html").read_text()
    # nothing fetched from anywhere: every src/href is a data URI or an in-page anchor
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", page)
    assert refs and all(r.startswith("data:") or r.startswith("#") for r in refs)
    assert "<script src" not in page and "@import" not in page and "url(http" not in page
    assert "id='metrics'" in page and "fd_effnet_clip" in page and "motion_smoothness_blend" in page
    assert "i3d_torchscript.pt" in page  # skipped metric names the file it needs
    ci = res["metrics"]["fd_effnet_clip"]["ci"]
    assert "3 real / 3 fake clips" in page
    assert page.count("data:image/gif;base64,") == 6  # 3 real + 3 generated, animated
    assert page.count("data:image/png;base64,") == 6  # per-frame strips
    assert "train/loss" in page and "<polyline" in page  # TensorBoard curve
    assert "medsora-s" in page  # the run's configuration
    assert "apical four-chamber view" in page and "text_alignment" in page
    assert "mean over 2 videos" in page and ">3<" in page  # mean text_alignment (4 + 2) / 2
    assert ci[0] <= ci[1]


def test_find_run_and_curves_fallbacks(run_and_folders, tmp_path):
    run, _, fake = run_and_folders
    info = find_run(fake)
    assert info["run_dir"] == str(run) and "medsora-s" in info["config"]
    curves = read_training_curves(run)
    assert [p[0] for p in curves["train/loss"]][:3] == [0.0, 10.0, 20.0]
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 1 / (s + 1), "lr": 1e-4}) for s in range(5)))
    c = read_training_curves(other)
    assert c["loss"][2] == (2.0, pytest.approx(1 / 3)) and len(c["lr"]) == 5
    (other / "metrics.jsonl").unlink()
    (other / "log.txt").write_text("12:00:00 INFO step 10 loss 0.5\n12:00:01 INFO step 20 loss 0.25\n")
    assert read_training_curves(other)["loss"] == [(10.0, 0.5), (20.0, 0.25)]
