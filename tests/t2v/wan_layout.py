"""Write a diffusers Wan pipeline's weights in the original Wan2.1 release layout (tests only).

The key maps below are the inverses of diffusers' own converters (``convert_wan_transformer_to_
diffusers``, ``convert_wan_vae_to_diffusers``) and of Wan's T5 module names; ``write_original_layout``
checks that diffusers' converters map every written key back to the diffusers key it came from, so
a mistake here fails loudly instead of testing nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

_DIT = [  # diffusers -> Wan, applied in order
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn2", "cross_attn"), ("attn1", "self_attn"),
    (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
    ("norm2", "norm__x"), ("norm3", "norm2"), ("norm__x", "norm3"),
]


def dit_to_wan(key: str) -> str:
    if key == "scale_shift_table":
        return "head.modulation"
    if key.startswith("proj_out."):
        return key.replace("proj_out.", "head.head.")
    for a, b in _DIT:
        key = key.replace(a, b)
    return key.replace("scale_shift_table", "modulation")


_RES = {"norm1.gamma": "residual.0.gamma", "conv1.weight": "residual.2.weight", "conv1.bias": "residual.2.bias",
        "norm2.gamma": "residual.3.gamma", "conv2.weight": "residual.6.weight", "conv2.bias": "residual.6.bias",
        "conv_shortcut.weight": "shortcut.weight", "conv_shortcut.bias": "shortcut.bias"}


def vae_to_wan(key: str) -> str:
    simple = {"quant_conv.weight": "conv1.weight", "quant_conv.bias": "conv1.bias",
              "post_quant_conv.weight": "conv2.weight", "post_quant_conv.bias": "conv2.bias"}
    if key in simple:
        return simple[key]
    side, rest = key.split(".", 1)
    for a, b in (("norm_out.gamma", "head.0.gamma"), ("conv_out.", "head.2."), ("conv_in.", "conv1.")):
        if rest.startswith(a):
            return f"{side}.{rest.replace(a, b, 1)}"
    m = re.match(r"mid_block\.resnets\.(\d)\.(.+)$", rest)
    if m:
        return f"{side}.middle.{2 * int(m.group(1))}.{_RES[m.group(2)]}"
    m = re.match(r"mid_block\.attentions\.0\.(.+)$", rest)
    if m:
        return f"{side}.middle.1.{m.group(1)}"
    m = re.match(r"down_blocks\.(\d+)\.(.+)$", rest)
    if m:
        tail = m.group(2)
        return f"encoder.downsamples.{m.group(1)}.{_RES.get(tail, tail)}"
    m = re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", rest)
    if m:
        return f"decoder.upsamples.{4 * int(m.group(1)) + int(m.group(2))}.{_RES[m.group(3)]}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)$", rest)
    if m:
        return f"decoder.upsamples.{4 * int(m.group(1)) + 3}.{m.group(2)}"
    raise KeyError(key)


_T5 = {"layer.0.layer_norm.weight": "norm1.weight", "layer.0.SelfAttention.q.weight": "attn.q.weight",
       "layer.0.SelfAttention.k.weight": "attn.k.weight", "layer.0.SelfAttention.v.weight": "attn.v.weight",
       "layer.0.SelfAttention.o.weight": "attn.o.weight",
       "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
       "layer.1.layer_norm.weight": "norm2.weight", "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
       "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight", "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight"}


def t5_to_wan(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {"token_embedding.weight": sd["shared.weight"], "norm.weight": sd["encoder.final_layer_norm.weight"]}
    for k, v in sd.items():
        m = re.match(r"encoder\.block\.(\d+)\.(.+)$", k)
        if m:
            out[f"blocks.{m.group(1)}.{_T5[m.group(2)]}"] = v
    return out


def write_original_layout(pipe, d: Path, shards: int = 2) -> Path:
    """Save ``pipe`` (a diffusers WanPipeline) as Wan-AI's original release folder at ``d``."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    t = pipe.transformer
    dit = {dit_to_wan(k): v.contiguous() for k, v in t.state_dict().items()}
    back = convert_wan_transformer_to_diffusers(dict(dit))
    assert set(back) == set(t.state_dict()), set(back) ^ set(t.state_dict())
    keys = sorted(dit)
    parts = [keys[i::shards] for i in range(shards)]
    weight_map = {}
    for i, part in enumerate(parts):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: dit[k] for k in part}, str(d / name))
        weight_map.update({k: name for k in part})
    (d / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    c = t.config
    (d / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "model_type": "t2v", "dim": c.num_attention_heads * c.attention_head_dim,
        "num_heads": c.num_attention_heads, "ffn_dim": c.ffn_dim, "freq_dim": c.freq_dim, "in_dim": c.in_channels,
        "out_dim": c.out_channels, "num_layers": c.num_layers, "eps": c.eps, "text_len": 512}))

    vsd = pipe.vae.state_dict()
    vae = {vae_to_wan(k): v for k, v in vsd.items()}
    back = convert_wan_vae_to_diffusers(dict(vae))
    assert set(back) == set(vsd) and all(back[k] is vsd[k] for k in vsd), set(back) ^ set(vsd)
    torch.save(vae, d / "Wan2.1_VAE.pth")
    (d / "vae_config.json").write_text(json.dumps(dict(pipe.vae.config)))
    torch.save(t5_to_wan(pipe.text_encoder.state_dict()), d / "models_t5_umt5-xxl-enc-bf16.pth")
    pipe.tokenizer.save_pretrained(d / "google" / "umt5-xxl")
    return d
