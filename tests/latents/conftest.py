"""Fixtures of the latent-cache tests: three one-colour videos prepared, and a tiny random VAE."""

import pytest

from medvid.data.prepare import prepare
from medvid.data.synthetic import write_video
from medvid.latents import tiny_vae


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    src = root / "src"
    src.mkdir()
    for i, c in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        write_video(src / f"v{i}.mp4", num_frames=12, height=24, width=32, color=c)
    prepare(src, root / "prep", val_fraction=0.0, progress=False)
    return root / "prep"


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(seed=0, num_blocks=3)
