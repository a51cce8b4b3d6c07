"""`medvid sample` / sample_videos: files, the run's VAE, determinism, EMA, CFG, errors."""

import av
import numpy as np
import pytest
import torch

from medvid.cli import main
from medvid.models import create_model
from medvid.sampling import sample_videos
from medvid.utils.checkpoint import load_checkpoint, save_checkpoint
from medvid.utils.video import to_uint8


def test_writes_mp4_gif_npz_and_contact_sheet(tiny_run, tmp_path):
    paths = sample_videos(tiny_run, 3, tmp_path, steps=4, batch_size=2)
    assert [p.name for p in paths] == ["video_0000.mp4", "video_0001.mp4", "video_0002.mp4"]
    for i in range(3):
        assert (tmp_path / f"video_{i:04d}.gif").stat().st_size > 0
        frames = np.load(tmp_path / f"video_{i:04d}.npz")["frames"]
        assert frames.dtype == np.uint8 and frames.shape == (8, 32, 32, 3)  # 2 latent frames -> 8 frames
        with av.open(str(paths[i])) as c:
            assert sum(1 for _ in c.decode(video=0)) == 8
    assert (tmp_path / "contact_sheet.png").is_file()


def test_decodes_through_the_vae_the_run_was_trained_with(tiny_run, tiny_data, tmp_path):
    sample_videos(tiny_run, 1, tmp_path, sampler="ddim", steps=3)
    saved = np.load(tmp_path / "video_0000.npz")
    with torch.no_grad():  # the VAE object `medvid encode` used in the fixture
        video = tiny_data["vae"].decode(torch.from_numpy(saved["latents"])[None])[0].clamp(-1, 1)
    assert np.array_equal(to_uint8(video), saved["frames"])


def test_deterministic_batch_independent_and_ema_by_default(tiny_run, tmp_path):
    lat = lambda d, i=0: np.load(d / f"video_{i:04d}.npz")["latents"]  # noqa: E731
    sample_videos(tiny_run, 2, tmp_path / "a", seed=7, sampler="ddpm", steps=5, batch_size=2)
    sample_videos(tiny_run, 2, tmp_path / "b", seed=7, sampler="ddpm", steps=5, batch_size=1)
    sample_videos(tiny_run, 1, tmp_path / "c", seed=8, sampler="ddpm", steps=5)
    sample_videos(tiny_run, 1, tmp_path / "d", seed=7, sampler="ddpm", steps=5, use_ema=False)
    np.testing.assert_allclose(lat(tmp_path / "a", 1), lat(tmp_path / "b", 1), atol=1e-5)
    assert not np.allclose(lat(tmp_path / "a"), lat(tmp_path / "c"))
    assert not np.allclose(lat(tmp_path / "a"), lat(tmp_path / "d"))  # EMA != raw weights


def test_training_writes_sample_videos(tiny_run):
    folder = tiny_run / "samples" / "step-00000003"
    assert (folder / "video_0001.mp4").is_file() and (folder / "contact_sheet.png").is_file()


def test_cli(tiny_run, tmp_path, capsys):
    rc = main(["sample", "--checkpoint", str(tiny_run), "--num", "1", "--out", str(tmp_path), "--sampler", "dpm++",
               "--steps", "3", "--seed", "1"])
    assert rc == 0 and (tmp_path / "video_0000.mp4").is_file()
    assert main(["sample", "--checkpoint", str(tiny_run), "--num", "0", "--out", str(tmp_path)]) == 2
    assert "--num" in capsys.readouterr().err


@pytest.fixture
def class_checkpoint(tiny_run, tmp_path):
    """A class-conditional (2 classes) checkpoint with random (non-zero) weights."""
    _, state, config = load_checkpoint(tiny_run)
    cfg = dict(state["model_config"], num_classes=2)
    model = create_model(cfg.pop("name"), **cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    st = dict(state, model_config=model.config, num_classes=2)
    return save_checkpoint(tmp_path / "cls", 1, {"model": model.state_dict(), "ema": model.state_dict()}, st, config)


def test_classifier_free_guidance_on_a_class_conditional_model(class_checkpoint, tmp_path):
    lat = lambda d: np.load(d / "video_0000.npz")["latents"]  # noqa: E731
    for name, kw in {"c1": dict(class_id=1), "g1": dict(class_id=1, cfg_scale=1.0),
                     "g4": dict(class_id=1, cfg_scale=4.0), "c0": dict(class_id=0, cfg_scale=4.0)}.items():
        sample_videos(class_checkpoint, 1, tmp_path / name, sampler="ddim", steps=3, **kw)
    assert np.array_equal(lat(tmp_path / "c1"), lat(tmp_path / "g1"))
    assert not np.allclose(lat(tmp_path / "g1"), lat(tmp_path / "g4"), atol=1e-4)
    assert not np.allclose(lat(tmp_path / "g4"), lat(tmp_path / "c0"), atol=1e-4)
    with pytest.raises(ValueError, match="2 classes"):
        sample_videos(class_checkpoint, 1, tmp_path / "bad", steps=2, class_id=5)


def test_unconditional_model_rejects_guidance_and_unknown_vae(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="unconditional"):
        sample_videos(tiny_run, 1, tmp_path, steps=2, cfg_scale=3.0)
    groups, state, config = load_checkpoint(tiny_run)
    bare = save_checkpoint(tmp_path / "novae", 1, {"ema": groups["ema"]}, dict(state, vae=None), config)
    with pytest.raises(ValueError, match="--vae"):
        sample_videos(bare, 1, tmp_path / "x", steps=2)


def test_frames_1_samples_still_images_as_pngs(tiny_run, tmp_path):
    """One latent frame, given to the model as a joint-training image and decoded alone."""
    from medvid.metrics.inputs import is_image_set, list_videos
    from PIL import Image

    paths = sample_videos(tiny_run, 2, tmp_path, steps=3, frames=1)
    assert [p.name for p in paths] == ["image_0000.png", "image_0001.png"]
    img = np.asarray(Image.open(paths[0]))
    assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 0
    assert not list(tmp_path.glob("*.mp4")) and is_image_set(list_videos(tmp_path, "--fake"))  # an image set
    with pytest.raises(ValueError, match="--frames 5"):
        sample_videos(tiny_run, 1, tmp_path / "x", steps=2, frames=5)


def test_checkpoint_records_the_latent_range_and_sampling_clamps_to_it(tiny_run, tiny_data, tmp_path):
    from medvid.data.datasets import LatentDataset

    _, state, _ = load_checkpoint(tiny_run)
    ds = LatentDataset(tiny_data["latent_dir"])
    absmax = max(float(ds[i]["latents"].abs().max()) for i in range(len(ds)))
    assert state["latent_absmax"] == pytest.approx(absmax, abs=1e-3)  # every training item was seen
    # A bound far inside the latents' range: every decoded latent lies inside it (the last step lands on x_0).
    sample_videos(tiny_run, 1, tmp_path / "c", sampler="ddim", steps=4, clip_denoised=0.05)
    assert np.abs(np.load(tmp_path / "c" / "video_0000.npz")["latents"]).max() <= 0.05 + 1e-5
    sample_videos(tiny_run, 1, tmp_path / "n", sampler="ddim", steps=4, clip_denoised="none")
    assert np.abs(np.load(tmp_path / "n" / "video_0000.npz")["latents"]).max() > 0.05
    sample_videos(tiny_run, 1, tmp_path / "a", sampler="ddim", steps=4)  # auto: the recorded bound
    assert np.abs(np.load(tmp_path / "a" / "video_0000.npz")["latents"]).max() <= absmax + 1e-3
    with pytest.raises(ValueError, match="clip_denoised"):
        sample_videos(tiny_run, 1, tmp_path / "x", steps=2, clip_denoised="big")


def test_v_prediction_runs_train_and_sample(tiny_data, tmp_path):
    from medvid.training import train

    sys_path_helper = __import__("medvid_tinyrun")
    out = tmp_path / "run"
    train(sys_path_helper.tiny_config(tiny_data["latent_dir"], max_steps=2, **{"diffusion": {"prediction": "v"}}), out)
    _, state, _ = load_checkpoint(out)
    assert state["diffusion"]["prediction"] == "v"
    from medvid.sampling.generate import load_sampling_model

    assert load_sampling_model(out).diffusion.prediction == "v"
    assert len(sample_videos(out, 1, tmp_path / "s", sampler="dpm++", steps=3)) == 1
