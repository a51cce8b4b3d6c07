import argparse

import pytest
import torch
from safetensors.torch import save_file

from medvid.flow.repnet import (DinoViT, EfficientNetLite0, RepNetWeightsError, build_repnet,
                                load_dino_state_dict)
from medvid.utils.weights import MissingWeightsError

TINY = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=32)


def _tiny_dino(seed=0) -> DinoViT:
    torch.manual_seed(seed)
    m = DinoViT(**TINY).eval()
    for p in m.parameters():  # LayerNorms start at 1/0: randomise everything so a mix-up shows
        p.data.normal_(0, 0.2)
    return m


def _training_checkpoint(student: DinoViT, teacher: DinoViT) -> dict:
    """DINO's checkpoint.pth layout: DDP student ("module.backbone."), plain teacher ("backbone."),
    projection heads, optimiser and the argparse namespace."""
    head = {"head.mlp.0.weight": torch.randn(8, 32), "head.last_layer.weight_g": torch.ones(16, 1)}
    return {
        "student": {**{f"module.backbone.{k}": v for k, v in student.state_dict().items()},
                    **{f"module.{k}": v for k, v in head.items()}},
        "teacher": {**{f"backbone.{k}": v for k, v in teacher.state_dict().items()}, **head},
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 3,
        "args": argparse.Namespace(arch="vit_small", patch_size=8),
    }


@pytest.fixture
def images():
    return torch.rand(2, 3, 32, 32)


def test_dino_both_formats_load_exactly(tmp_path, images):
    teacher, student = _tiny_dino(0), _tiny_dino(1)
    ref = teacher(images)
    assert len(ref) == 2 and ref[0].shape == (2, 16, 32)  # 4x4 patches, CLS dropped
    torch.save(teacher.state_dict(), tmp_path / "backbone.pth")
    save_file(teacher.state_dict(), str(tmp_path / "backbone.safetensors"))
    torch.save(_training_checkpoint(student, teacher), tmp_path / "checkpoint.pth")
    for f in ("backbone.pth", "backbone.safetensors", "checkpoint.pth"):
        net = build_repnet("dino", tmp_path / f, num_heads=2)
        assert net.num_layers == 2 and "dino" in net.name
        for a, b in zip(net(images), ref):
            torch.testing.assert_close(a, b)
    st = build_repnet("dino", tmp_path / "checkpoint.pth", num_heads=2, checkpoint_key="student")
    torch.testing.assert_close(st(images)[-1], student(images)[-1])


def test_dino_loading_is_strict(tmp_path):
    sd = _tiny_dino().state_dict()
    missing = {k: v for k, v in sd.items() if k != "blocks.1.attn.qkv.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(RepNetWeightsError, match="blocks.1.attn.qkv.weight"):
        build_repnet("dino", tmp_path / "missing.pth", num_heads=2)
    torch.save({**sd, "blocks.0.extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(RepNetWeightsError, match="blocks.0.extra.weight"):
        build_repnet("dino", tmp_path / "extra.pth", num_heads=2)
    torch.save({"student": {}}, tmp_path / "nothing.pth")
    with pytest.raises(RepNetWeightsError, match="teacher"):
        load_dino_state_dict(tmp_path / "nothing.pth")


def test_random_weights_only_on_request():
    with pytest.raises(MissingWeightsError, match="DINO"):
        build_repnet("dino", None)
    net = build_repnet("dino", None, allow_random=True)
    assert "RANDOM" in net.name and net.num_layers == 12
    with pytest.raises(ValueError, match="unknown"):
        build_repnet("clip")


def test_dino_matches_transformers_vit(images):
    """Our DINO ViT (DINO key names) equals transformers' ViTModel with the converted weights
    (the mapping of transformers' convert_dino_to_pytorch script)."""
    from transformers import ViTConfig, ViTModel

    dino = _tiny_dino()
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                    image_size=32, patch_size=8, layer_norm_eps=1e-6, qkv_bias=True, hidden_act="gelu")
    hf = ViTModel(cfg, add_pooling_layer=False).eval()
    sd = dino.state_dict()
    new = {"embeddings.cls_token": sd["cls_token"], "embeddings.position_embeddings": sd["pos_embed"],
           "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"]}
    v5 = "layers.0.attention.q_proj.weight" in hf.state_dict()  # transformers >= 5 renamed the layers
    names = (("q_proj", "k_proj", "v_proj", "o_proj", "mlp.fc1", "mlp.fc2") if v5 else
             ("attention.query", "attention.key", "attention.value", "output.dense", "intermediate.dense",
              "output.dense"))
    for i in range(2):
        p = f"blocks.{i}."
        q = f"layers.{i}." if v5 else f"encoder.layer.{i}."
        for name in ("weight", "bias"):
            qkv = sd[p + "attn.qkv." + name].chunk(3)
            for part, x in zip(names[:3], qkv):
                new[q + f"attention.{part}.{name}"] = x
            new[q + f"attention.{names[3]}.{name}"] = sd[p + "attn.proj." + name]
            new[q + f"layernorm_before.{name}"] = sd[p + "norm1." + name]
            new[q + f"layernorm_after.{name}"] = sd[p + "norm2." + name]
            new[q + f"{names[4]}.{name}"] = sd[p + "mlp.fc1." + name]
            new[q + f"{'mlp.fc2' if v5 else 'output.dense'}.{name}"] = sd[p + "mlp.fc2." + name]
    hf.load_state_dict(new, strict=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = hf((images - mean) / std, output_hidden_states=True).hidden_states[1:]
        ours = dino(images)
    for h, o in zip(hidden, ours):
        torch.testing.assert_close(o, hf.layernorm(h)[:, 1:], atol=1e-5, rtol=1e-4)


def test_dino_interpolates_positions_for_other_sizes():
    out = _tiny_dino()(torch.rand(1, 3, 48, 64))
    assert out[0].shape == (1, 6 * 8, 32)
    with pytest.raises(ValueError, match="divisible by 8"):
        _tiny_dino()(torch.rand(1, 3, 30, 32))


def test_effnet_lite0_stand_in_matches_its_reference_package():
    """The shipped ImageNet weights through our stand-in equal the stage outputs of the
    efficientnet_lite_pytorch package that produced the checkpoint (dev dependency)."""
    pkg = pytest.importorskip("efficientnet_lite_pytorch")
    from medvid.nets.efficientnet_lite0 import default_weights_path

    net = build_repnet("effnet-lite0")
    assert "stand-in" in net.name and net.num_layers == 7
    ref = pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(default_weights_path())).eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        x = ref._swish(ref._bn0(ref._conv_stem((images * 255 - 127) / 128)))  # Lite preprocessing
        stage_outs = []
        for i, blk in enumerate(ref._blocks):
            x = blk(x, drop_connect_rate=0.0)
            if i in net.stage_ends:
                stage_outs.append(x.flatten(2).transpose(1, 2))
        ours = net(images)
    assert [o.shape[-1] for o in ours] == list(EfficientNetLite0.STAGE_CHANNELS)
    assert [o.shape[1] for o in ours] == [1024, 256, 64, 16, 16, 4, 4]
    for a, b in zip(ours, stage_outs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    net.train()
    assert not net.training  # frozen extractor: BatchNorm statistics never update
