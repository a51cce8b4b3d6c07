import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from torch.utils.data import DataLoader

from medvid.data import ClipDataset, ManifestError, parse_clip_id, resize_center_crop
from medvid.data.datasets import clip_frame_indices
from medvid.data.synthetic import bar_width, write_video

COLORS = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]


def entry(path, vid, n, split="train", **kw):
    return {"path": str(path), "id": vid, "num_frames": n, "fps": 25.0, "height": 48, "width": 64, "split": split, **kw}


@pytest.fixture(scope="module")
def colored(tmp_path_factory):
    """Three videos of distinct solid colours (bar in the top rows encodes the frame index)."""
    d = tmp_path_factory.mktemp("colored")
    return [
        entry(write_video(d / f"c{i}.mp4", num_frames=60, height=48, width=64, color=c, kind="mkv"
                          if i == 0 else "mp4"), f"c{i}", 60, caption=f"video {i}")
        for i, c in enumerate(COLORS)
    ]


def pil_reference(frame: np.ndarray, r: int) -> np.ndarray:
    h, w = frame.shape[:2]
    nh, nw = (r, int(r * w / h)) if h <= w else (int(r * h / w), r)
    p = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.BILINEAR)).astype(np.float32)
    top, left = round((nh - r) / 2), round((nw - r) / 2)
    return p[top : top + r, left : left + r] / 127.5 - 1


def torch_reference(frame: np.ndarray, r: int) -> np.ndarray:
    """torchvision's Resize(r, antialias=True) + CenterCrop(r) on a float tensor, written out."""
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    h, w = frame.shape[:2]
    size = (r, int(r * w / h)) if h <= w else (int(r * h / w), r)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = int(round((size[0] - r) / 2.0)), int(round((size[1] - r) / 2.0))
    return (x[0, :, top : top + r, left : left + r].permute(1, 2, 0) / 127.5 - 1).numpy()


@pytest.mark.parametrize("shape", [(240, 320), (50, 30), (33, 33)])
def test_resize_center_crop_matches_torch_antialiased_bilinear(shape):
    img = np.random.default_rng(0).integers(0, 256, (*shape, 3)).astype(np.uint8)
    out = resize_center_crop(img[None], 32)[0].permute(1, 2, 0).numpy()
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, torch_reference(img, 32), atol=1.01 / 127.5)  # Pillow rounds to uint8
    np.testing.assert_array_equal(resize_center_crop(img[None], 32, hflip=True)[0].numpy(), out.transpose(2, 0, 1)[:, :, ::-1])


def test_echo_cine_loops_and_matches_reference_frames():
    path = get_testdata_file("examples_ybr_color.dcm")
    ds = ClipDataset([entry(path, "echo", 30)], resolution=32, num_images=0, seed=1)
    item = ds[0]
    assert item["video"].shape == (17, 3, 32, 32) and item["images"].shape == (0, 3, 32, 32)
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    spec = parse_clip_id(item["clip_id"])
    assert spec["video_id"] == "echo" and spec["stride"] == 3 and ds.clip_spec(0)["looped"]
    # Independent rebuild: pydicom frames at (start + 3 j) mod 30, PIL resize, flip.
    frames = pydicom.dcmread(path).pixel_array
    idx = (spec["start"] + 3 * np.arange(17)) % 30
    ref = np.stack([pil_reference(frames[i], 32) for i in idx])
    if spec["hflip"]:
        ref = ref[:, :, ::-1]
    np.testing.assert_allclose(item["video"].permute(0, 2, 3, 1).numpy(), ref, atol=1.01 / 127.5)


def test_clip_indices_and_stride_policy(colored):
    assert clip_frame_indices(30, 25, 3, 4).tolist() == [25, 28, 1, 4]
    short = [dict(colored[0], num_frames=20)]
    ds = ClipDataset(short, num_frames=8, frame_stride=3, num_images=0, short_policy="stride", resolution=16)
    spec = ds.clip_spec(0)
    assert spec["stride"] == 2 and not spec["looped"]  # (9 - 1) * 2 + 1 = 17 <= 20
    with pytest.raises(ValueError, match="short_policy"):
        ClipDataset(short, short_policy="bounce")


def test_frames_follow_protocol_and_images_come_from_other_videos(colored):
    ds = ClipDataset(colored, num_frames=4, frame_stride=3, resolution=16, num_images=5, seed=0)
    for i in range(len(ds)):
        item = ds[i]
        spec = ds.clip_spec(i)
        v = spec["video_index"]
        # Video frames: the solid colour of their own video; bar width says which frames we got.
        mean = item["video"][:, :, 8:].mean(dim=(0, 2, 3))
        assert int(mean.argmax()) == v
        raw = ds._reader(v).read(clip_frame_indices(60, spec["start"], 3, 5))
        assert [bar_width(f) for f in raw] == [(spec["start"] + 3 * j) % 64 for j in range(5)]
        # Images: never the clip's own colour.
        img_colours = item["images"][:, :, 8:].mean(dim=(2, 3)).argmax(1).tolist()
        assert v not in img_colours and len(img_colours) == 5
        assert item["caption"] == f"video {v}"


def test_deterministic_across_workers_seeds_and_epochs(colored):
    kw = dict(num_frames=4, frame_stride=2, resolution=16, num_images=2)
    ds = ClipDataset(colored, clips_per_video=2, seed=5, **kw)
    ref = [ds[i] for i in range(len(ds))]
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    video = torch.cat([b["video"] for b in batches])
    assert torch.equal(video, torch.stack([r["video"] for r in ref]))
    assert sum((b["clip_id"] for b in batches), []) == [r["clip_id"] for r in ref]
    assert [ClipDataset(colored, clips_per_video=2, seed=5, **kw)[i]["clip_id"] for i in range(6)] == [r["clip_id"] for r in ref]
    other = ClipDataset(colored, clips_per_video=2, seed=6, **kw)
    assert [other.clip_spec(i)["clip_id"] for i in range(6)] != [r["clip_id"] for r in ref]
    ds.set_epoch(1)
    assert [ds.clip_spec(i)["clip_id"] for i in range(6)] != [r["clip_id"] for r in ref]


def test_get_clip_rebuilds_item(colored):
    ds = ClipDataset(colored, num_frames=4, resolution=16, num_images=1, seed=2)
    item = ds[1]
    again = ds.get_clip(item["clip_id"])
    assert torch.equal(again["video"], item["video"]) and again["video_id"] == item["video_id"]
    fresh = ClipDataset(colored, num_frames=4, resolution=16, num_images=0, seed=99)
    assert torch.equal(fresh.get_clip(item["clip_id"])["video"], item["video"])


def test_flip_mirrors_frames(colored):
    ds = ClipDataset(colored, num_frames=2, resolution=16, num_images=0)
    a = ds.read_clip("c1", 5, 1, False)
    b = ds.read_clip("c1", 5, 1, True)
    assert torch.equal(a.flip(-1), b) and not torch.equal(a, b)


def test_split_filter_and_errors(colored, tmp_path):
    mixed = [dict(colored[0], split="val"), colored[1], colored[2]]
    assert len(ClipDataset(mixed, split="val", num_images=0)) == 1
    assert len(ClipDataset(mixed, split=None, num_images=0)) == 3
    with pytest.raises(ManifestError, match="no videos in split"):
        ClipDataset(colored, split="val")
    with pytest.raises(ValueError, match="resolution"):
        ClipDataset(colored, resolution=2)


def test_unreadable_video_is_skipped_and_reported(colored, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    ds = ClipDataset([entry(broken, "broken", 60), colored[1]], num_frames=2, resolution=16, num_images=0)
    item = ds[0]
    assert item["video_id"] == "c1" and str(broken) in ds.bad_videos
