import numpy as np
import pytest

from medvid.curation import filters as F
from medvid.curation.reader import VideoReadError, find_videos, open_source


def test_bad_sources_get_errors_naming_the_file(tmp_path):
    with pytest.raises(VideoReadError, match="does not exist"):
        open_source(tmp_path / "none.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"nope" * 10)
    with pytest.raises(VideoReadError, match="bad.mp4"):
        open_source(tmp_path / "bad.mp4")


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
