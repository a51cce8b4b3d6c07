"""Wan2.1 checkpoints in the original (non-diffusers) layout, as Wan-AI and MedGen publish them.

A folder such as ``Wan2.1-T2V-14B`` (or MedGen's fully fine-tuned 14B) holds::

    config.json                                   Wan's own model config (dim, num_heads, ffn_dim, ...)
    diffusion_pytorch_model.safetensors           the DiT in one file, or
    diffusion_pytorch_model-0000k-of-0000n.safetensors + diffusion_pytorch_model.safetensors.index.json
    Wan2.1_VAE.pth                                the video VAE (a plain state dict)
    models_t5_umt5-xxl-enc-bf16.pth               the UMT5-XXL encoder in Wan's own module names
    google/umt5-xxl/                              its tokenizer

Each part is converted into diffusers' classes: the DiT and the VAE through diffusers' single-file
loaders (``from_single_file`` with its Wan converters, given the config derived here, so nothing is
fetched), the text encoder by renaming Wan's T5 keys (``wan/modules/t5.py``) to transformers'
``UMT5EncoderModel``. ``.pth`` files are read with ``torch.load(weights_only=True)``: tensors only,
no code is unpickled. The scheduler is Wan's UniPC sampler with flow shift 3.0, as diffusers'
Wan2.1-T2V releases configure it.

Text-to-video only: the image-to-video release also needs its open-clip image encoder, for which
use the ``-Diffusers`` folder.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from medvid.utils.logging import get_logger

log = get_logger("t2v.wan")

DIT_NAME = "diffusion_pytorch_model"
VAE_NAMES = ("Wan2.1_VAE.pth", "Wan2.1_VAE.safetensors")
T5_NAMES = ("models_t5_umt5-xxl-enc-bf16.pth", "models_t5_umt5-xxl-enc-bf16.safetensors")
TOKENIZER_DIR = "google/umt5-xxl"
VAE_CONFIG_OVERRIDE = "vae_config.json"
"""Optional diffusers AutoencoderKLWan config beside the VAE, for VAEs other than Wan2.1's own."""


def is_original_layout(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_dir() or (p / "model_index.json").is_file():
        return False
    return (p / f"{DIT_NAME}.safetensors").is_file() or (p / f"{DIT_NAME}.safetensors.index.json").is_file()


def _missing(p: Path, what: str, names) -> ValueError:
    return ValueError(
        f"{p}: no {what} ({' or '.join(names)}); an original-layout Wan2.1 folder holds config.json, "
        f"{DIT_NAME}*.safetensors, {VAE_NAMES[0]}, {T5_NAMES[0]} and {TOKENIZER_DIR}/. Download the whole "
        "release (or use its -Diffusers version)"
    )


def _read_tensors(f: Path) -> dict[str, torch.Tensor]:
    if f.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(f))
    try:
        sd = torch.load(str(f), map_location="cpu", weights_only=True)  # tensors only, never code
    except Exception as e:  # noqa: BLE001 - any unpickling refusal becomes a message naming the file
        raise ValueError(f"{f}: not a plain tensor state dict ({e}); re-save it with safetensors") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{f}: expected a dict of tensors; re-save it with safetensors")
    return sd


def read_dit(p: Path) -> dict[str, torch.Tensor]:
    """The DiT's state dict from one file or from the shards its index lists."""
    index = p / f"{DIT_NAME}.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [f for f in files if not (p / f).is_file()]
        if missing:
            raise ValueError(f"{index} lists shard(s) {missing} that are not in {p}; finish the download")
        sd: dict[str, torch.Tensor] = {}
        for f in files:
            sd.update(_read_tensors(p / f))
        return sd
    single = p / f"{DIT_NAME}.safetensors"
    if not single.is_file():
        raise _missing(p, "DiT weights", [f"{DIT_NAME}.safetensors", index.name])
    return _read_tensors(single)


def transformer_config(wan_cfg: dict[str, Any], sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Wan's config.json (+ shapes of the weights) -> diffusers WanTransformer3DModel config."""
    dim, heads = int(wan_cfg["dim"]), int(wan_cfg["num_heads"])
    kind = wan_cfg.get("model_type", "t2v")
    patch = list(sd["patch_embedding.weight"].shape[2:]) if "patch_embedding.weight" in sd else [1, 2, 2]
    cfg = {
        "_class_name": "WanTransformer3DModel",
        "patch_size": patch, "num_attention_heads": heads, "attention_head_dim": dim // heads,
        "in_channels": int(wan_cfg.get("in_dim", 16)), "out_channels": int(wan_cfg.get("out_dim", 16)),
        "text_dim": int(sd["text_embedding.0.weight"].shape[1]) if "text_embedding.0.weight" in sd else 4096,
        "freq_dim": int(wan_cfg.get("freq_dim", 256)), "ffn_dim": int(wan_cfg["ffn_dim"]),
        "num_layers": int(wan_cfg["num_layers"]), "cross_attn_norm": bool(wan_cfg.get("cross_attn_norm", True)),
        "qk_norm": "rms_norm_across_heads", "eps": float(wan_cfg.get("eps", 1e-6)),
    }
    if kind == "i2v" or "img_emb.proj.0.weight" in sd:
        cfg["image_dim"] = int(sd["img_emb.proj.0.weight"].shape[0])
        cfg["added_kv_proj_dim"] = dim
    return cfg


def _vae_config(p: Path) -> dict[str, Any]:
    """Wan2.1's VAE is one fixed architecture: AutoencoderKLWan's defaults, unless overridden."""
    import inspect

    from diffusers import AutoencoderKLWan

    override = p / VAE_CONFIG_OVERRIDE
    if override.is_file():
        return json.loads(override.read_text())
    sig = inspect.signature(AutoencoderKLWan.__init__)
    return {"_class_name": "AutoencoderKLWan",
            **{k: v.default for k, v in sig.parameters.items() if k != "self" and v.default is not inspect.Parameter.empty}}


def _from_single_file(cls, sd: dict[str, torch.Tensor], config: dict[str, Any], dtype: torch.dtype):
    from medvid.t2v.wan import dtype_kwargs

    with tempfile.TemporaryDirectory(prefix="medvid-wan-config-") as d:
        (Path(d) / "config.json").write_text(json.dumps(config))
        return cls.from_single_file(sd, config=d, local_files_only=True, **dtype_kwargs(dtype))


# Wan's T5 (wan/modules/t5.py) -> transformers' UMT5EncoderModel, per block i.
_T5_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # GELU(gate(x)) * fc1(x): T5's gated-gelu
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def convert_wan_t5(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Wan's UMT5 encoder state dict -> (UMT5EncoderModel state dict, UMT5Config kwargs).

    The config comes from the shapes: Wan's umt5_xxl is vocab 256384, d_model 4096, 64 heads of 64,
    d_ff 10240, 24 layers, 32 relative-position buckets (max distance 128), one bias table per block."""
    out: dict[str, torch.Tensor] = {}
    block = re.compile(r"^blocks\.(\d+)\.(.+)$")
    layers = 0
    for k, v in sd.items():
        m = block.match(k)
        if k == "token_embedding.weight":
            out["shared.weight"] = v
            out["encoder.embed_tokens.weight"] = v
        elif k == "norm.weight":
            out["encoder.final_layer_norm.weight"] = v
        elif m and m.group(2) in _T5_BLOCK:
            out[f"encoder.block.{m.group(1)}.{_T5_BLOCK[m.group(2)]}"] = v
            layers = max(layers, int(m.group(1)) + 1)
        else:
            raise ValueError(f"unexpected key {k!r} in Wan's T5 encoder weights; is this the umt5-xxl encoder file?")
    heads = int(sd["blocks.0.pos_embedding.embedding.weight"].shape[1])
    cfg = {
        "vocab_size": int(sd["token_embedding.weight"].shape[0]), "d_model": int(sd["token_embedding.weight"].shape[1]),
        "d_kv": int(sd["blocks.0.attn.q.weight"].shape[0]) // heads, "d_ff": int(sd["blocks.0.ffn.fc1.weight"].shape[0]),
        "num_layers": layers, "num_heads": heads,
        "relative_attention_num_buckets": int(sd["blocks.0.pos_embedding.embedding.weight"].shape[0]),
        "relative_attention_max_distance": 128, "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0,
    }
    return out, cfg


def load_original_wan_pipeline(path: str | Path, dtype: torch.dtype = torch.float32, transformer: bool = True):
    """A WanPipeline built from an original-layout folder (the VAE stays float32); without the DiT
    when ``transformer`` is False."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    p = Path(path)
    if not (p / "config.json").is_file():
        raise _missing(p, "config.json", ["config.json"])
    wan_cfg = json.loads((p / "config.json").read_text())
    if wan_cfg.get("model_type", "t2v") != "t2v":
        raise ValueError(f"{p}/config.json: model_type {wan_cfg.get('model_type')!r}; original-layout folders are read "
                         "for text-to-video only; use the -Diffusers release for image-to-video")
    vae_file = next((p / n for n in VAE_NAMES if (p / n).is_file()), None)
    t5_file = next((p / n for n in T5_NAMES if (p / n).is_file()), None)
    if vae_file is None:
        raise _missing(p, "VAE", VAE_NAMES)
    if t5_file is None:
        raise _missing(p, "text encoder", T5_NAMES)
    if not (p / TOKENIZER_DIR).is_dir():
        raise _missing(p, "tokenizer folder", [TOKENIZER_DIR + "/"])

    dit = None
    if transformer:
        sd = read_dit(p)
        dit = _from_single_file(WanTransformer3DModel, sd, transformer_config(wan_cfg, sd), dtype)
        del sd
    vae = _from_single_file(AutoencoderKLWan, _read_tensors(vae_file), _vae_config(p), torch.float32)
    t5_sd, t5_cfg = convert_wan_t5(_read_tensors(t5_file))
    with torch.device("meta"):
        text_encoder = UMT5EncoderModel(UMT5Config(**t5_cfg))
    missing, unexpected = text_encoder.load_state_dict(t5_sd, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{t5_file}: does not match a UMT5 encoder (missing {missing[:3]}, unexpected {unexpected[:3]})")
    text_encoder = text_encoder.to(dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(p / TOKENIZER_DIR), local_files_only=True)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)
    log.info("loaded original-layout Wan2.1 from %s (%d layers, dim %d)", p, wan_cfg["num_layers"], wan_cfg["dim"])
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=dit, scheduler=scheduler)
