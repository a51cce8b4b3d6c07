import csv
import importlib
import json
import os
import shutil

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medvid import cli
from medvid.data import ManifestError, prepare, read_manifest
from medvid.data.manifest import make_video_id, split_for
from medvid.data.synthetic import write_dicom, write_nifti, write_video

prepare_mod = importlib.import_module("medvid.data.prepare")  # the package exports the function under the same name


def report_by_path(out):
    rep = json.loads((out / "report.json").read_text())
    return {r["path"]: r for r in rep["inputs"]}, rep["summary"]


@pytest.fixture
def messy(tmp_path):
    """A folder with every kind of bad input next to good ones."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    write_video(src / "good.mp4", num_frames=20, height=32, width=32)
    write_video(src / "sub" / "gray_odd.mkv", num_frames=6, height=35, width=47, kind="mkv",
                frames=np.stack([np.full((35, 47), 9 * i, np.uint8) for i in range(6)]), pix_fmt="gray")
    shutil.copy(src / "good.mp4", src / "sub" / "copy_of_good.mp4")  # duplicate by content
    write_video(src / "one_frame.avi", num_frames=1, height=32, width=32, kind="avi")
    write_video(src / "huge.webm", num_frames=3, height=64, width=96, kind="webm")  # "too large" with max_side=80
    write_video(src / "tiny.mp4", num_frames=3, height=8, width=8)
    (src / "empty.mp4").write_bytes(b"")
    (src / "garbage.mov").write_bytes(os.urandom(3000))
    data = (src / "good.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(data[: len(data) // 2])
    write_dicom(src / "cine16.dcm", np.linspace(0, 4000, 5 * 16 * 16).reshape(5, 16, 16).astype(np.uint16), bits_stored=12)
    write_nifti(src / "series.nii.gz", np.random.default_rng(0).integers(0, 30000, (20, 18, 2, 4)).astype(np.uint16))
    write_video(src / "tmp_name.mp4", num_frames=5, height=16, width=16, color=(0, 0, 200))
    os.rename(os.fsencode(src / "tmp_name.mp4"), os.path.join(os.fsencode(src), b"caf\xe9.mp4"))  # not UTF-8
    (src / "notes.txt").write_text("not a video")
    return src


def test_prepare_reports_every_bad_input(messy, tmp_path):
    out = tmp_path / "out"
    summary = prepare(messy, out, max_side=80, progress=False)
    rep, s = report_by_path(out)
    reasons = {k: v.get("reason", "") for k, v in rep.items()}
    assert rep["good.mp4"]["status"] == "kept"
    assert rep["sub/gray_odd.mkv"]["status"] == "kept"  # grayscale + odd size are fine
    assert rep["cine16.dcm"]["status"] == "kept" and rep["series.nii.gz"]["status"] == "kept"
    assert "duplicate of good.mp4" in reasons["sub/copy_of_good.mp4"]
    assert "too short" in reasons["one_frame.avi"]
    assert "too large" in reasons["huge.webm"]
    assert "too small" in reasons["tiny.mp4"]
    assert "empty" in reasons["empty.mp4"]
    assert "not a readable video container" in reasons["garbage.mov"]
    assert "truncated" in reasons["truncated.mp4"] or "not a readable" in reasons["truncated.mp4"]
    assert "not a supported video format" in reasons["notes.txt"]
    odd = [k for k in rep if k.startswith("caf")]
    assert len(odd) == 1 and rep[odd[0]]["status"] == "kept" and "UTF-8" in rep[odd[0]]["warnings"][0]
    assert s["kept"] == summary["kept"] == 5
    entries = read_manifest(out)
    assert len(entries) == 5 and {e["split"] for e in entries} <= {"train", "val"}
    by_id = {e["id"]: e for e in entries}
    g = by_id["good"]
    assert (g["num_frames"], g["height"], g["width"], g["fps"]) == (20, 32, 32, 25.0)
    assert g["duration"] == pytest.approx(0.8)
    odd_entry = next(e for e in entries if e["id"].startswith("caf"))
    assert os.path.exists(odd_entry["path"])  # the undecodable byte survives the JSON round trip
    assert all(json.loads(line) for line in (out / "manifest.jsonl").read_text("ascii").splitlines())


def test_exit_codes(messy, tmp_path, capsys):
    assert cli.main(["prepare", str(messy), str(tmp_path / "o1"), "--no-progress"]) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp4").write_bytes(b"")
    assert cli.main(["prepare", str(bad), str(tmp_path / "o2"), "--no-progress"]) == 1
    assert "no usable video" in capsys.readouterr().err
    assert cli.main(["prepare", str(tmp_path / "missing"), str(tmp_path / "o3")]) == 2


def test_incremental_and_interrupted_runs(tmp_path, monkeypatch):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for i in range(4):
        write_video(src / f"v{i}.mp4", num_frames=4, height=16, width=16, color=(60 * i, 0, 0))
    assert prepare(src, out, progress=False)["probed"] == 4
    first = (out / "manifest.jsonl").read_text()
    write_video(src / "v4.mp4", num_frames=4, height=16, width=16, color=(0, 255, 0))
    write_video(src / "v5.mp4", num_frames=4, height=16, width=16, color=(0, 0, 255))
    # Interrupt while probing the second new file: the finished work must survive.
    real_probe, calls = prepare_mod.probe, []

    def flaky(path, **kw):
        calls.append(path)
        if path.endswith("v5.mp4"):
            raise KeyboardInterrupt
        return real_probe(path, **kw)

    monkeypatch.setattr(prepare_mod, "probe", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, out, progress=False)
    assert (out / "manifest.jsonl").read_text() == first  # nothing already prepared is lost
    monkeypatch.setattr(prepare_mod, "probe", real_probe)
    s = prepare(src, out, progress=False)
    assert s["probed"] == 1 and s["kept"] == 6  # only v5 was left to do
    splits = {e["id"]: e["split"] for e in read_manifest(out)}
    assert prepare(src, out, progress=False)["probed"] == 0
    assert {e["id"]: e["split"] for e in read_manifest(out)} == splits


def test_split_is_by_video_deterministic_and_stable():
    ids = [f"vid{i}" for i in range(400)]
    splits = [split_for(i, 0.25, seed=3) for i in ids]
    assert splits == [split_for(i, 0.25, seed=3) for i in ids]
    assert 0.18 < splits.count("val") / len(ids) < 0.32
    assert splits != [split_for(i, 0.25, seed=4) for i in ids]


def test_metadata_file_with_captions_and_escaping_paths(tmp_path):
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    write_video(root / "videos" / "a.mp4", num_frames=5, height=16, width=16)
    write_video(root / "videos" / "b.mp4", num_frames=5, height=16, width=16, color=(9, 9, 9))
    write_video(tmp_path / "outside.mp4", num_frames=5, height=16, width=16, color=(1, 2, 3))
    rows = [
        {"path": "videos/a.mp4", "caption": "colonoscopy, polyp at 3 o'clock", "brief_caption": "polyp",
         "detailed_caption": "A colonoscopy view ...", "category": "endoscopy", "aesthetic_score": 5.1},
        {"video_path": "videos/b.mp4", "prompt": "echocardiogram", "split": "val"},
        {"path": "../outside.mp4", "caption": "escapes"},
        {"path": str(tmp_path / "outside.mp4"), "caption": "absolute outside"},
        {"path": "videos/missing.mp4", "caption": "gone"},
    ]
    meta = root / "meta.jsonl"
    meta.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    prepare(meta, out, progress=False)
    rep, _ = report_by_path(out)
    assert "escapes the data root" in rep["../outside.mp4"]["reason"]
    assert "escapes the data root" in rep[str(tmp_path / "outside.mp4")]["reason"]
    assert "does not exist" in rep["videos/missing.mp4"]["reason"]
    e = {x["id"]: x for x in read_manifest(out)}
    assert e["videos__a"]["caption"].startswith("colonoscopy") and e["videos__a"]["category"] == "endoscopy"
    assert e["videos__a"]["aesthetic_score"] == 5.1 and e["videos__a"]["brief_caption"] == "polyp"
    assert e["videos__b"]["caption"] == "echocardiogram" and e["videos__b"]["split"] == "val"
    # CSV flavour, and metadata.csv with columns video,prompt inside a folder.
    with open(root / "meta.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["file_name", "caption"])
        w.writeheader()
        w.writerow({"file_name": "videos/a.mp4", "caption": "csv caption"})
    prepare(root / "meta.csv", tmp_path / "out_csv", progress=False)
    assert read_manifest(tmp_path / "out_csv")[0]["caption"] == "csv caption"
    with open(root / "videos" / "metadata.csv", "w", newline="") as fh:
        fh.write("video,prompt\na.mp4,folder prompt\n")
    prepare(root / "videos", tmp_path / "out_dir", progress=False)
    caps = {x["id"]: x.get("caption") for x in read_manifest(tmp_path / "out_dir")}
    assert caps == {"a": "folder prompt", "b": None}


def test_read_manifest_refuses_escaping_and_malformed(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    base = {"id": "x", "num_frames": 3, "fps": 1, "height": 4, "width": 4, "split": "train"}
    (d / "manifest.jsonl").write_text(json.dumps({**base, "path": "../../etc/passwd"}) + "\n")
    with pytest.raises(ManifestError, match="escapes the data root"):
        read_manifest(d)
    (d / "manifest.jsonl").write_text(json.dumps({**base, "path": "v.mp4"}) + "\n{broken\n")
    with pytest.raises(ManifestError, match="line 2"):
        read_manifest(d / "manifest.jsonl")
    (d / "manifest.jsonl").write_text(json.dumps({**base, "path": "/abs/v.mp4"}) + "\n")
    assert read_manifest(d)[0]["path"] == "/abs/v.mp4"
    with pytest.raises(ManifestError, match="escapes"):
        read_manifest(d, root=d)
    with pytest.raises(ManifestError, match="medvid prepare"):
        read_manifest(tmp_path / "nowhere")


def test_video_ids_are_safe_and_distinct():
    assert make_video_id("a/b c.mp4").startswith("a__b_c-")
    assert make_video_id("series.nii.gz") == "series"
    assert make_video_id("x/y.mp4") == "x__y"
    weird = "caf\udce9.mp4"  # an undecodable byte, as os.listdir returns it
    assert make_video_id(weird) != make_video_id("caf_.mp4")
    make_video_id(weird).encode("ascii")


def test_prepare_embedded_echo_and_frame_folder(tmp_path):
    src = tmp_path / "src"
    (src / "frames").mkdir(parents=True)
    shutil.copy(get_testdata_file("examples_ybr_color.dcm"), src / "echo.dcm")
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 50 * i, np.uint8)).save(src / "frames" / f"img_{i}.jpg")
    prepare(src, tmp_path / "out", fps=10, progress=False)
    e = {x["id"]: x for x in read_manifest(tmp_path / "out")}
    assert e["echo"]["num_frames"] == 30 and e["echo"]["fps"] == pytest.approx(30.0, rel=1e-3)
    assert e["frames"]["num_frames"] == 3 and e["frames"]["fps"] == 10
    rep, _ = report_by_path(tmp_path / "out")
    assert rep["echo.dcm"]["status"] == "kept" and rep["frames/"]["status"] == "kept"
    prepare(src, tmp_path / "out47", min_frames=47, progress=False)
    rep, _ = report_by_path(tmp_path / "out47")
    assert "too short: 30 frame(s), at least 47" in rep["echo.dcm"]["reason"]


def test_unreadable_file_is_reported_not_fatal(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "ok.mp4", num_frames=4, height=16, width=16)
    write_video(src / "locked.mp4", num_frames=4, height=16, width=16, color=(5, 5, 5))
    # Tests run as root, for whom chmod does not block reads: simulate a file we may not read.
    import medvid.data.readers as readers

    real_access = os.access
    monkeypatch.setattr(readers.os, "access", lambda p, m: not str(p).endswith("locked.mp4") and real_access(p, m))
    prepare(src, tmp_path / "out", progress=False)
    rep, s = report_by_path(tmp_path / "out")
    assert "permission denied" in rep["locked.mp4"]["reason"] and s["kept"] == 1


def _numbered_frames(folder, n, size=16):
    """A frame folder whose frame i is uniformly grey level 10 * i (PNG: lossless)."""
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 10 * i, np.uint8)).save(folder / f"f{i:03d}.png")


def test_holdout_tail_splits_every_video_in_time(tmp_path, caplog):
    from medvid.data.datasets import ClipDataset

    src = tmp_path / "src"
    _numbered_frames(src / "a", 20)
    _numbered_frames(src / "b", 12)
    out = tmp_path / "out"
    summary = prepare(src, out, holdout_tail=0.25, progress=False)
    assert (summary["kept"], summary["train"], summary["val"]) == (2, 2, 2)
    entries = {e["id"]: e for e in read_manifest(out)}
    assert {k: (e["split"], e["start_frame"], e["end_frame"], e["num_frames"]) for k, e in entries.items()} == {
        "a.head": ("train", 0, 15, 15), "a.tail": ("val", 15, 20, 5),
        "b.head": ("train", 0, 9, 9), "b.tail": ("val", 9, 12, 3),
    }
    # Clips (and looping, and joint-training images) stay inside their segment: frame i is grey 10 * i.
    for split, lo, hi in (("train", 0, 15), ("val", 15, 20)):
        ds = ClipDataset(out, split=split, num_frames=6, frame_stride=1, resolution=16, num_images=3,
                         extra_flow_frame=False, clips_per_video=4, hflip=False)
        for i in range(len(ds)):
            item = ds[i]
            seg = entries[item["video_id"]]
            levels = np.unique(np.round(((item["video"] + 1) * 127.5).numpy() / 10))
            assert set(levels) <= set(range(seg["start_frame"], seg["end_frame"])), (split, item["clip_id"], levels)
            img_levels = np.unique(np.round(((item["images"] + 1) * 127.5).numpy() / 10))
            allowed = set().union(*(range(e["start_frame"], e["end_frame"]) for e in entries.values() if e["split"] == split))
            assert set(img_levels) <= allowed
        ds.close()
    # A single video without --holdout-tail leaves one split empty: said, not silent.
    one = tmp_path / "one"
    _numbered_frames(one / "v", 8)
    with caplog.at_level("WARNING", logger="medvid"):
        s = prepare(one, tmp_path / "out1", progress=False)
    assert s["val"] == 0 and any("'val' split is empty" in w for w in s["warnings"])
    assert "--holdout-tail" in caplog.text
    with pytest.raises(ValueError, match="holdout-tail"):
        prepare(one, tmp_path / "out2", holdout_tail=1.0, progress=False)


def test_manifest_segment_must_match_num_frames(tmp_path):
    line = {"path": "v.mp4", "id": "v", "num_frames": 5, "fps": 30, "height": 8, "width": 8,
            "start_frame": 10, "end_frame": 12}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(ManifestError, match="segment"):
        read_manifest(tmp_path)
