import av
import numpy as np
from PIL import Image

from medvid.utils.video import contact_sheet, save_npz, to_uint8, write_gif, write_mp4


def test_to_uint8_layouts_and_range():
    v = np.zeros((2, 3, 4, 5), np.float32)
    v[0] = 1.0
    v[1] = -1.0
    out = to_uint8(v)
    assert out.shape == (2, 4, 5, 3) and out.dtype == np.uint8
    assert out[0].min() == 255 and out[1].max() == 0
    gray = to_uint8(np.zeros((2, 4, 5), np.uint8))
    assert gray.shape == (2, 4, 5, 3)


def test_mp4_decodes_back_with_pyav(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.zeros((6, 31, 45, 3), np.uint8)  # odd size: padded to even for yuv420p
    for i in range(6):
        frames[i, :, : 5 + 6 * i] = 200
    frames += rng.integers(0, 5, frames.shape, dtype=np.uint8)
    path = write_mp4(frames, tmp_path / "v.mp4", fps=10)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        dec = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        assert float(stream.average_rate) == 10
    assert len(dec) == 6 and dec[0].shape == (32, 46, 3)
    err = np.abs(np.stack(dec)[:, :31, :45].astype(int) - frames.astype(int)).mean()
    assert err < 6


def test_gif_sheet_npz(tmp_path):
    v = np.random.default_rng(0).integers(0, 255, (5, 8, 10, 3), dtype=np.uint8)
    g = write_gif(v, tmp_path / "v.gif")
    with Image.open(g) as im:
        assert im.n_frames == 5
    s = contact_sheet([v, v[:3]], tmp_path / "s.png", max_frames=4, pad=2)
    with Image.open(s) as im:
        assert im.size == (4 * 12 + 2, 2 * 10 + 2)
    n = save_npz(v, tmp_path / "v.npz", fps=8)
    d = np.load(n)
    assert np.array_equal(d["frames"], v) and int(d["fps"]) == 8
