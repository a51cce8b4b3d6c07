import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medvid.flow.cache import compute_flow_features

PROTO = dict(num_frames=4, frame_stride=1, resolution=32, clips_per_video=2)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Two tiny mp4s of a drifting texture, one train and one val."""
    from medvid.utils.video import write_mp4

    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    rows = []
    for k, split in enumerate(("train", "val")):
        base = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
        frames = np.stack([np.roll(base, (i, 2 * i), axis=(0, 1))[:40, :40] for i in range(12)])
        write_mp4(frames, root / f"v{k}.mp4", fps=10)
        rows.append({"path": f"v{k}.mp4", "id": f"v{k}", "num_frames": 12, "fps": 10.0, "height": 40,
                     "width": 40, "duration": 1.2, "split": split})
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _index(out):
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


def test_cache_contents_match_direct_computation_and_resume(manifest, tmp_path):
    from medvid.data.datasets import ClipDataset, FlowFeatureCache
    from medvid.flow import DISFlow, build_repnet, flow_targets

    out = tmp_path / "feats"
    s = compute_flow_features(manifest, out, shard_size=3, progress=False, **PROTO)
    assert s["computed"] == 4 and s["shards_written"] == 2
    rows = _index(out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["flow"] == "dis" and "stand-in" in meta["repnet"] and meta["num_layers"] == 7
    assert meta["shapes"][0] == [4, 256, 16]  # 4 flow fields, (32/2)^2 tokens, 16 channels
    ds = ClipDataset(str(manifest), split=None, extra_flow_frame=True, num_images=0, **PROTO)
    cid = rows[0]["clip_id"]
    direct = flow_targets(ds.get_clip(cid)["video"][None], DISFlow(), build_repnet("effnet-lite0"))
    cached = FlowFeatureCache(out).get(cid)  # the data helper's reader
    assert len(cached) == 7 and cached[3].dtype == torch.float16
    for a, b in zip(cached, direct):
        torch.testing.assert_close(a.float(), b[0], atol=2e-2, rtol=2e-2)

    # resume: forget the last shard's index line -> its shard is removed and that clip recomputed
    lines = (out / "index.jsonl").read_text().splitlines(keepends=True)
    (out / "index.jsonl").write_text("".join(lines[:3]) + lines[3][:10])  # a cut-short last line too
    s2 = compute_flow_features(manifest, out, shard_size=3, progress=False, **PROTO)
    assert s2["computed"] == 1 and s2["already_done"] == 3 and s2["total_clips"] == 4
    assert {r["clip_id"] for r in _index(out)} == {r["clip_id"] for r in rows}
    for r in _index(out):
        assert f"{r['clip_id']}/layer6" in load_file(str(out / f"{r['shard']}.safetensors"))
    assert compute_flow_features(manifest, out, shard_size=3, progress=False, **PROTO)["computed"] == 0
    with pytest.raises(ValueError, match="another flow method"):
        compute_flow_features(manifest, out, repnet="dino", allow_random_repnet=True, progress=False, **PROTO)


def test_cache_from_a_latent_folder_lines_up_with_latents(manifest, tmp_path):
    encode_mod = pytest.importorskip("medvid.latents.encode")
    from medvid.data.datasets import LatentDataset
    from medvid.latents import tiny_vae

    lat = tmp_path / "latents"
    encode_mod.encode(manifest, tiny_vae(num_blocks=3), lat, num_frames=4, frame_stride=1, resolution=32,
                      num_images=1, clips_per_video=1, progress=False)
    out = tmp_path / "feats"
    s = compute_flow_features(lat, out, splits=("train",), progress=False)
    assert s["computed"] == 2  # both flips of the one window
    ds = LatentDataset(lat, split="train", flow_features_dir=out)
    assert len(ds) == 1
    item = ds[0]
    assert len(item["flow_features"]) == 7 and item["flow_features"][0].shape == (4, 256, 16)
    assert item["latents"].shape[0] == 1 + 1  # 4 frames -> 1 video latent, + 1 image


def test_cli_entry(manifest, tmp_path, capsys):
    from medvid.cli import main

    assert main(["flow-features", str(manifest), "--out", str(tmp_path / "f"), "--num-frames", "2",
                 "--frame-stride", "1", "--resolution", "32", "--splits", "val", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["computed"] == 1
    with pytest.raises(ValueError, match="dtype"):
        compute_flow_features(manifest, tmp_path / "g", dtype="int8")
