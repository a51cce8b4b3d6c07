"""Wan2.1 through diffusers: loading, LoRA targets and export, latents, the flow-matching loss.

Layout note: inside this module latents keep the diffusers layout ``(B, C, F, h, w)`` because they
go straight from ``AutoencoderKLWan`` into ``WanTransformer3DModel`` and never leave the Wan route;
pixel videos in and out use medvid's ``(B, T, 3, H, W)`` in [-1, 1].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from medvid.utils.logging import get_logger
from medvid.utils.weights import require_weights

log = get_logger("t2v.wan")

# MedGen's release defaults (../shared/reference/medgen.md).
WAN_HEIGHT, WAN_WIDTH = 480, 832
WAN_NUM_FRAMES = 81
WAN_STEPS = 50
WAN_GUIDANCE = 5.0
WAN_FPS = 16
WAN_NEGATIVE_PROMPT = (
    "Distorted, blurry, low quality, watermark, text overlay, static image, worst quality, "
    "JPEG artifacts, deformed, extra limbs, bad anatomy"
)

# The public 1.3B LoRA recipe names modules as the original Wan code does (q, k, v, o, ffn.0,
# ffn.2 in both self- and cross-attention); these are the same Linear layers in diffusers.
WAN_LORA_TARGETS = ("q", "k", "v", "o", "ffn.0", "ffn.2")
_WAN_TO_DIFFUSERS = {
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "o": "to_out.0",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' default file name


def diffusers_lora_targets(targets: Sequence[str]) -> list[str]:
    """Wan-style target names -> diffusers module-name suffixes (diffusers names pass through)."""
    out = []
    for t in targets:
        t = str(t).strip()
        if not t:
            raise ValueError("lora.targets contains an empty name; use e.g. [q, k, v, o, ffn.0, ffn.2]")
        out.append(_WAN_TO_DIFFUSERS.get(t, t))
    return out


def require_wan_folder(path: str | Path | None) -> Path:
    """A Wan2.1 folder: diffusers' layout (model_index.json + component folders) or the original
    layout (config.json, diffusion_pytorch_model*.safetensors, Wan2.1_VAE.pth, UMT5 files)."""
    from medvid.t2v.wan_original import is_original_layout

    p = require_weights(
        path,
        "Wan2.1 text-to-video",
        "a Wan2.1 folder: the -Diffusers release (model_index.json, transformer/, vae/, text_encoder/, ...) or "
        "the original release (config.json, diffusion_pytorch_model*.safetensors, Wan2.1_VAE.pth, "
        "models_t5_umt5-xxl-enc-bf16.pth, google/umt5-xxl/), e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        hint="Download it once (huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir DIR) "
        "and pass that folder.",
    )
    if not (p / "model_index.json").is_file() and not is_original_layout(p):
        raise ValueError(
            f"{p} is neither a diffusers pipeline folder (no model_index.json) nor an original-layout Wan2.1 "
            "folder (no diffusion_pytorch_model*.safetensors); pass the folder the release was downloaded to"
        )
    return p


def pipeline_class(path: str | Path) -> str:
    """'WanPipeline' or 'WanImageToVideoPipeline' (original-layout folders are text-to-video)."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return "WanPipeline"
    name = json.loads(index.read_text()).get("_class_name", "WanPipeline")
    if name not in ("WanPipeline", "WanImageToVideoPipeline"):
        raise ValueError(f"{index}: a {name}; medvid reads Wan2.1 WanPipeline (text-to-video) and "
                         "WanImageToVideoPipeline (image-to-video) folders")
    return name


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """diffusers >= 0.36 names the argument ``dtype`` (``torch_dtype`` is deprecated); older: ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def load_wan_pipeline(path: str | Path | None, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                      transformer: bool = True):
    """WanPipeline / WanImageToVideoPipeline from a local folder of either layout; the VAE stays
    float32 (Wan's own recommendation). ``transformer=False`` leaves the DiT out (the encoders
    alone, for ``medvid wan-cache``)."""
    import diffusers
    from diffusers import AutoencoderKLWan

    from medvid.t2v.wan_original import is_original_layout, load_original_wan_pipeline

    p = require_wan_folder(path)
    if is_original_layout(p):
        pipe = load_original_wan_pipeline(p, dtype, transformer=transformer)
    else:
        cls = getattr(diffusers, pipeline_class(p))
        vae = AutoencoderKLWan.from_pretrained(p, subfolder="vae", **dtype_kwargs(torch.float32))
        pipe = cls.from_pretrained(p, vae=vae, **({} if transformer else {"transformer": None}), **dtype_kwargs(dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_wan_transformer(path: str | Path | None, dtype: torch.dtype = torch.float32):
    """Only the DiT (training from a precomputed cache needs neither the VAE nor the text encoder)."""
    from diffusers import WanTransformer3DModel

    from medvid.t2v.wan_original import is_original_layout, read_dit, transformer_config, _from_single_file

    p = require_wan_folder(path)
    if is_original_layout(p):
        sd = read_dit(p)
        return _from_single_file(WanTransformer3DModel, sd, transformer_config(json.loads((p / "config.json").read_text()), sd), dtype)
    return WanTransformer3DModel.from_pretrained(p, subfolder="transformer", **dtype_kwargs(dtype))


def load_wan_vae(path: str | Path | None):
    """Only the VAE, float32 (validation videos of a run trained from a cache)."""
    from diffusers import AutoencoderKLWan

    from medvid.t2v.wan_original import VAE_NAMES, _from_single_file, _read_tensors, _vae_config, is_original_layout

    p = require_wan_folder(path)
    if is_original_layout(p):
        f = next(p / n for n in VAE_NAMES if (p / n).is_file())
        return _from_single_file(AutoencoderKLWan, _read_tensors(f), _vae_config(p), torch.float32)
    return AutoencoderKLWan.from_pretrained(p, subfolder="vae", **dtype_kwargs(torch.float32))


def load_wan_scheduler(path: str | Path | None):
    """The sampling scheduler the release configures (diffusers folders: scheduler/; original
    layout: UniPC with flow shift 3.0, as diffusers' Wan2.1 480p releases set it)."""
    import diffusers

    p = require_wan_folder(path)
    cfg = p / "scheduler" / "scheduler_config.json"
    if cfg.is_file():
        return getattr(diffusers, json.loads(cfg.read_text())["_class_name"]).from_pretrained(p, subfolder="scheduler")
    return diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                             num_train_timesteps=1000, flow_shift=3.0)


def add_lora(transformer: torch.nn.Module, rank: int = 32, alpha: float = 32.0, targets: Sequence[str] = WAN_LORA_TARGETS,
             dropout: float = 0.0) -> Any:
    """Freeze the transformer and add a peft LoRA adapter ("default") -> its LoraConfig."""
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"lora.rank must be >= 1, got {rank}")
    cfg = LoraConfig(
        r=int(rank),
        lora_alpha=float(alpha),
        lora_dropout=float(dropout),
        init_lora_weights=True,  # B = 0: training starts exactly at the base model
        target_modules=diffusers_lora_targets(targets),
    )
    transformer.requires_grad_(False)
    try:
        transformer.add_adapter(cfg)
    except ValueError as e:
        raise ValueError(f"lora.targets {list(targets)} match no layer of the Wan transformer: {e}") from e
    return cfg


def lora_state_dict(transformer: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter's weights keyed ``blocks.0.attn1.to_q.lora_A.weight``: peft's names without the
    adapter name, which is what diffusers' own LoRA training scripts save for transformer models
    (``convert_state_dict_to_diffusers`` would turn them into the legacy ``lora.down/up`` names)."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer, state_dict=state)


def save_lora(out_dir: str | Path, state: dict[str, torch.Tensor], lora_config: Any) -> Path:
    """Write ``out_dir/pytorch_lora_weights.safetensors`` as ``WanPipeline.save_lora_weights`` does,
    with the adapter config (rank, alpha, targets) in the metadata, so ``pipe.load_lora_weights``
    in plain diffusers code restores it exactly."""
    import os
    import shutil

    from diffusers import WanPipeline

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    meta = lora_config.to_dict()
    meta["target_modules"] = sorted(meta["target_modules"]) if meta.get("target_modules") else meta.get("target_modules")
    WanPipeline.save_lora_weights(
        tmp,
        transformer_lora_layers={k: v.detach().cpu().contiguous() for k, v in state.items()},
        transformer_lora_adapter_metadata=meta,
        weight_name=LORA_WEIGHT_NAME,
    )
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)
    return out_dir / LORA_WEIGHT_NAME


def latent_stats(vae, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's per-channel latent mean and std, shaped (1, C, 1, 1, 1)."""
    c = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, device=device, dtype=dtype).view(1, c, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=device, dtype=dtype).view(1, c, 1, 1, 1)
    return mean, std


@torch.no_grad()
def encode_video(vae, video: torch.Tensor) -> torch.Tensor:
    """Pixels (B, T, 3, H, W) in [-1, 1] -> normalised latents (B, C, f, h, w), f = (T - 1) / 4 + 1.

    Uses the posterior mean (deterministic) and Wan's normalisation ``(z - mean) / std``, the
    inverse of what ``WanPipeline`` applies before decoding.
    """
    x = video.permute(0, 2, 1, 3, 4).to(vae.device, vae.dtype)  # (B, 3, T, H, W)
    z = vae.encode(x).latent_dist.mode()  # (B, C, f, h, w)
    mean, std = latent_stats(vae, z.device, z.dtype)
    return (z - mean) / std


@torch.no_grad()
def encode_prompts(pipe, prompts: Sequence[str], max_sequence_length: int = 512) -> torch.Tensor:
    """Prompts -> T5 embeddings (B, L, 4096 for Wan) exactly as WanPipeline computes them."""
    embeds, _ = pipe.encode_prompt(
        prompt=list(prompts), do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
        device=pipe.text_encoder.device,
    )
    return embeds


def sample_sigmas(scheduler, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training noise levels drawn uniformly from the scheduler's (shifted) table.

    ``FlowMatchEulerDiscreteScheduler`` stores ``sigmas[i]`` = shift(1 - i/N) and
    ``timesteps[i] = 1000 * sigmas[i]``; drawing an index uniformly gives Wan's shifted-uniform
    timestep distribution and the same timestep values the pipeline feeds the model at inference.
    """
    n = len(scheduler.timesteps)
    idx = torch.randint(0, n, (batch_size,), generator=generator)
    return scheduler.sigmas[idx].float(), scheduler.timesteps[idx].float()


def flow_matching_loss(
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    scheduler,
    generator: torch.Generator | None = None,
    condition: torch.Tensor | None = None,
    image_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rectified-flow loss as Wan trains: x_t = (1 - s) x0 + s eps, target v = eps - x0.

    ``latents`` (B, C, f, h, w) normalised; the model's prediction is the velocity that
    ``FlowMatchEulerDiscreteScheduler.step`` integrates (x_{s'} = x_s + (s' - s) v).
    Image-to-video: ``condition`` (B, 4 + C, f, h, w) from ``i2v_condition`` is concatenated to
    x_t on the channel axis and ``image_embeds`` (B, 257, 1280) feed the image cross-attention,
    as ``WanImageToVideoPipeline`` does at inference.
    """
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device)
    sigmas, timesteps = sample_sigmas(scheduler, b, generator)
    s = sigmas.to(latents.device).view(b, 1, 1, 1, 1)
    x0 = latents.float()
    x_t = (1.0 - s) * x0 + s * noise
    target = noise - x0
    dtype = next(p.dtype for p in transformer.parameters())
    if condition is not None:
        x_t = torch.cat([x_t, condition.float()], dim=1)  # (B, C + 4 + C, f, h, w)
    extra = {} if image_embeds is None else {"encoder_hidden_states_image": image_embeds.to(dtype)}
    pred = transformer(
        hidden_states=x_t.to(dtype),
        timestep=timesteps.to(latents.device),
        encoder_hidden_states=prompt_embeds.to(dtype),
        return_dict=False,
        **extra,
    )[0]
    return torch.nn.functional.mse_loss(pred.float(), target)


def is_i2v(transformer) -> bool:
    """An image-to-video Wan2.1 DiT (it has the image cross-attention)."""
    return getattr(transformer.config, "image_dim", None) is not None


@torch.no_grad()
def i2v_condition(vae, first_frame: torch.Tensor, num_frames: int) -> torch.Tensor:
    """First frames (B, 3, H, W) in [-1, 1] -> Wan2.1 I2V conditioning (B, 4 + C, f, h, w).

    The same tensor ``WanImageToVideoPipeline.prepare_latents`` builds: the VAE latents of the first
    frame followed by T - 1 black frames, normalised, after a 4-channel mask that is 1 on the first
    frame (repeated over the VAE's 4x temporal compression) and 0 elsewhere."""
    b, _, h, w = first_frame.shape
    x = torch.cat([first_frame[:, :, None], first_frame.new_zeros(b, 3, num_frames - 1, h, w)], dim=2)  # (B, 3, T, H, W)
    z = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mode()  # (B, C, f, h, w)
    mean, std = latent_stats(vae, z.device, z.dtype)
    z = (z - mean) / std
    lh, lw = z.shape[-2:]
    t4 = vae.config.scale_factor_temporal
    mask = torch.zeros(b, 1, num_frames, lh, lw, device=z.device, dtype=z.dtype)
    mask[:, :, 0] = 1
    mask = torch.cat([mask[:, :, :1].repeat_interleave(t4, dim=2), mask[:, :, 1:]], dim=2)  # (B, 1, T + 3, h, w)
    mask = mask.view(b, -1, t4, lh, lw).transpose(1, 2)  # (B, 4, f, h, w)
    return torch.cat([mask, z], dim=1)


@torch.no_grad()
def encode_first_frames(pipe, first_frame: torch.Tensor) -> torch.Tensor:
    """First frames (B, 3, H, W) in [-1, 1] -> image-encoder states (B, N, D) as the pipeline's
    ``encode_image`` computes them (penultimate hidden layer of the CLIP vision tower)."""
    import numpy as np

    images = [np.ascontiguousarray(((f.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy())
              for f in first_frame]
    return pipe.encode_image(images, device=pipe.image_encoder.device)


def frames_to_uint8(frames):
    """WanPipeline output (np float in [0, 1], (T, H, W, 3)) -> uint8 numpy for the writers."""
    import numpy as np

    arr = np.asarray(frames)
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
