"""Wan LoRA files in the layouts people exchange, and `medvid export-lora`.

    medvid export-lora runs/wan-lora/lora --format comfyui --out medgen_lora_comfy.safetensors
    medvid export-lora medgen_lora_comfy.safetensors --format diffusers --out lora_diffusers/

Layouts (keys of one module shown for block 0's self-attention query):

* ``diffusers`` (what train-wan writes, ``WanPipeline.save_lora_weights``):
  ``transformer.blocks.0.attn1.to_q.lora_A.weight`` / ``lora_B.weight``; rank and alpha in the
  safetensors metadata (``lora_adapter_metadata``). Bare peft keys (``blocks.0.attn1.to_q...``) read too.
* ``wan`` = ``comfyui`` (the original Wan module names, as ComfyUI, DiffSynth-Studio and the
  Wan repository's tools name them): ``diffusion_model.blocks.0.self_attn.q.lora_down.weight`` /
  ``lora_up.weight`` and a scalar ``...q.alpha``; the update is ``alpha / rank * up @ down``.
  Files without the ``diffusion_model.`` prefix or with ``lora_A``/``lora_B`` names read too.
* ``musubi`` (kohya-ss/musubi-tuner, read only): ``lora_unet_blocks_0_self_attn_q.lora_down.weight``.

Reading goes through diffusers' own converters (``WanPipeline.lora_state_dict``), so a file loads
here exactly as ``pipe.load_lora_weights`` loads it; writing the Wan layout is the inverse of that
converter (tested by loading what we write with it). Only ``.safetensors`` files are read: no
pickle is ever unpickled.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from medvid.t2v.wan import LORA_WEIGHT_NAME
from medvid.utils.logging import get_logger

log = get_logger("t2v.lora")
FORMATS = ("wan", "comfyui", "diffusers")
# diffusers module suffix -> original Wan module name, inside each transformer block.
_BLOCK_MODULES = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v", "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o",
    "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img",  # image-to-video models
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}


class LoraFormatError(ValueError):
    """A LoRA file whose keys match none of the layouts medvid reads."""


def lora_file(path: str | Path) -> Path:
    """A LoRA ``.safetensors`` file, a folder holding ``pytorch_lora_weights.safetensors`` (or one
    .safetensors file), or a train-wan run folder (its ``lora/``)."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / LORA_WEIGHT_NAME, p / "lora" / LORA_WEIGHT_NAME):
            if cand.is_file():
                return cand
        files = sorted(p.glob("*.safetensors"))
        if len(files) == 1:
            return files[0]
    elif p.is_file() and p.suffix == ".safetensors":
        return p
    raise ValueError(
        f"LoRA {path}: expected a .safetensors LoRA file, a folder holding {LORA_WEIGHT_NAME} (train-wan's OUT/lora) "
        "or a train-wan run folder" + (" (.pt/.ckpt pickles are not read; convert them to safetensors)"
                                       if p.suffix in (".pt", ".pth", ".ckpt", ".bin") else "")
    )


def detect_layout(keys) -> str | None:
    """'diffusers', 'peft' (bare diffusers names), 'wan', 'wan-bare' (no prefix), 'musubi' or None."""
    keys = [k for k in keys]
    if not keys:
        return None
    lora = (".lora_A.", ".lora_B.", ".lora_down.", ".lora_up.", ".alpha", ".diff_b")
    if all(k.startswith("transformer.") for k in keys) and any(".lora_A." in k for k in keys):
        return "diffusers"
    if any(k.startswith("diffusion_model.") for k in keys) and all(k.startswith("diffusion_model.") for k in keys):
        return "wan" if any(s in k for k in keys for s in lora) else None
    if all(k.startswith("lora_unet_") for k in keys):
        return "musubi"
    if all(k.startswith("blocks.") for k in keys):
        if any(".attn1." in k or ".attn2." in k or ".ffn.net." in k for k in keys) and any(".lora_A." in k for k in keys):
            return "peft"
        if any(".self_attn." in k or ".cross_attn." in k or ".ffn.0." in k or ".ffn.2." in k for k in keys):
            return "wan-bare"
    return None


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, str]:
    """-> (state dict in diffusers' layout with the ``transformer.`` prefix, adapter metadata or None,
    the file's layout). Raises LoraFormatError naming the file when no layout matches."""
    from diffusers import WanPipeline
    from safetensors import safe_open

    f = lora_file(path)
    with safe_open(str(f), framework="pt") as fh:
        raw = {k: fh.get_tensor(k) for k in fh.keys()}
        header = fh.metadata() or {}
    layout = detect_layout(raw)
    if layout is None:
        sample = sorted(raw)[:3]
        raise LoraFormatError(
            f"LoRA {f}: its keys (e.g. {sample}) match neither diffusers' Wan layout "
            "('transformer.blocks.N.attn1.to_q.lora_A.weight') nor the original Wan / ComfyUI layout "
            "('diffusion_model.blocks.N.self_attn.q.lora_down.weight'); is it a LoRA for Wan2.1's transformer? "
            "Re-export it from the tool that made it in one of these layouts"
        )
    if layout == "peft":
        raw = {f"transformer.{k}": v for k, v in raw.items()}
    elif layout == "wan-bare":
        raw = {f"diffusion_model.{k}": v for k, v in raw.items()}
    try:
        sd = WanPipeline.lora_state_dict(raw)
    except (ValueError, KeyError) as e:
        raise LoraFormatError(f"LoRA {f} ({layout} layout): diffusers cannot convert it ({e}); re-export it") from e
    meta = None
    if "lora_adapter_metadata" in header:
        meta = json.loads(header["lora_adapter_metadata"])
        meta = {k.removeprefix("transformer."): v for k, v in meta.items()}
    return sd, meta, layout


def load_lora_into(pipe, path: str | Path, scale: float = 1.0, adapter_name: str = "medvid") -> str:
    """Load a LoRA of any readable layout into ``pipe`` (a diffusers Wan pipeline) -> its layout."""
    f = lora_file(path)
    _, _, layout = read_lora(f)  # validates the keys with a clear error first
    if layout == "diffusers":  # from the file, so diffusers reads rank/alpha from its metadata
        pipe.load_lora_weights(str(f.parent), weight_name=f.name, adapter_name=adapter_name)
    else:  # diffusers' converters fold each module's alpha / rank into its weights
        sd, _, _ = read_lora(f)
        pipe.load_lora_weights(sd, adapter_name=adapter_name)
    if scale != 1.0:
        pipe.set_adapters([adapter_name], adapter_weights=[scale])
    log.info("LoRA %s (%s layout) loaded at scale %g", f, layout, scale)
    return layout


def _rank_alpha(sd: dict[str, torch.Tensor], meta: dict[str, Any] | None) -> dict[str, tuple[int, float]]:
    """Module (diffusers name, no prefix) -> (rank, alpha). Without metadata alpha = rank (scale 1),
    which is how diffusers reads such a file."""
    out = {}
    alpha = float(meta["lora_alpha"]) if meta and meta.get("lora_alpha") is not None else None
    patterns = (meta or {}).get("alpha_pattern") or {}
    for k, v in sd.items():
        if k.endswith(".lora_A.weight"):
            mod = k.removeprefix("transformer.").removesuffix(".lora_A.weight")
            r = int(v.shape[0])
            a = next((float(x) for p, x in patterns.items() if mod.endswith(p)), alpha if alpha is not None else float(r))
            out[mod] = (r, a)
    return out


def to_wan_layout(sd: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """diffusers-layout LoRA -> original Wan / ComfyUI keys with an ``alpha`` per module."""
    ra = _rank_alpha(sd, meta)
    out: dict[str, torch.Tensor] = {}
    for mod, (_, alpha) in ra.items():
        parts = mod.split(".")
        if parts[0] != "blocks" or ".".join(parts[2:]) not in _BLOCK_MODULES:
            raise LoraFormatError(
                f"LoRA module {mod!r} has no name in the original Wan layout (medvid maps attention q/k/v/o, "
                "k_img/v_img and ffn.0/ffn.2 inside blocks); train with those lora.targets or export --format diffusers"
            )
        wan = f"diffusion_model.blocks.{parts[1]}.{_BLOCK_MODULES['.'.join(parts[2:])]}"
        out[f"{wan}.lora_down.weight"] = sd[f"transformer.{mod}.lora_A.weight"].contiguous()
        out[f"{wan}.lora_up.weight"] = sd[f"transformer.{mod}.lora_B.weight"].contiguous()
        out[f"{wan}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
        if f"transformer.{mod}.lora_B.bias" in sd:
            out[f"{wan}.diff_b"] = sd[f"transformer.{mod}.lora_B.bias"].contiguous()
    return out


def export_lora(src: str | Path, out: str | Path, fmt: str = "comfyui") -> Path:
    """Rewrite the LoRA at ``src`` (any readable layout) as ``fmt``; returns the written file.

    ``wan``/``comfyui``: one .safetensors file (``out`` is the file, or a folder to put
    ``<name>.safetensors`` in). ``diffusers``: a folder holding pytorch_lora_weights.safetensors."""
    import os

    from safetensors.torch import save_file

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    sd, meta, layout = read_lora(src)
    out = Path(out)
    if fmt == "diffusers":
        from diffusers import WanPipeline

        out.mkdir(parents=True, exist_ok=True)
        WanPipeline.save_lora_weights(out, transformer_lora_layers={k.removeprefix("transformer."): v.contiguous()
                                                                     for k, v in sd.items()},
                                      transformer_lora_adapter_metadata=meta, weight_name=LORA_WEIGHT_NAME)
        return out / LORA_WEIGHT_NAME
    if out.is_dir() or out.suffix != ".safetensors":
        out = out / f"{lora_file(src).parent.name}_wan.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = to_wan_layout(sd, meta)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"format": "pt", "source": str(src), "source_layout": layout,
                                           "medvid_layout": "wan/comfyui"})
    os.replace(tmp, out)
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lora", help="LoRA .safetensors file, a folder holding one, or a train-wan run folder")
    parser.add_argument("--format", default="comfyui", choices=FORMATS,
                        help="wan = comfyui: original Wan key names (diffusion_model.blocks.N.self_attn.q.lora_down...); "
                             "diffusers: WanPipeline.load_lora_weights layout")
    parser.add_argument("--out", required=True, help="output .safetensors file (wan/comfyui) or folder (diffusers)")


def main(args: argparse.Namespace) -> int:
    try:
        path = export_lora(args.lora, args.out, args.format)
    except ValueError as e:
        print(f"medvid export-lora: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
