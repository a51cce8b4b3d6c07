import json

import numpy as np
import pytest
import torch

from medvid import cli
from medvid.data import ClipDataset, prepare
from medvid.data.synthetic import write_video
from medvid.latents import load_vae, tiny_vae
from medvid.latents.encode import encode
from medvid.latents.scale import SCALE_FILE, fit_latent_scale

CLIP = dict(num_frames=8, frame_stride=1, resolution=16)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    src = root / "src"
    src.mkdir()
    for i, c in enumerate([(200, 30, 0), (0, 180, 40), (20, 0, 220)]):
        write_video(src / f"v{i}.mp4", num_frames=12, height=24, width=32, color=c)
    prepare(src, root / "prep", val_fraction=0.0, progress=False)
    return root / "prep"


@pytest.fixture()
def vae_dir(tmp_path):
    tiny_vae(seed=0, num_blocks=3).save(tmp_path / "vae")
    return tmp_path / "vae"


def _raw_latents(folder, prepared, n):
    """Posterior means of the first ``n`` training clips, unscaled, straight from diffusers."""
    from diffusers import AutoencoderKLCogVideoX

    module = AutoencoderKLCogVideoX.from_pretrained(str(folder)).eval()
    ds = ClipDataset(prepared, extra_flow_frame=False, num_images=0, seed=0, **CLIP)
    out = []
    for k in range(n):
        ds.set_epoch(k // len(ds))
        x = ds[k % len(ds)]["video"][None].permute(0, 2, 1, 3, 4)  # (1, 3, T, H, W)
        with torch.no_grad():
            out.append(module.encode(x).latent_dist.mean.numpy())
    return np.concatenate([o.ravel() for o in out]).astype(np.float64)


def test_fitted_latents_have_mean_0_std_1_and_round_trip_is_unchanged(prepared, vae_dir):
    before = load_vae(vae_dir)
    assert before.scaling_factor == pytest.approx(1.15258426)  # diffusers' CogVideoX default
    doc = fit_latent_scale(vae_dir, prepared, num_clips=5, progress=False, **CLIP)
    raw = _raw_latents(vae_dir, prepared, 5)
    assert doc["shift_factor"] == pytest.approx(raw.mean(), rel=1e-5)
    assert doc["scaling_factor"] == pytest.approx(1 / raw.std(), rel=1e-5)
    assert json.loads((vae_dir / SCALE_FILE).read_text())["previous"]["scaling_factor"] == pytest.approx(1.15258426)
    assert json.loads((vae_dir / "config.json").read_text())["scaling_factor"] == doc["scaling_factor"]

    after = load_vae(vae_dir)  # the folder now encodes to mean 0, std 1 on the data
    assert (after.scaling_factor, after.shift_factor) == (doc["scaling_factor"], doc["shift_factor"])
    ds = ClipDataset(prepared, extra_flow_frame=False, num_images=0, seed=0, **CLIP)
    video = torch.stack([ds[k]["video"] for k in range(3)] + [(ds.set_epoch(1), ds[0])[1]["video"],
                                                              (ds.set_epoch(1), ds[1])[1]["video"]])
    with torch.no_grad():
        z = after.encode(video).double()
        assert float(z.mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(z.std(unbiased=False)) == pytest.approx(1.0, rel=1e-5)
        assert abs(float(before.encode(video).std()) - 1) > 0.05  # the fit changed something
        # decode(encode(x)) does not depend on the factors
        torch.testing.assert_close(after.decode(after.encode(video)), before.decode(before.encode(video)),
                                   rtol=1e-4, atol=1e-5)


def test_encode_warns_when_latents_are_off_scale_and_not_after_the_fit(prepared, vae_dir, tmp_path, caplog, capsys):
    kw = dict(num_images=0, progress=False, clips_per_video=1, **CLIP)
    off = load_vae(vae_dir)
    off.scaling_factor = 0.2  # latents far too small, as a VAE trained from scratch gave
    s = encode(prepared, off, tmp_path / "off", **kw)
    assert s["scale_warning"] and "fit-latent-scale" in s["scale_warning"]
    assert any("fit-latent-scale" in r.getMessage() for r in caplog.records)
    assert s["latents"]["std"] < 0.5 and s["latents"]["bytes"] > 0
    meta = json.loads((tmp_path / "off" / "meta.json").read_text())
    assert meta["latent_stats"]["std"] == pytest.approx(s["latents"]["std"])

    assert cli.main(["fit-latent-scale", str(vae_dir), "--data", str(prepared), "--num-clips", "3", "--num-frames", "8",
                     "--frame-stride", "1", "--resolution", "16", "--no-progress"]) == 0
    assert "scaling_factor" in capsys.readouterr().out
    rc = cli.main(["encode", str(prepared), "--vae", str(vae_dir), "--out", str(tmp_path / "on"), "--num-frames", "8",
                   "--frame-stride", "1", "--resolution", "16", "--num-images", "0", "--clips-per-video", "1",
                   "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0 and "cached latents: mean" in printed and "WARNING" not in printed
    lat = json.loads((tmp_path / "on" / "meta.json").read_text())["latent_stats"]
    assert abs(lat["mean"]) < 0.25 and 0.5 < lat["std"] < 2


def test_train_vae_fits_the_scale_and_build_vae_decodes_with_the_recorded_factors(prepared, tmp_path):
    from medvid.latents.train_vae import train_vae
    from medvid.training.builders import build_vae

    s = train_vae(prepared, tmp_path / "run", vae="tiny:3", steps=1, lr=1e-3, num_frames=8, frame_stride=1,
                  resolution=16, trainable="base", progress=False, fit_scale_clips=3)
    folder = tmp_path / "run" / "vae"
    assert (folder / SCALE_FILE).is_file() and s["latent_scale"]["scaling_factor"] != pytest.approx(1.15258426)
    vae = load_vae(folder)
    assert vae.scaling_factor == s["latent_scale"]["scaling_factor"]
    spec = vae.describe()
    fit_latent_scale(folder, prepared, num_clips=2, progress=False, **CLIP)  # refitted after the latents were made
    again = build_vae(spec, torch.device("cpu"))
    assert (again.scaling_factor, again.shift_factor) == (spec["scaling_factor"], spec["shift_factor"])
