"""Load the original VideoMAE-v2 checkpoint (``vit_g_hybrid_pt_1200e_ssv2_ft.pth``, the CD-FVD
feature network) into ``transformers``' VideoMAE, so no third-party model code is needed.

VideoMAE-v2's fine-tuning ViT (``videomaev2_finetune.VisionTransformer``, as vendored by cd-fvd)
and Hugging Face's ``VideoMAEForVideoClassification`` compute the same function: Conv3d tubelet
embedding, fixed sinusoidal positions, pre-norm blocks with q/v biases (no k bias), exact GELU,
mean pooling + ``fc_norm``. Only names differ; ``qkv.weight`` is split into query/key/value.
ViT-g/14: hidden 1408, 40 blocks, 16 heads, MLP 6144, tubelet 2, LayerNorm eps 1e-6.
The number of heads cannot be read from the weights: pass ``num_heads`` for other sizes.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

__all__ = ["convert_videomae_v2_state_dict", "load_videomae_v2_checkpoint", "is_videomae_v2_state_dict"]


def is_videomae_v2_state_dict(state: dict) -> bool:
    return "patch_embed.proj.weight" in state and any(k.startswith("blocks.") for k in state)


def convert_videomae_v2_state_dict(state: dict[str, torch.Tensor], num_heads: int = 16, image_size: int = 224,
                                   num_frames: int = 16):
    """Original names -> (VideoMAEConfig, Hugging Face state dict)."""
    from transformers import VideoMAEConfig

    unsupported = [k for k in state if re.search(r"gamma_|cos_attn|logit_scale", k)]
    if unsupported:
        raise ValueError(f"VideoMAE-v2 checkpoint uses layer scale / cosine attention ({unsupported[:3]}), "
                         "which transformers' VideoMAE does not implement; export the model to TorchScript instead")
    pe = state["patch_embed.proj.weight"]  # (D, 3, tubelet, p, p)
    hidden, tubelet, patch = pe.shape[0], pe.shape[2], pe.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    cfg = VideoMAEConfig(
        image_size=image_size, patch_size=patch, num_channels=pe.shape[1], num_frames=num_frames, tubelet_size=tubelet,
        hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=num_heads,
        intermediate_size=state["blocks.0.mlp.fc1.weight"].shape[0], hidden_act="gelu", layer_norm_eps=1e-6,
        qkv_bias=True, use_mean_pooling="fc_norm.weight" in state,
        num_labels=state["head.weight"].shape[0] if "head.weight" in state else 2,
    )
    out = {"videomae.embeddings.patch_embeddings.projection.weight": pe,
           "videomae.embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"]}
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"videomae.encoder.layer.{i}."
        q, k, v = state[src + "attn.qkv.weight"].chunk(3, dim=0)
        out.update({
            dst + "attention.attention.query.weight": q, dst + "attention.attention.key.weight": k,
            dst + "attention.attention.value.weight": v,
            dst + "attention.attention.query.bias": state[src + "attn.q_bias"],
            dst + "attention.attention.value.bias": state[src + "attn.v_bias"],
            dst + "attention.output.dense.weight": state[src + "attn.proj.weight"],
            dst + "attention.output.dense.bias": state[src + "attn.proj.bias"],
            dst + "layernorm_before.weight": state[src + "norm1.weight"], dst + "layernorm_before.bias": state[src + "norm1.bias"],
            dst + "layernorm_after.weight": state[src + "norm2.weight"], dst + "layernorm_after.bias": state[src + "norm2.bias"],
            dst + "intermediate.dense.weight": state[src + "mlp.fc1.weight"], dst + "intermediate.dense.bias": state[src + "mlp.fc1.bias"],
            dst + "output.dense.weight": state[src + "mlp.fc2.weight"], dst + "output.dense.bias": state[src + "mlp.fc2.bias"],
        })
    for a, b in (("fc_norm", "fc_norm"), ("norm", "videomae.layernorm"), ("head", "classifier")):
        for p in ("weight", "bias"):
            if f"{a}.{p}" in state:
                out[f"{b}.{p}"] = state[f"{a}.{p}"]
    if "head.weight" not in state:
        out["classifier.weight"] = torch.zeros(2, hidden)
        out["classifier.bias"] = torch.zeros(2)
    return cfg, out


def load_videomae_v2_checkpoint(path: str | Path, num_heads: int = 16):
    """``.pth`` of the original code -> ``VideoMAEForVideoClassification`` in eval mode (strict)."""
    from transformers import VideoMAEForVideoClassification

    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model", "module"):
        if isinstance(ckpt, dict) and key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    if not (isinstance(ckpt, dict) and is_videomae_v2_state_dict(ckpt)):
        raise ValueError(f"--videomae {path}: not a VideoMAE-v2 state dict (no patch_embed.proj.weight / blocks.*)")
    cfg, sd = convert_videomae_v2_state_dict(ckpt, num_heads=num_heads)
    model = VideoMAEForVideoClassification(cfg)
    if "pos_embed" in ckpt:  # learnable positions are not what the SSv2 checkpoint uses
        ref = model.videomae.embeddings.position_embeddings
        if ckpt["pos_embed"].shape != ref.shape or not torch.allclose(ckpt["pos_embed"].float(), ref.float(), atol=1e-4):
            raise ValueError(f"--videomae {path}: learned position embeddings are not supported (expected the fixed sinusoid table)")
    model.load_state_dict(sd, strict=True)
    return model.eval()
