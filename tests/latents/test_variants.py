"""`medvid encode` caches every window, both flips, an image pool and posterior samples;
`LatentDataset` draws one variant per epoch."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medvid.data import ClipDataset, LatentDataset
from medvid.latents.encode import _noise, encode, pool_frames, window_starts

CLIP = dict(num_frames=4, frame_stride=2, resolution=16)


@pytest.mark.parametrize("n,span", [(9, 9), (10, 9), (30, 9), (47, 47), (300, 47), (101, 10)])
def test_default_windows_cover_every_frame_evenly(n, span):
    starts = window_starts(n, span)
    covered = np.zeros(n, bool)
    for s in starts:
        assert 0 <= s <= n - span
        covered[s : s + span] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] == n - span
    gaps = np.diff(starts)
    assert (gaps <= span).all() and (len(gaps) == 0 or gaps.max() - gaps.min() <= 1)
    assert len(starts) == (1 if n == span else int(np.ceil((n - span) / span)) + 1)  # no more than needed


def test_window_counts_loops_and_pool_frames():
    assert window_starts(30, 47) == [0]  # a looped video: one window
    assert window_starts(30, 47, 3) == [0, 10, 20]
    assert window_starts(100, 10, 1) == [45]  # one window: the middle
    assert window_starts(100, 10, 4) == [0, 30, 60, 90]
    with pytest.raises(ValueError, match="clips_per_video"):
        window_starts(10, 5, 0)
    assert pool_frames(12, 4) == [(1, False), (4, True), (7, False), (10, True)]
    assert len(pool_frames(3, 16)) <= 6  # no duplicate (frame, flip) pairs


@pytest.fixture(scope="module")
def cache(prepared, vae, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "lat"
    summary = encode(prepared, vae, out, num_images=2, image_pool=4, progress=False, **CLIP)
    return out, summary


def _rows(folder):
    return [json.loads(l) for l in (folder / "index.jsonl").read_text().splitlines()]


def test_defaults_cache_every_window_both_flips_and_an_image_pool(prepared, vae, cache):
    out, s = cache
    rows = _rows(out)
    # 12 frames, span 9 -> windows at 0 and 3; both flips; 3 videos
    assert s["windows"] == 6 and s["encoded"] == 12 == len(rows)
    assert sorted({(r["video_id"], r["window"], r["start"]) for r in rows})[:2] == [("v0", 0, 0), ("v0", 1, 3)]
    assert {r["hflip"] for r in rows if r["video_id"] == "v1" and r["window"] == 1} == {False, True}
    clips = ClipDataset(prepared, num_images=0, **CLIP)
    r = next(r for r in rows if r["hflip"] and r["window"] == 1)
    latents = load_file(str(out / f"{r['shard']}.safetensors"))
    with torch.no_grad():
        expect = vae.encode(clips.read_clip(r["video_id"], r["start"], r["stride"], True)[:4][None])[0]
    torch.testing.assert_close(latents[f"{r['clip_id']}/video"], expect, rtol=1e-4, atol=1e-5)
    assert f"{r['clip_id']}/images" not in latents  # images live in the pool

    pool = _rows(out / "images")
    assert sorted(p["video_id"] for p in pool) == ["v0", "v1", "v2"] and all(p["num_images"] == 4 for p in pool)
    p = pool[1]
    imgs = load_file(str(out / "images" / f"{p['shard']}.safetensors"))[f"{p['clip_id']}/images"]
    frame, flip, _ = p["frames"][1]
    with torch.no_grad():
        one = vae.encode(clips.read_clip(p["video_id"], frame, 1, flip, length=1)[None])[0, 0]
    torch.testing.assert_close(imgs[1], one, rtol=1e-4, atol=1e-5)

    files = list(out.glob("shard-*.safetensors")) + list((out / "images").glob("shard-*.safetensors"))
    cost = s["cache"]
    assert cost["cache_bytes"] == sum(f.stat().st_size for f in files)
    # 4 video latents per video (2 windows x 2 flips x 1 latent) + 4 pool images vs 1 + 2 per video
    assert cost["latent_frames"] == 3 * (4 + 4)  # per video: 2 windows x 2 flips x 1 latent + 4 pool images
    assert cost["ratio_to_single_clip"] == pytest.approx(8 / 3)  # against 1 latent + 2 images per video


def test_latent_dataset_draws_a_different_variant_each_epoch_deterministically(cache):
    out, _ = cache
    ds = LatentDataset(out, seed=0)
    assert len(ds) == 6  # one item per window
    pool = {p["video_id"]: p for p in _rows(out / "images")}
    pool_latents = {v: load_file(str(out / "images" / f"{p['shard']}.safetensors"))[f"{p['clip_id']}/images"]
                    for v, p in pool.items()}
    seen_flips, seen_images = [], set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[0]
        assert item["latents"].shape == (1 + 2, 4, 4, 4) and item["num_images"] == 2
        seen_flips.append(item["clip_id"][-1])
        for img in item["latents"][1:]:
            where = [(v, j) for v, t in pool_latents.items() for j in range(len(t)) if torch.equal(t[j], img)]
            assert where and where[0][0] != item["video_id"]  # a pool image of another video
            seen_images.add(where[0])
    # two variants (flips): consecutive epochs alternate between them
    assert all(a != b for a, b in zip(seen_flips, seen_flips[1:])) and len(seen_images) > 3
    again = LatentDataset(out, seed=0)
    other = LatentDataset(out, seed=1)
    for epoch in (0, 3):
        ds.set_epoch(epoch), again.set_epoch(epoch), other.set_epoch(epoch)
        assert all(torch.equal(ds[i]["latents"], again[i]["latents"]) for i in range(len(ds)))
    assert any(not torch.equal(ds[i]["latents"], other[i]["latents"]) for i in range(len(ds)))


def test_posterior_samples_are_seeded_draws_of_the_posterior(prepared, vae, tmp_path):
    out = tmp_path / "sampled"
    s = encode(prepared, vae, out, num_images=0, posterior="sample", posterior_samples=2, clips_per_video=1,
               flips="none", progress=False, **CLIP)
    assert s["encoded"] == 3
    r = _rows(out)[0]
    assert r["video_variants"] == 2
    t = load_file(str(out / f"{r['shard']}.safetensors"))
    frames = ClipDataset(prepared, num_images=0, **CLIP).read_clip(r["video_id"], r["start"], r["stride"], False)[:4]
    with torch.no_grad():  # straight from diffusers: the posterior of the unscaled latents
        dist = vae.vae.encode(frames[None].permute(0, 2, 1, 3, 4)).latent_dist
    mean = ((dist.mean - vae.shift_factor) * vae.scaling_factor).permute(0, 2, 1, 3, 4)[0]  # (F, C, h, w)
    std = (dist.std * vae.scaling_factor).permute(0, 2, 1, 3, 4)[0]
    for p, key in enumerate([f"{r['clip_id']}/video", f"{r['clip_id']}/video/1"]):
        torch.testing.assert_close(t[key], mean + std * _noise(0, r["clip_id"], p, tuple(mean.shape)),
                                   rtol=1e-4, atol=1e-5)
    assert not torch.equal(t[f"{r['clip_id']}/video"], t[f"{r['clip_id']}/video/1"])
    # the same inputs give the same cache; the dataset draws among the samples
    encode(prepared, vae, tmp_path / "again", num_images=0, posterior="sample", posterior_samples=2,
           clips_per_video=1, flips="none", progress=False, **CLIP)
    r2 = next(x for x in _rows(tmp_path / "again") if x["clip_id"] == r["clip_id"])
    assert torch.equal(load_file(str(tmp_path / "again" / f"{r2['shard']}.safetensors"))[f"{r['clip_id']}/video/1"],
                       t[f"{r['clip_id']}/video/1"])
    ds = LatentDataset(out)
    drawn = []
    i = next(i for i in range(len(ds)) if ds[i]["clip_id"] == r["clip_id"])
    for epoch in range(4):
        ds.set_epoch(epoch)
        drawn.append(bool(torch.equal(ds[i]["latents"], t[f"{r['clip_id']}/video"])))
    assert drawn[0] != drawn[1] and drawn[:2] == drawn[2:]  # samples 0 and 1 in turn
