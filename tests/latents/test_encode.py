import json

import pytest
import torch
from safetensors.torch import save_file

from medvid import cli
from medvid.data import ClipDataset, LatentDataset
from medvid.latents.encode import encode

# One clip per window, one random flip, a fixed image set per clip: the protocol before variants.
KW = dict(num_frames=4, frame_stride=2, resolution=16, num_images=2, shard_size=2, batch_size=2, progress=False,
          clips_per_video=1, flips="random", image_pool=0)


def test_encode_writes_shards_index_meta_and_latent_dataset_reads_them(prepared, vae, tmp_path):
    out = tmp_path / "lat"
    s = encode(prepared, vae, out, **{**KW, "clips_per_video": 2})
    assert s["encoded"] == 6 and s["total_clips"] == 6 and s["shards_written"] == 3
    meta = json.loads((out / "meta.json").read_text())
    assert meta["scaling_factor"] == pytest.approx(vae.scaling_factor)
    assert meta["shapes"] == {"video": [1, 4, 4, 4], "images": [2, 4, 4, 4]}
    assert meta["protocol"]["frame_stride"] == 2 and meta["vae"]["class"] == "AutoencoderKLCogVideoX"
    rows = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
    assert {r["shard"] for r in rows} == {"shard-00000", "shard-00001", "shard-00002"}
    ds = LatentDataset(out)
    item = ds[0]
    assert item["latents"].shape == (1 + 2, 4, 4, 4) and item["num_images"] == 2
    # The cached latents are the VAE's encoding of exactly the clip the index describes.
    r = rows[0]
    clips = ClipDataset(prepared, num_frames=4, frame_stride=2, resolution=16, num_images=0, seed=0)
    frames = clips.read_clip(r["video_id"], r["start"], r["stride"], r["hflip"])[:4]
    with torch.no_grad():
        expect = vae.encode(frames[None])[0]
    torch.testing.assert_close(ds[0]["latents"][:1], expect, rtol=1e-4, atol=1e-5)
    # ... and the images are the other videos' frames recorded in the index, each encoded alone.
    vid, frame, flip = r["images"][0]
    img = clips.read_clip(vid, frame, 1, flip, length=1)
    with torch.no_grad():
        torch.testing.assert_close(ds[0]["latents"][1], vae.encode(img[None])[0, 0], rtol=1e-4, atol=1e-5)
    assert vid != r["video_id"]


def test_resume_after_crash_gives_the_same_cache(prepared, vae, tmp_path, monkeypatch):
    full = tmp_path / "full"
    encode(prepared, vae, full, **KW)
    out = tmp_path / "crash"
    calls = {"n": 0}
    real = vae.encode_images

    def crash_on_second_batch(images, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return real(images, *a, **k)

    monkeypatch.setattr(vae, "encode_images", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="power cut"):
        encode(prepared, vae, out, **KW)
    monkeypatch.undo()
    assert len((out / "index.jsonl").read_text().splitlines()) == 2  # the finished shard survived
    # A crash between renaming a shard and writing its index lines leaves an orphan, and a torn line.
    save_file({"x": torch.zeros(1)}, str(out / "shard-00007.safetensors"))
    with open(out / "index.jsonl", "a") as fh:
        fh.write('{"clip_id": "torn')
    s = encode(prepared, vae, out, **KW)
    assert s["already_done"] == 2 and s["encoded"] == 1 and s["total_clips"] == 3
    assert not (out / "shard-00007.safetensors").exists()
    a, b = LatentDataset(full), LatentDataset(out)
    assert sorted(r["clip_id"] for r in a.rows) == sorted(r["clip_id"] for r in b.rows)
    got = {b[i]["clip_id"]: b[i]["latents"] for i in range(len(b))}
    for i in range(len(a)):
        torch.testing.assert_close(got[a[i]["clip_id"]], a[i]["latents"])
    assert encode(prepared, vae, out, **KW)["encoded"] == 0


def test_protocol_mismatch_refused(prepared, vae, tmp_path):
    encode(prepared, vae, tmp_path / "o", **KW)
    with pytest.raises(ValueError, match="different VAE, dtype or clip protocol"):
        encode(prepared, vae, tmp_path / "o", **{**KW, "frame_stride": 3})
    with pytest.raises(ValueError, match="spatial compression"):
        encode(prepared, vae, tmp_path / "o2", **{**KW, "resolution": 18})


def test_flow_features_join_by_clip_id(prepared, vae, tmp_path):
    out = tmp_path / "lat"
    encode(prepared, vae, out, **KW)
    ids = [json.loads(l)["clip_id"] for l in (out / "index.jsonl").read_text().splitlines()]
    flow = tmp_path / "flow"
    flow.mkdir()
    # The agreed flow-feature cache layout: index.jsonl + "<clip_id>/layer{i}" tensors in <shard>.safetensors.
    feats = {f"{cid}/layer{i}": torch.full((4, 6, 8), float(k * 10 + i)) for k, cid in enumerate(ids[:2]) for i in range(3)}
    save_file(feats, str(flow / "flow-00000.safetensors"))
    (flow / "index.jsonl").write_text("".join(json.dumps({"clip_id": c, "shard": "flow-00000", "num_layers": 3}) + "\n" for c in ids[:2]))
    ds = LatentDataset(out, flow_features_dir=flow)
    assert len(ds) == 2  # the clip without features is left out
    for i in range(2):
        item = ds[i]
        k = ids.index(item["clip_id"])
        assert [float(t[0, 0, 0]) for t in item["flow_features"]] == [k * 10.0, k * 10 + 1.0, k * 10 + 2.0]


def test_cli_encode_from_vae_folder(prepared, vae, tmp_path, capsys):
    vae.save(tmp_path / "vae")
    argv = ["encode", str(prepared / "manifest.jsonl"), "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "c"),
            "--num-frames", "4", "--frame-stride", "2", "--resolution", "16", "--num-images", "0", "--no-progress"]
    assert cli.main(argv) == 0
    # defaults: 12 frames, span 9 -> 2 windows per video, both flips: 4 clips per video
    printed = capsys.readouterr().out
    assert "encoded 12 clip(s)" in printed and "6 windows of 3 videos" in printed and "cache size" in printed
    assert LatentDataset(tmp_path / "c")[0]["latents"].shape == (1, 4, 4, 4)
    assert cli.main(argv[:2] + ["--vae", str(tmp_path / "novae"), "--out", str(tmp_path / "d")]) == 2
    with pytest.raises(ValueError, match="medvid encode"):
        LatentDataset(tmp_path / "nowhere")


def test_encode_follows_the_settings_the_vae_was_trained_with(prepared, vae, tmp_path, capsys):
    from medvid.utils.settings import write_vae_settings

    folder = tmp_path / "vae"
    vae.save(folder)
    write_vae_settings(folder, {"resolution": 16, "frame_stride": 2, "num_frames": 9})
    out = tmp_path / "lat"
    encode(prepared, str(folder), out, num_frames=4, num_images=0, progress=False)
    assert {k: v for k, v in json.loads((out / "meta.json").read_text())["protocol"].items()
            if k in ("resolution", "frame_stride")} == {"resolution": 16, "frame_stride": 2}
    argv = ["encode", str(prepared), "--vae", str(folder), "--out", str(tmp_path / "x"), "--resolution", "32"]
    assert cli.main(argv) == 2
    msg = capsys.readouterr().err
    assert "--resolution 32" in msg and "--resolution 16" in msg
