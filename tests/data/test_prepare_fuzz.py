"""`medvid prepare` on damaged and hostile inputs: sizes are checked from headers before any pixel is
decoded, and randomly damaged copies of the real echocardiograms never crash it."""

import json

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medvid.data import prepare
from medvid.data.readers import DicomReader, FrameFolderReader, NiftiReader, VideoReadError, open_video
from medvid.data.synthetic import write_dicom, write_nifti


def report(out):
    return {r["path"]: r for r in json.loads((out / "report.json").read_text())["inputs"]}


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any reader decodes pixels."""
    def refuse(*a, **k):
        raise AssertionError("pixels were decoded before the declared size was checked")

    monkeypatch.setattr(DicomReader, "_raw", refuse)
    monkeypatch.setattr(NiftiReader, "_raw", refuse)
    monkeypatch.setattr(FrameFolderReader, "_load", refuse)


def test_declared_sizes_are_refused_before_decoding(tmp_path, no_decoding):
    src = tmp_path / "src"
    (src / "frames").mkdir(parents=True)
    # DICOM whose header declares 9000 x 9000 (the pixel data is only 4 x 8 x 8 bytes).
    p = write_dicom(src / "wide.dcm", np.zeros((4, 8, 8), np.uint8))
    ds = pydicom.dcmread(p)
    ds.Rows = ds.Columns = 9000
    ds.save_as(p)
    # DICOM whose header declares 60000 frames the file does not hold.
    p = write_dicom(src / "long.dcm", np.zeros((4, 8, 8), np.uint8))
    ds = pydicom.dcmread(p)
    ds.NumberOfFrames = 60000
    ds.save_as(p)
    # NIfTI whose header declares 9000 x 16 pixels per frame.
    write_nifti(src / "wide.nii", np.zeros((9000, 16, 1, 3), np.uint8))
    # Frame folder whose first PNG declares 9000 x 8.
    for i in range(2):
        Image.fromarray(np.zeros((8, 9000), np.uint8)).save(src / "frames" / f"{i}.png")
    prepare(src, tmp_path / "out", max_side=8192, progress=False)
    rep = report(tmp_path / "out")
    assert {k: v["status"] for k, v in rep.items()} == dict.fromkeys(
        ["wide.dcm", "long.dcm", "wide.nii", "frames/"], "skipped")
    assert "the DICOM header declares 9000x9000 (longer side > 8192)" in rep["wide.dcm"]["reason"]
    assert "declares 60000 frame(s) of 8x8 (3840000 bytes of pixel data)" in rep["long.dcm"]["reason"]
    assert "the NIfTI header declares 9000x16" in rep["wide.nii"]["reason"]
    assert "the image header declares 9000x8" in rep["frames/"]["reason"]


def test_max_side_reaches_the_readers(tmp_path):
    p = write_dicom(tmp_path / "a.dcm", np.zeros((3, 8, 40), np.uint8))
    with pytest.raises(VideoReadError, match="longer side > 32"):
        open_video(p, max_side=32)
    with open_video(p) as r:  # no limit asked: opens
        assert (r.width, r.height) == (40, 8)


def damaged_copies(data: bytes, n: int, rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Bit flips, truncations at random offsets and zeroed headers, ``n`` of each."""
    out = []
    for i in range(n):
        b = bytearray(data)
        for pos in rng.integers(0, len(b), size=int(rng.integers(1, 40))):
            b[pos] ^= 1 << int(rng.integers(0, 8))
        out.append((f"flip{i}", bytes(b)))
        out.append((f"cut{i}", data[: int(rng.integers(0, len(data)))]))
        b = bytearray(data)
        end = int(rng.integers(132, 2048))
        b[: end] = bytes(end)
        out.append((f"zero{i}", bytes(b)))
    return out


def test_fuzz_damaged_echocardiograms(tmp_path):
    """Every damaged copy is kept or skipped with a reason; prepare itself never raises."""
    from medvid.demo.echo import write_segment

    jpeg = get_testdata_file("examples_ybr_color.dcm")  # a real echocardiogram, JPEG baseline
    ds = pydicom.dcmread(jpeg)
    raw = write_segment(ds, ds.pixel_array[:4, ::4, ::4], tmp_path / "raw.dcm", "fuzz")  # uncompressed RGB
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    names = []
    for tag, data in (("jpeg", open(jpeg, "rb").read()), ("raw", raw.read_bytes())):
        for name, blob in damaged_copies(data, 8, rng):
            (src / f"{tag}_{name}.dcm").write_bytes(blob)
            names.append(f"{tag}_{name}.dcm")
    summary = prepare(src, tmp_path / "out", progress=False)
    rep = report(tmp_path / "out")
    assert sorted(rep) == sorted(names)
    for name, r in rep.items():
        assert r["status"] in ("kept", "skipped"), name
        if r["status"] == "skipped":
            assert r["reason"].strip(), name
            assert "unexpected error" not in r["reason"], (name, r["reason"])
    assert summary["kept"] + summary["skipped"] == len(names)
    assert summary["skipped"] >= 16  # every zeroed header and most cuts
    kept = [n for n, r in rep.items() if r["status"] == "kept"]
    for name in kept:  # what was kept really opens and reads
        with open_video(src / name) as r:
            assert r.read([0, r.num_frames - 1]).shape[0] == 2
