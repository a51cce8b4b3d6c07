import numpy as np
import pytest
from PIL import Image

from medvid.curation import scenes as S
from medvid.curation.dedup import Deduplicator, clip_hashes, hash_distance

from .conftest import moving_clip


def three_shots(n=(20, 16, 24)):
    """Three different shots back to back: cuts at 20 and 36."""
    a = moving_clip(t=n[0], seed=1)
    b = (moving_clip(t=n[1], seed=2) * np.array([0.3, 0.6, 1.0])).astype(np.uint8)  # bluish
    c = np.clip(moving_clip(t=n[2], seed=3) * np.array([1.2, 0.5, 0.3]), 0, 255).astype(np.uint8)  # reddish
    return np.concatenate([a, b, c])


class ArrayReader:
    def __init__(self, frames, fps=10.0):
        self.frames, self.fps = frames, fps
        self.num_frames, self.height, self.width = frames.shape[:3]

    def read(self, idx):
        return self.frames[np.asarray(idx)]


@pytest.mark.parametrize("method", ["histogram", "pyscenedetect"])
def test_cut_detectors_find_the_cuts(method):
    if method == "pyscenedetect" and not S.have_pyscenedetect():
        pytest.skip("scenedetect not installed")
    video = three_shots()
    det = S.make_cut_detector(method, min_scene_frames=5, fps=10.0)
    scenes = S.detect_scenes(S.iter_frames(ArrayReader(video), chunk=7), len(video), det)
    assert scenes == [(0, 20), (20, 36), (36, 60)]
    det = S.make_cut_detector(method, min_scene_frames=5, fps=10.0)
    assert S.detect_scenes(S.iter_frames(ArrayReader(video[:20])), 20, det) == [(0, 20)]


def test_auto_prefers_pyscenedetect_and_bad_name_fails(monkeypatch):
    if S.have_pyscenedetect():
        assert isinstance(S.make_cut_detector("auto"), S.PySceneDetectCutDetector)
    monkeypatch.setattr(S, "have_pyscenedetect", lambda: False)
    assert isinstance(S.make_cut_detector("auto"), S.HistogramCutDetector)
    with pytest.raises(ValueError, match="histogram"):
        S.make_cut_detector("pyscenedetect")
    with pytest.raises(ValueError, match="auto, pyscenedetect or histogram"):
        S.make_cut_detector("ffmpeg")


def test_split_long():
    assert S.split_long([(0, 25), (25, 30)], 10) == [(0, 8), (8, 17), (17, 25), (25, 30)]
    pieces = S.split_long([(3, 103)], 30)
    assert pieces[0][0] == 3 and pieces[-1][1] == 103 and all(e - s <= 30 for s, e in pieces)


def test_hashes_are_imagehash_phash_and_find_near_duplicates():
    import imagehash

    clip = moving_clip(t=12, h=64, w=64, seed=4)
    hashes = clip_hashes(clip, 4)
    assert hashes[0] == str(imagehash.phash(Image.fromarray(clip[0])))
    brighter = np.clip(clip.astype(int) + 12, 0, 255).astype(np.uint8)
    other = moving_clip(t=12, h=64, w=64, seed=9)
    assert hash_distance(hashes, clip_hashes(brighter)) <= 4
    assert hash_distance(hashes, clip_hashes(other)) > 12

    dedup = Deduplicator(max_distance=6)
    assert dedup("a", hashes).keep
    r = dedup("b", clip_hashes(brighter))
    assert not r.keep and "near-duplicate of a" in r.reason
    assert dedup("c", clip_hashes(other)).keep
    with pytest.raises(ValueError, match="same num_frames"):
        hash_distance(hashes, hashes[:2])
