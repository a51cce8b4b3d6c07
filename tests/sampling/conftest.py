import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "training"))  # shared helpers: medvid_tinyrun.py
from medvid_tinyrun import make_tiny_data, tiny_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("tinydata"))


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """A 3-step run on the tiny latents that also writes training-time samples every 3 steps."""
    from medvid.training import train

    out = tmp_path_factory.mktemp("run")
    train(tiny_config(tiny_data["latent_dir"], max_steps=3,
                      **{"sample": {"every": 3, "num": 2, "sampler": "dpm++", "steps": 3}}), out)
    return out
