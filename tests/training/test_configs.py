"""The shipped configs load, and the data-set configs hold the paper's recipe."""

from pathlib import Path

import pytest

from medvid.config import ConfigError, load_config
from medvid.training.config import Phase, TrainConfig

CONFIGS = Path(__file__).parent.parent.parent / "configs"


@pytest.mark.parametrize("name", ["colonoscopic", "cholectriplet", "kvasir_capsule"])
def test_paper_configs(name):
    cfg = load_config(TrainConfig, CONFIGS / f"{name}.yaml")
    assert cfg.model.name == "medsora-b"
    assert (cfg.data.num_frames, cfg.data.frame_stride, cfg.data.resolution, cfg.data.num_images) == (16, 3, 128, 8)
    assert cfg.optim.phases == [Phase(2, 1e-3, 16), Phase(None, 1e-4, 2)]
    assert cfg.optim.phase(0).lr == 1e-3 and cfg.optim.phase(1).batch_size == 16 and cfg.optim.phase(2).lr == 1e-4
    assert (cfg.optim.ema_decay, cfg.optim.grad_clip, cfg.optim.clip_from_epoch, cfg.optim.weight_decay) == (0.9999, 1.0, 25, 0.0)
    assert (cfg.diffusion.num_timesteps, cfg.diffusion.beta_start, cfg.diffusion.beta_end) == (1000, 1e-4, 0.02)
    assert (cfg.sample.sampler, cfg.sample.steps) == ("ddim", 250)
    assert cfg.align.enabled and cfg.align.alpha == 0.01
    # the paper's targets are RAFT + DINO: train refuses the stand-in features unless told otherwise
    assert (cfg.align.require_flow, cfg.align.require_repnet, cfg.align.allow_feature_mismatch) == ("raft", "dino", False)
    assert cfg.align.pooling == "sample"


def test_tiny_config_and_overrides():
    cfg = load_config(TrainConfig, CONFIGS / "tiny_cpu.yaml", ["--data.latent_dir", "x", "--model.name", "stdit-s"])
    assert cfg.model.name == "stdit-s" and cfg.data.latent_dir == "x" and cfg.max_steps == 300


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="batchsize"):
        load_config(TrainConfig, CONFIGS / "tiny_cpu.yaml", {"optim.phases": [{"lr": 1e-3, "batchsize": 4}]})
    with pytest.raises(ValueError, match="until_epoch must increase"):
        load_config(TrainConfig, None, {"optim.phases": [{"until_epoch": 3, "lr": 1e-3}, {"until_epoch": 2, "lr": 1e-4}]})
    with pytest.raises(ValueError, match="latent_dir"):
        load_config(TrainConfig, None, {"data.latent_dir": None})
    with pytest.raises(ValueError, match="manifest"):
        load_config(TrainConfig, None, {"data.source": "videos"})
