import numpy as np
import pytest

from medvid.curation import filters as F
from medvid.curation.reader import InMemoryReader, VideoReadError, find_videos, open_source
from medvid.utils.video import write_mp4

from .conftest import moving_clip


def test_fallback_reader_agrees_with_the_data_reader(tmp_path):
    from pydicom.data import get_testdata_file

    write_mp4(moving_clip(t=6, h=32, w=48), tmp_path / "a.mp4", fps=6)
    for path in (tmp_path / "a.mp4", get_testdata_file("examples_ybr_color.dcm")):
        ours, theirs = InMemoryReader(path), open_source(path)
        assert (ours.num_frames, ours.height, ours.width) == (theirs.num_frames, theirs.height, theirs.width)
        assert ours.fps == pytest.approx(theirs.fps, rel=1e-3)
        idx = [0, ours.num_frames - 1]
        diff = np.abs(ours.read(idx).astype(int) - theirs.read(idx).astype(int))
        assert diff.mean() < 2.0  # same decoder; colour conversion may differ by rounding
    with pytest.raises(VideoReadError, match="does not exist"):
        InMemoryReader(tmp_path / "none.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"nope" * 10)
    with pytest.raises(VideoReadError, match="bad.mp4"):
        InMemoryReader(tmp_path / "bad.mp4")


def test_find_videos(tmp_path):
    (tmp_path / "x").mkdir()
    for name in ("x/b.mp4", "a.dcm", "notes.txt", ".hidden.mp4", "c.nii.gz"):
        (tmp_path / name).write_bytes(b"0")
    assert [p.relative_to(tmp_path).as_posix() for p in find_videos(tmp_path)] == ["a.dcm", "c.nii.gz", "x/b.mp4"]


def test_tesseract_branch_counts_confident_words(monkeypatch):
    class FakeTesseract:
        class Output:
            DICT = "dict"

        @staticmethod
        def image_to_data(gray, config="", output_type=None):
            assert "--psm 11" in config and gray.shape == (480, 960)  # enlarged to ~960 px
            return {"text": ["PLA", "", "Gen", "x", "=="], "conf": ["91", "-1", "88", "12", "95"],
                    "left": [0, 0, 20, 0, 0], "top": [0, 0, 0, 0, 0], "width": [16, 0, 16, 8, 8],
                    "height": [8, 0, 8, 8, 8]}

    monkeypatch.setattr(F, "_tesseract", lambda: FakeTesseract)
    f = F.TextFilter(engine="auto", max_words=1)
    assert f.engine_used == "tesseract"
    words, area = f.measure(np.zeros((20, 40, 3), np.uint8))
    assert words == 2 and area == pytest.approx(2 * (16 / 24) * (8 / 24) / 800)
    assert not f(np.zeros((3, 20, 40, 3), np.uint8)).keep
    monkeypatch.setattr(F, "_tesseract", lambda: None)
    with pytest.raises(ValueError, match="tesseract-ocr"):
        F.TextFilter(engine="tesseract")


@pytest.mark.skipif(F._tesseract() is None, reason="pytesseract / tesseract-ocr not installed")
def test_real_tesseract_reads_clear_subtitles():
    import cv2

    frame = np.full((120, 480, 3), 20, np.uint8)
    cv2.putText(frame, "LEFT VENTRICLE APICAL VIEW", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    words, _ = F.TextFilter(engine="tesseract").measure(frame)
    assert 3 <= words <= 5
