"""Frequency-compensated video VAE (MedSora section 3.3).

A frozen CogVideoX causal VAE (diffusers ``AutoencoderKLCogVideoX``) plus small trainable
"frequency compensation" residual blocks that restore the high-frequency detail the base loses:

* encoder side, 2D: one residual block per spatial downsampling, placed *before* each 2D
  downsampling (the paper's placement), applied frame by frame: Conv3x3 -> ReLU -> Conv3x3.
  (The reference code instead puts a Conv3x3-ReLU-Conv3x3-ReLU block after the encoder's mid block;
  we drop its final ReLU, which would only let the residual add, never subtract.)
* decoder side, 3D: a residual block after the decoder's mid block and after each up block (the
  reference's placement): Norm -> ReLU -> Dropout(0.2) -> Conv3d 3x3x3. Deviations: GroupNorm
  instead of the reference's BatchNorm3d (batches of one video; identical in train and eval), and
  the 3x3x3 convolution is *causal* in time with a cache across the decoder's frame chunks (the
  base decodes 2 latent frames at a time with causal convolutions; a centred temporal kernel would
  see zero padding at every chunk boundary and make the output depend on the chunking).

The last convolution of every block is zero-initialised, so an untrained compensated VAE equals the
base exactly. The blocks hook into the base's own modules, so every frame count the base accepts
(1 + 4k frames, 8k frames, single images) works unchanged.

Saved as one folder that ``medvid.latents.load_vae`` opens: the base's ``config.json`` +
``diffusion_pytorch_model.safetensors``, plus ``compensation.safetensors`` and ``medvid_vae.json``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CompensationConfig", "FrequencyCompensatedVAE", "compensated_video_vae", "load_compensated", "MEDVID_VAE_FILE", "COMP_FILE"]

MEDVID_VAE_FILE = "medvid_vae.json"
COMP_FILE = "compensation.safetensors"
KIND = "frequency-compensated"


@dataclass
class CompensationConfig:
    hidden_channels: int | None = None  # width of the 2D blocks (default: the feature's channels)
    dropout: float = 0.2  # decoder blocks (reference value)
    encoder: bool = True
    decoder: bool = True

    def __post_init__(self):
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"compensation dropout {self.dropout} must be in [0, 1)")


class Residual2d(nn.Module):
    """x + Conv3x3(ReLU(Conv3x3(x))) on every frame of (B, C, T, H, W)."""

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or channels
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, C, H, W)
        y = self.conv2(F.relu(self.conv1(y)))
        return x + y.reshape(b, t, c, h, w).transpose(1, 2)


class CausalResidual3d(nn.Module):
    """x + Conv3d_3x3x3(Dropout(ReLU(GroupNorm(x)))), causal in time.

    The two frames before each chunk come from the previous chunk (``self.cache``), or repeat the
    first frame at the start of a video (as diffusers' CogVideoXCausalConv3d pads).
    """

    def __init__(self, channels: int, groups: int, dropout: float):
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(groups, channels), channels)
        self.drop = nn.Dropout(dropout)
        self.conv = nn.Conv3d(channels, channels, 3, padding=(0, 1, 1))
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.cache: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(F.relu(self.norm(x)))  # (B, C, T, H, W)
        # GroupNorm statistics span the chunk's frames, as the base decoder's own GroupNorms do.
        past = self.cache if self.cache is not None else y[:, :, :1].expand(-1, -1, 2, -1, -1)
        y = torch.cat([past, y], dim=2)
        self.cache = y[:, :, -2:].detach() if not torch.is_grad_enabled() else y[:, :, -2:]
        return x + self.conv(y)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


class FrequencyCompensatedVAE(nn.Module):
    """A frozen diffusers ``AutoencoderKLCogVideoX`` + trainable compensation blocks.

    Exposes what ``VideoVAE`` uses (``config``, ``encode``, ``decode``, ``disable_tiling``,
    ``save_pretrained``), so ``VideoVAE(FrequencyCompensatedVAE(base))`` is a medvid VAE.
    """

    def __init__(self, base: nn.Module, config: CompensationConfig | None = None):
        super().__init__()
        self.comp_config = config or CompensationConfig()
        self.base = base.requires_grad_(False).eval()
        groups = int(getattr(base.config, "norm_num_groups", 32))
        cfg = self.comp_config
        self.encoder_blocks = nn.ModuleList()
        self.decoder_blocks = nn.ModuleList()
        self._hooks = []
        if cfg.encoder:
            for block in base.encoder.down_blocks:
                if block.downsamplers is None:
                    continue
                down = block.downsamplers[0]
                comp = Residual2d(down.conv.in_channels, cfg.hidden_channels)
                self.encoder_blocks.append(comp)
                # before the 2D downsampling: rewrite the downsampler's input
                self._hooks.append(down.register_forward_pre_hook(lambda m, args, c=comp: (c(args[0]),) + args[1:]))
        if cfg.decoder:
            targets = [base.decoder.mid_block] + list(base.decoder.up_blocks)
            for mod in targets:
                channels = mod.resnets[-1].out_channels
                comp = CausalResidual3d(channels, groups, cfg.dropout)
                self.decoder_blocks.append(comp)

                def after(m, args, out, c=comp):
                    return (c(out[0]),) + tuple(out[1:]) if isinstance(out, tuple) else c(out)

                self._hooks.append(mod.register_forward_hook(after))
            # a decoder call without conv_cache starts a new video: forget the causal caches
            self._hooks.append(base.decoder.register_forward_pre_hook(self._reset_caches, with_kwargs=True))

    def _reset_caches(self, module, args, kwargs):
        cache = kwargs.get("conv_cache", args[2] if len(args) > 2 else None)
        if cache is None:
            for blk in self.decoder_blocks:
                blk.cache = None

    # -- what VideoVAE uses -------------------------------------------------------------------
    @property
    def config(self):
        return self.base.config

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        return self.base.encode(x, return_dict=return_dict)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        return self.base.decode(z, return_dict=return_dict)

    def disable_tiling(self):
        self.base.disable_tiling()

    def disable_slicing(self):
        self.base.disable_slicing()

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.eval()  # the base is frozen: its layers never switch to training behaviour
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("base.")]

    def compensation_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("base.")}

    def save_pretrained(self, folder: str | os.PathLike, safe_serialization: bool = True, **kw) -> Path:
        """One folder: base (diffusers layout) + compensation.safetensors + medvid_vae.json."""
        from safetensors.torch import save_file

        folder = Path(folder)
        self.base.save_pretrained(str(folder), safe_serialization=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.compensation_state_dict().items()}
        tmp = folder / f".{COMP_FILE}.tmp{os.getpid()}"
        save_file(state, str(tmp))
        os.replace(tmp, folder / COMP_FILE)
        doc = {"kind": KIND, "compensation": asdict(self.comp_config), "weights": COMP_FILE,
               "base_class": type(self.base).__name__,
               "trainable_parameters": sum(p.numel() for p in self.trainable_parameters())}
        (folder / MEDVID_VAE_FILE).write_text(json.dumps(doc, indent=1), encoding="utf-8")
        return folder


def load_compensated(base: nn.Module, folder: str | os.PathLike) -> FrequencyCompensatedVAE:
    """Attach the compensation saved in ``folder`` to an already loaded ``base`` (strict)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    doc_path = folder / MEDVID_VAE_FILE
    try:
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{doc_path}: unreadable ({e}); re-save the VAE with `medvid train-vae`") from e
    if doc.get("kind") != KIND:
        raise ValueError(f"{doc_path}: kind {doc.get('kind')!r} is not {KIND!r}")
    model = FrequencyCompensatedVAE(base, CompensationConfig(**doc.get("compensation", {})))
    weights = folder / doc.get("weights", COMP_FILE)
    if not weights.is_file():
        raise ValueError(f"{weights}: missing; the folder {folder} is incomplete (re-save it with `medvid train-vae`)")
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("base.")]
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit the compensation modules: missing {missing}, unexpected {unexpected}")
    return model


def compensated_video_vae(base_vae: Any, config: CompensationConfig | None = None):
    """``VideoVAE`` (or diffusers module) -> ``VideoVAE`` around a new FrequencyCompensatedVAE."""
    from medvid.latents.vae import VideoVAE

    module = base_vae.vae if isinstance(base_vae, VideoVAE) else base_vae
    return VideoVAE(FrequencyCompensatedVAE(module, config), source=f"compensated({getattr(base_vae, 'source', 'in-memory')})")
