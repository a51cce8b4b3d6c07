import json

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX

from medvid.latents import VideoVAE, latent_frames, load_vae, tiny_vae, tiny_vae_config
from medvid.utils.weights import MissingWeightsError


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(seed=0, num_blocks=3)  # 4x spatial, 4x temporal: fast on CPU


def video(b=1, t=5, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, h, w, generator=g) * 2 - 1


def test_attributes_and_describe(vae):
    assert (vae.latent_channels, vae.temporal_compression, vae.spatial_compression) == (4, 4, 4)
    assert vae.scaling_factor == pytest.approx(1.15258426)
    d = vae.describe()
    assert d["class"] == "AutoencoderKLCogVideoX" and d["config"]["latent_channels"] == 4
    json.dumps(d)
    assert tiny_vae(num_blocks=4).spatial_compression == 8


@torch.no_grad()
def test_encode_decode_match_diffusers_directly(vae):
    x = video(b=2, t=5)
    z = vae.encode(x)
    ref = vae.vae.encode(x.permute(0, 2, 1, 3, 4)).latent_dist.mean * vae.scaling_factor  # (B, C, F, h, w)
    assert z.shape == (2, 2, 4, 2, 2)
    torch.testing.assert_close(z, ref.permute(0, 2, 1, 3, 4))
    y = vae.decode(z)
    ref_y = vae.vae.decode(ref / vae.scaling_factor).sample.permute(0, 2, 1, 3, 4).clamp(-1, 1)
    assert y.shape == ref_y.shape == (2, 8, 3, 8, 8)  # 5 -> 2 latents -> 8 frames (CogVideoX rule)
    torch.testing.assert_close(y, ref_y)


@torch.no_grad()
@pytest.mark.parametrize("t", [16, 17])
def test_clip_lengths_round_trip(vae, t):
    z = vae.encode(video(t=t, h=8, w=8))
    assert vae.decode(z).shape[1] == t


@torch.no_grad()
def test_encode_images_encodes_each_image_alone(vae):
    imgs = video(b=2, t=2, seed=1)  # (B, N, 3, H, W)
    z = vae.encode_images(imgs)
    assert z.shape == (2, 2, 4, 2, 2)
    for b in range(2):
        for n in range(2):
            alone = vae.vae.encode(imgs[b, n][None, :, None]).latent_dist.mean[:, :, 0] * vae.scaling_factor
            torch.testing.assert_close(z[b, n], alone[0], rtol=1e-4, atol=1e-5)
    # Not the reference code's way (images as consecutive frames of one video).
    as_video = vae.encode(imgs[:1])
    assert as_video.shape[1] == 1 and not torch.allclose(as_video[0, 0], z[0, 0])
    assert vae.encode_images(imgs[:, :0]).shape == (2, 0, 4, 2, 2)
    assert vae.decode_images(z).shape == (2, 2, 3, 8, 8)


@pytest.mark.parametrize("t", [1, 4, 5, 8, 9, 16, 17])
def test_latent_frame_rule_matches_cogvideox(vae, t):
    with torch.no_grad():
        z = vae.encode(video(t=t, h=8, w=8))
    assert z.shape[1] == latent_frames(t) == vae.latent_frames(t)


def test_paper_protocol_frame_mapping():
    assert latent_frames(16) == 4  # 16 clip frames -> 4 video latents (MedSora Table 1)
    assert latent_frames(17) == 5  # CogVideoX native 1 + 4k layout
    assert latent_frames(49) == 13


@torch.no_grad()
def test_sampling_is_reproducible_and_mean_is_deterministic(vae):
    x = video()
    assert torch.equal(vae.encode(x), vae.encode(x))
    a = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
    b = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, vae.encode(x))


@torch.no_grad()
def test_save_load_round_trip_and_pipeline_layout(vae, tmp_path):
    vae.save(tmp_path / "vae")
    assert (tmp_path / "vae" / "config.json").is_file()
    assert list((tmp_path / "vae").glob("*.safetensors"))
    loaded = load_vae(tmp_path / "vae")
    x = video()
    torch.testing.assert_close(loaded.encode(x), vae.encode(x))
    assert loaded.describe()["source"].endswith("vae")
    # A pipeline folder holding vae/ (the CogVideoX-2b layout) works too.
    assert load_vae(tmp_path).spatial_compression == 4


def test_load_errors(tmp_path):
    with pytest.raises(MissingWeightsError, match="config.json"):
        load_vae(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"_class_name": "NotAModel"}))
    with pytest.raises(ValueError, match="NotAModel"):
        load_vae(tmp_path / "bad")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLCogVideoX", **tiny_vae_config()}))
    with pytest.raises(MissingWeightsError):
        load_vae(tmp_path / "noweights")


def test_wraps_in_memory_modules_and_checks_shapes(vae):
    m = AutoencoderKLCogVideoX(**tiny_vae_config(num_blocks=3))
    wrapped = load_vae(m)
    assert isinstance(wrapped, VideoVAE) and load_vae(wrapped) is wrapped
    with pytest.raises(ValueError, match="divisible"):
        vae.encode(video(h=10, w=8))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        vae.encode(torch.zeros(1, 3, 5, 8, 8))
    with pytest.raises(ValueError, match="latents"):
        vae.decode(torch.zeros(1, 2, 7, 2, 2))


@torch.no_grad()
def test_any_encode_decode_module():
    class Pixelshuffle(torch.nn.Module):
        """A lossless 'VAE': space-to-depth. Not diffusers, returns plain tensors."""

        def encode(self, x):  # (B, C, T, H, W) -> (B, 4C, T, H/2, W/2)
            b, c, t, h, w = x.shape
            return x.reshape(b, c, t, h // 2, 2, w // 2, 2).permute(0, 1, 4, 6, 2, 3, 5).reshape(b, 4 * c, t, h // 2, w // 2)

        def decode(self, z):
            b, c4, t, h, w = z.shape
            return z.reshape(b, c4 // 4, 2, 2, t, h, w).permute(0, 1, 4, 5, 2, 6, 3).reshape(b, c4 // 4, t, 2 * h, 2 * w)

    v = VideoVAE(Pixelshuffle(), scaling_factor=0.5, latent_channels=12, temporal_compression=1, spatial_compression=2)
    x = video(t=3, h=8, w=8)
    z = v.encode(x)
    assert z.shape == (1, 3, 12, 4, 4)
    torch.testing.assert_close(v.decode(z), x)
