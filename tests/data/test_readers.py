import os

import av
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medvid.data import VideoReadError, open_video
from medvid.data.readers import PyAVReader, natural_key
from medvid.data.synthetic import CONTAINERS, bar_width, write_dicom, write_nifti, write_video


def decode_all(path):
    """Independent reference: PyAV sequential decode of every frame."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("kind", sorted(CONTAINERS))
def test_containers_random_access_matches_sequential_decode(tmp_path, kind):
    path = write_video(tmp_path / f"v{CONTAINERS[kind][0]}", num_frames=30, kind=kind, gop=8)
    ref = decode_all(path)
    with open_video(path) as r:
        assert (r.num_frames, r.height, r.width) == (30, 48, 64)
        assert r.fps == pytest.approx(25.0)
        idx = [29, 3, 3, 17, 0, 9, 8, 28]
        got = r.read(idx)
    assert got.dtype == np.uint8 and got.shape == (len(idx), 48, 64, 3)
    np.testing.assert_array_equal(got, ref[idx])
    assert [bar_width(f) for f in got] == idx  # the pixels say which frame this is


def test_read_is_lazy_on_long_video(tmp_path):
    path = write_video(tmp_path / "long.mp4", num_frames=240, height=32, width=32, gop=10)
    r = PyAVReader(path)
    decoded = []
    orig = r._decode_from

    def counting(key):
        for f in orig(key):
            decoded.append(f.pts)
            yield f

    r._decode_from = counting
    frames = r.read([200, 201, 230])
    assert [bar_width(f) for f in frames] == [200 % 32, 201 % 32, 230 % 32]
    assert len(decoded) < 40  # two keyframe runs, not the whole recording


def test_echo_dicom_matches_pydicom_and_header_fps():
    path = get_testdata_file("examples_ybr_color.dcm")
    ref = pydicom.dcmread(path).pixel_array  # pydicom 3: already RGB
    with open_video(path) as r:
        assert (r.num_frames, r.height, r.width) == (30, 240, 320)
        assert r.fps == pytest.approx(1000 / 33.333, rel=1e-4)
        assert r.metadata["fps_source"] == "FrameTime"
        got = r.read([0, 14, 29])
    np.testing.assert_array_equal(got, ref[[0, 14, 29]])
    # Converting YBR twice turns an echo green; ours stays grey-ish (channel means close).
    means = got.reshape(-1, 3).mean(0)
    assert abs(means[1] - means[0]) < 5 and abs(means[1] - means[2]) < 5


def test_16bit_grayscale_dicom_is_windowed_to_8bit():
    path = get_testdata_file("emri_small.dcm")
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    with open_video(path) as r:
        assert r.num_frames == 10 and r.metadata["bits_stored"] > 8
        got = r.read(range(10))
    assert got.dtype == np.uint8 and got.shape == (10, 64, 64, 3)
    np.testing.assert_array_equal(got[..., 0], got[..., 2])
    # One monotone window for the whole series: brighter raw never maps darker.
    order = np.argsort(raw.ravel(), kind="stable")
    out = got[..., 0].ravel()[order].astype(int)
    assert np.all(np.diff(out) >= 0)
    lo, hi = np.percentile(raw[np.linspace(0, 9, 5).round().astype(int)], [0.5, 99.5])
    expect = np.clip((raw - lo) * 255 / (hi - lo) + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(got[..., 0], expect)


def test_dicom_header_window_and_monochrome1(tmp_path):
    frames = np.linspace(0, 4095, 4 * 8 * 8).reshape(4, 8, 8).astype(np.uint16)
    p = write_dicom(tmp_path / "w.dcm", frames, frame_time_ms=50, bits_stored=12, window=(1000, 1000))
    with open_video(p) as r:
        assert r.fps == pytest.approx(20.0)
        got = r.read([2])[0, ..., 0]
    expect = np.clip((frames[2] - 500.0) * 255 / 1000 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(got, expect)
    p1 = write_dicom(tmp_path / "m1.dcm", (frames // 16).astype(np.uint8), photometric="MONOCHROME1")
    with open_video(p1) as r:
        np.testing.assert_array_equal(r.read([1])[0, ..., 1], 255 - (frames[1] // 16).astype(np.uint8))


def test_nifti_4d_time_axis_and_window(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 3000, (12, 10, 3, 7)).astype(np.int16)  # (x, y, z, t)
    p = write_nifti(tmp_path / "cine.nii.gz", data, tr=40, time_unit="msec")
    with open_video(p) as r:
        assert (r.num_frames, r.height, r.width) == (7, 10, 12)
        assert r.fps == pytest.approx(25.0)
        got = r.read([0, 6])
    samples = data[:, :, 1, np.linspace(0, 6, 5).round().astype(int)].astype(np.float32)  # 5 sampled frames
    lo, hi = np.percentile(samples, [0.5, 99.5])
    for k, t in enumerate([0, 6]):
        sl = data[:, :, 1, t].astype(np.float32).T[::-1]  # rows = y (flipped), cols = x
        expect = np.clip((sl - lo) * 255 / (hi - lo) + 0.5, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(got[k, ..., 0], expect)


def test_nibabel_functional_example_and_3d_refused(tmp_path):
    from nibabel.testing import data_path

    with open_video(os.path.join(data_path, "functional.nii")) as r:
        assert (r.num_frames, r.height, r.width) == (20, 21, 17)
        assert r.fps == pytest.approx(0.5)
        assert r.read([0, 19]).shape == (2, 21, 17, 3)
    p = write_nifti(tmp_path / "vol.nii", np.zeros((8, 8, 8), np.int16))
    with pytest.raises(VideoReadError, match="not a 4D"):
        open_video(p)


def test_frame_folder_natural_sort_gray_and_16bit(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    for i in [1, 2, 10, 3]:
        Image.fromarray(np.full((6, 9), i * 20, np.uint8)).save(d / f"frame{i}.png")
    with open_video(d, fps=12) as r:
        assert r.num_frames == 4 and r.fps == 12 and (r.height, r.width) == (6, 9)
        got = r.read(range(4))
    assert [int(f[0, 0, 0]) for f in got] == [20, 40, 60, 200]
    np.testing.assert_array_equal(got[..., 0], got[..., 1])
    assert sorted(["f10", "f9", "f1"], key=natural_key) == ["f1", "f9", "f10"]
    d16 = tmp_path / "frames16"
    d16.mkdir()
    for i in range(3):
        Image.fromarray(np.full((4, 4), 1000 * (i + 1), np.uint16)).save(d16 / f"{i}.png")
    with open_video(d16) as r:
        vals = [int(f[0, 0, 0]) for f in r.read(range(3))]
    assert vals[0] < vals[1] < vals[2] and vals[0] <= 2 and vals[2] >= 253


def test_grayscale_and_odd_sized_container(tmp_path):
    frames = np.stack([np.full((35, 47), 10 * i, np.uint8) for i in range(5)])
    p = write_video(tmp_path / "gray.mkv", num_frames=5, height=35, width=47, kind="mkv", frames=frames, pix_fmt="gray")
    with open_video(p) as r:
        assert (r.height, r.width) == (35, 47)
        got = r.read(range(5))
    assert got.shape == (5, 35, 47, 3)
    np.testing.assert_array_equal(got[..., 0], frames)
    np.testing.assert_array_equal(got[..., 2], frames)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(os.urandom(4096)), "not a readable video container"),
        (lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(100)), "container|no video|no frames"),
    ],
    ids=["empty", "garbage", "bad-header"],
)
def test_bad_files_raise_clear_errors(tmp_path, make, match):
    p = tmp_path / "bad.mp4"
    make(p)
    with pytest.raises(VideoReadError, match=match) as e:
        open_video(p)
    assert str(p) in str(e.value) and isinstance(e.value, ValueError)


def test_truncated_files(tmp_path):
    full = write_video(tmp_path / "full.mp4", num_frames=40, height=32, width=32)
    data = full.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # index (moov) at the end: lost
    with pytest.raises(VideoReadError, match="truncated"):
        open_video(tmp_path / "cut.mp4")
    fs = write_video(tmp_path / "fs.mp4", num_frames=40, height=32, width=32, faststart=True,
                     frames=np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3), dtype=np.uint8))
    data = fs.read_bytes()
    (tmp_path / "fs_cut.mp4").write_bytes(data[: len(data) // 2])  # index first, data cut short
    with open_video(tmp_path / "fs_cut.mp4") as r:
        assert r.metadata["truncated"] and r.num_frames < r.metadata["header_frames"] == 40


def test_missing_unreadable_and_single_image(tmp_path, monkeypatch):
    with pytest.raises(VideoReadError, match="does not exist"):
        open_video(tmp_path / "nope.mp4")
    p = write_video(tmp_path / "ok.mp4", num_frames=3, height=16, width=16)
    # Tests run as root, for whom chmod does not block reads: simulate a permission failure.
    import medvid.data.readers as readers

    monkeypatch.setattr(readers.os, "access", lambda path, mode: False)
    with pytest.raises(VideoReadError, match="permission denied"):
        open_video(p)
    monkeypatch.undo()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "one.png")
    with pytest.raises(VideoReadError, match="single image"):
        open_video(tmp_path / "one.png")


def test_read_index_out_of_range(tmp_path):
    p = write_video(tmp_path / "s.mp4", num_frames=4, height=16, width=16)
    with open_video(p) as r, pytest.raises(IndexError):
        r.read([4])
