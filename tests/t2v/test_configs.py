"""The shipped Wan configs load into their config classes (medvid's and accelerate's own)."""

from pathlib import Path

import pytest

from medvid.config import load_config
from medvid.t2v.wan_train import WanTrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "wan"
TRAIN = ["lora_1.3b.yaml", "medgen_lora_1.3b.yaml", "full_14b.yaml"]


@pytest.mark.parametrize("name", TRAIN)
def test_train_configs_load(name):
    from medvid.t2v.buckets import Bucket, parse_buckets

    cfg = load_config(WanTrainConfig, CONFIGS / name)
    buckets = parse_buckets(cfg.data.buckets)
    assert Bucket(480, 832, 81) in buckets and Bucket(512, 768, 81) in buckets  # Wan's size and MedVideoCap's 3:2
    assert any(b.height > b.width for b in buckets) and any(b.height == b.width for b in buckets)


def test_lora_recipe_values():
    cfg = load_config(WanTrainConfig, CONFIGS / "lora_1.3b.yaml")
    assert cfg.mode == "lora" and cfg.lora.targets == ["q", "k", "v", "o", "ffn.0", "ffn.2"]
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.optim.lr, cfg.epochs) == (32, 32.0, 1e-4, 5)
    assert load_config(WanTrainConfig, CONFIGS / "full_14b.yaml").mode == "full"


@pytest.mark.parametrize("name, kind", [("accelerate_ddp.yaml", "MULTI_GPU"), ("accelerate_fsdp.yaml", "FSDP"),
                                        ("accelerate_deepspeed_zero3.yaml", "DEEPSPEED")])
def test_accelerate_configs_parse_with_accelerate(name, kind):
    from accelerate.commands.config.config_args import ClusterConfig

    c = ClusterConfig.from_yaml_file(str(CONFIGS / name))
    assert c.distributed_type.name == kind and c.num_processes == 8
    if kind == "DEEPSPEED":
        from accelerate.utils import DeepSpeedPlugin

        ds = c.deepspeed_config["deepspeed_config_file"]
        assert DeepSpeedPlugin(hf_ds_config=str(CONFIGS.parents[1] / ds)).zero_stage == 3
    if kind == "FSDP":
        assert c.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "WanTransformerBlock"
        from diffusers.models.transformers.transformer_wan import WanTransformerBlock  # the class exists

        assert WanTransformerBlock.__name__ == "WanTransformerBlock"
