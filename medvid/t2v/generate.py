"""`medvid generate`: text-to-video from a MedSora checkpoint trained with captions, or from Wan2.1.

    medvid generate --model wan --checkpoint Wan2.1-T2V-1.3B-Diffusers --lora runs/wan-lora/lora \\
        --prompt "laparoscopic cholecystectomy, the grasper retracts the gallbladder fundus" --out videos/
    medvid generate --model wan --checkpoint Wan2.1-T2V-14B --batch prompts.json --out videos/   # original layout
    medvid generate --model wan --checkpoint Wan2.1-I2V-14B-480P-Diffusers --image frame.png --prompt "..."
    medvid generate --model medsora --checkpoint runs/medsora-text --prompt "echocardiogram ..." --out videos/
    medvid generate --model wan --checkpoint ... --frames 1 --prompt "chest x-ray ..."           # a PNG image

``--checkpoint`` for Wan: a diffusers folder, an original-layout release folder (the single-file or
sharded DiT, Wan2.1_VAE.pth and the UMT5 files, as MedGen publishes its 14B model), or a train-wan
run. ``--lora``: a LoRA in diffusers' or the original Wan / ComfyUI layout (``medvid.t2v.wan_lora``).
``--image``: image-to-video through ``WanImageToVideoPipeline`` (an I2V checkpoint); without
--height/--width the size follows the image's aspect ratio at Wan's 480x832 area.

Every video is ``OUT/<name>.mp4`` (``--frames 1``: ``OUT/<name>.png``) plus ``OUT/<name>.json``
(prompt, negative prompt, seed, model, checkpoint, LoRA, settings, seconds; :func:`video_record`). The sidecar is written
last, so it marks a finished video: a batch that is interrupted and started again skips every prompt
whose sidecar and output exist. In a batch, a prompt that cannot be generated (over the text
encoder's length, an unusable first frame) is skipped with a warning and listed in the result.

Defaults follow MedGen's release for Wan (480x832, 81 frames, 50 steps, guidance 5, its negative
prompt); MedSora samples at the size it was trained on with DDIM (the run's ``sample.steps``) and
guidance 4, and uses the null text (the empty caption) as the unconditional branch unless a
negative prompt is given.

Many GPUs: ``torchrun --nproc-per-node N -m medvid generate --batch prompts.json ...`` gives rank r
prompts r, r + N, ... (each on its ``LOCAL_RANK`` GPU); ``--shard I/N`` does part I of N as an
independent job. Every video is seeded by its prompt entry, so it is the same whichever rank makes
it; there is nothing to merge (one file pair per prompt).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from medvid.data.manifest import write_json
from medvid.t2v.prompts import PromptSpec, load_prompts, slugify
from medvid.utils.logging import get_logger
from medvid.utils.sharding import add_shard_arguments

log = get_logger("t2v.generate")

MEDSORA_GUIDANCE = 4.0
OnStep = Callable[[int, int], None]
"""Progress callback ``on_step(k, n)`` after denoising step k of n; raising in it stops the video."""


@dataclass
class GenerateConfig:
    model: Literal["medsora", "wan"]
    checkpoint: str
    """wan: a diffusers Wan2.1 folder or a train-wan run folder; medsora: a `medvid train` run or step-* folder."""
    out: str = "generated"
    prompt: str | None = None
    batch: str | None = None
    """prompts.json: a list of strings or of {"prompt", "seed", "negative_prompt", "name"} objects."""
    name: str | None = None
    """Output name for --prompt (default: the first words of the prompt)."""
    lora: str | None = None
    """wan: a LoRA folder (pytorch_lora_weights.safetensors), .safetensors file (diffusers or Wan /
    ComfyUI layout) or train-wan run folder."""
    image: str | None = None
    """wan image-to-video: the first frame for --prompt (batch entries give their own "image")."""
    lora_scale: float = 1.0
    negative_prompt: str | None = None
    """Default for every prompt (None: MedGen's negative prompt for wan, the null text for medsora)."""
    seed: int = 0
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    steps: int | None = None
    guidance: float | None = None
    fps: float | None = None
    sampler: str = "ddim"
    """medsora only: ddim, ddpm or dpm++."""
    max_sequence_length: int = 512
    """wan only: T5 tokens per prompt."""
    use_ema: bool = True
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.model not in ("medsora", "wan"):
            raise ValueError(f"--model {self.model!r}: choose medsora or wan")
        if (self.prompt is None) == (self.batch is None):
            raise ValueError("give exactly one of --prompt TEXT or --batch prompts.json")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("--prompt is empty; write the text to generate")
        for k in ("height", "width", "num_frames", "steps"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ValueError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
        if self.model == "medsora" and self.lora is not None:
            raise ValueError("--lora applies to --model wan only; a MedSora checkpoint holds all its weights")
        if self.model == "medsora" and self.image is not None:
            raise ValueError("--image applies to --model wan with an image-to-video checkpoint")
        if self.image is not None and self.batch is not None:
            raise ValueError("--image goes with --prompt; in a --batch file give each entry its own \"image\"")
        if self.model == "wan" and self.num_frames is not None and (self.num_frames - 1) % 4:
            raise ValueError(f"--frames {self.num_frames}: Wan generates 4k + 1 frames (1 for an image, 17, 33, 49, 81)")
        if self.guidance is not None and self.guidance < 0:
            raise ValueError(f"--guidance must be >= 0, got {self.guidance}")


def prompt_specs(cfg: GenerateConfig) -> list[PromptSpec]:
    if cfg.batch is not None:
        specs = load_prompts(cfg.batch, base_seed=cfg.seed)
    else:
        from medvid.t2v.prompts import parse_prompts

        entry = {"prompt": cfg.prompt, "seed": cfg.seed, "name": cfg.name or slugify(cfg.prompt)}
        if cfg.image is not None:
            entry["image"] = cfg.image
        specs = parse_prompts([entry], source="--prompt", base_seed=cfg.seed)
    return specs


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available; use --device cpu (or auto)")
    return torch.device(name)


def output_path(out_dir: Path, name: str, num_frames: int | None) -> Path:
    """``NAME.png`` for a single frame (a still image), else ``NAME.mp4``."""
    return out_dir / f"{name}.{'png' if num_frames == 1 else 'mp4'}"


def is_done(out_dir: Path, name: str, num_frames: int | None = None) -> bool:
    return (out_dir / f"{name}.json").is_file() and output_path(out_dir, name, num_frames).is_file()


def i2v_size(image_height: int, image_width: int, area: int = 480 * 832, multiple: int = 16) -> tuple[int, int]:
    """Video size with the image's aspect ratio and about ``area`` pixels, in multiples of 16 (the
    VAE's 8x times the DiT's 2x2 patches), as diffusers' Wan I2V example chooses it."""
    ar = image_height / image_width
    h = max(multiple, round((area * ar) ** 0.5 / multiple) * multiple)
    w = max(multiple, round((area / ar) ** 0.5 / multiple) * multiple)
    return h, w


def open_first_frame(path: str | None, where: str = "--image"):
    """The image at ``path`` as RGB PIL, or an error naming the prompt and the file."""
    from PIL import Image, UnidentifiedImageError

    if not path:
        raise ValueError(f"{where}: image-to-video needs a first frame; give --image FILE (or \"image\" in the prompt entry)")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{where}: image {p} does not exist")
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:  # the header's size too
        raise ValueError(f"{where}: {p} is not a readable image ({e}); give a PNG or JPEG file") from e


def load_first_frame(path: str | None, height: int, width: int, where: str = "--image",
                     tolerance: float | None = 0.02):
    """The first frame for image-to-video as an RGB PIL image, checked against the video size.

    The pipeline resizes the image to height x width; an image of another aspect ratio would be
    stretched and one much smaller than the video blown up, so both are errors that say the fix.
    ``tolerance=None`` skips the aspect check (a size derived from the image itself, whose rounding
    to multiples of 16 alone moves the aspect ratio)."""
    import math

    img = open_first_frame(path, where)
    p = Path(path)
    w0, h0 = img.size
    if tolerance is not None and abs(math.log((w0 / h0) / (width / height))) > math.log1p(tolerance):
        fh, fw = i2v_size(h0, w0)
        raise ValueError(
            f"{where}: image {p} is {w0}x{h0} (aspect {w0 / h0:.3f}) but the video is {width}x{height} (aspect "
            f"{width / height:.3f}); the first frame would be stretched. Crop the image to {width}:{height}, or leave "
            f"out --height/--width so the size follows the image ({fw}x{fh})"
        )
    if w0 * 2 < width or h0 * 2 < height:
        raise ValueError(
            f"{where}: image {p} is {w0}x{h0}, less than half the {width}x{height} video; it would be blown up and "
            f"blurred. Give a larger image or a smaller --height/--width (e.g. {w0 // 16 * 16}x{h0 // 16 * 16})"
        )
    return img


# ---------------------------------------------------------------------------------------- Wan


def resolve_wan_checkpoint(checkpoint: str | Path, lora: str | Path | None, use_ema: bool = True) -> dict[str, Any]:
    """-> {"base": diffusers folder, "lora": LoRA folder/file or None, "transformer": folder or None}.

    ``checkpoint`` is a diffusers Wan folder, or a train-wan run folder (its config names the base
    model; its ``lora[-ema]/`` or ``transformer[-ema]/`` export is used)."""
    from medvid.t2v.wan import require_wan_folder
    from medvid.t2v.wan_lora import lora_file

    ck = Path(checkpoint)
    out: dict[str, Any] = {"base": None, "lora": None, "transformer": None}
    if (ck / "model_index.json").is_file():
        out["base"] = ck
    elif (ck / "config.yaml").is_file() and ((ck / "lora").is_dir() or (ck / "transformer").is_dir()):
        import yaml

        run = yaml.safe_load((ck / "config.yaml").read_text()) or {}
        out["base"] = require_wan_folder(run.get("model_path"))
        kind = "lora" if run.get("mode", "lora") == "lora" else "transformer"
        pick = ck / f"{kind}-ema" if use_ema and (ck / f"{kind}-ema").is_dir() else ck / kind
        out[kind] = pick
    else:
        out["base"] = require_wan_folder(ck)  # MissingWeightsError / "not a diffusers folder"
    if lora is not None:
        try:
            f = lora_file(lora)
        except ValueError as e:
            raise ValueError(f"--lora {lora}: {e}") from e
        out["lora"] = f.parent if f.name == "pytorch_lora_weights.safetensors" else f
    return out


def load_wan_for_generation(cfg: GenerateConfig, device: torch.device):
    from medvid.t2v.wan import load_wan_pipeline

    where = resolve_wan_checkpoint(cfg.checkpoint, cfg.lora, cfg.use_ema)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    pipe = load_wan_pipeline(where["base"], dtype=torch.bfloat16 if bf16 else torch.float32, device="cpu")
    if where["transformer"] is not None:
        from diffusers import WanTransformer3DModel

        from medvid.t2v.wan import dtype_kwargs

        pipe.transformer = WanTransformer3DModel.from_pretrained(where["transformer"], **dtype_kwargs(pipe.transformer.dtype))
    if where["lora"] is not None:
        from medvid.t2v.wan_lora import load_lora_into

        where["lora_layout"] = load_lora_into(pipe, where["lora"], cfg.lora_scale)
    is_i2v = getattr(pipe, "image_encoder", None) is not None
    if cfg.image is not None and not is_i2v:
        raise ValueError(f"--image: {where['base']} is a text-to-video model; give an image-to-video checkpoint "
                         "(e.g. Wan2.1-I2V-14B-480P-Diffusers) or drop --image")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), where


def wan_settings(cfg: GenerateConfig) -> dict[str, Any]:
    from medvid.t2v import wan as W

    return {
        "height": cfg.height or W.WAN_HEIGHT,
        "width": cfg.width or W.WAN_WIDTH,
        "fixed_size": cfg.height is not None and cfg.width is not None,
        "num_frames": cfg.num_frames or W.WAN_NUM_FRAMES,
        "steps": cfg.steps or W.WAN_STEPS,
        "guidance": W.WAN_GUIDANCE if cfg.guidance is None else cfg.guidance,
        "fps": cfg.fps or W.WAN_FPS,
        "max_sequence_length": cfg.max_sequence_length,
        "lora_scale": cfg.lora_scale,
    }


def check_prompt_length(tokenizer, spec: PromptSpec, max_length: int) -> None:
    from medvid.t2v.wan_data import caption_tokens

    n = caption_tokens(tokenizer, spec.prompt)
    if n > max_length:
        raise ValueError(f"prompt {spec.name!r} is {n} tokens, over the text encoder's {max_length} "
                         "(--max-sequence-length); Wan would silently cut it. Shorten the prompt or raise "
                         "--max-sequence-length (Wan2.1 was trained with 512)")


def wan_video(pipe, spec: PromptSpec, negative: str | None, s: dict[str, Any],
              on_step: OnStep | None = None) -> np.ndarray:
    """One video as uint8 (T, H, W, 3); the noise comes from a CPU generator seeded with spec.seed,
    so a seed gives the same video on any device. Image-to-video pipelines take ``spec.image`` as
    the first frame (the size follows the image unless the settings fix it). ``on_step(k, n)`` is
    called after every denoising step."""
    from medvid.t2v.wan import frames_to_uint8

    check_prompt_length(pipe.tokenizer, spec, s["max_sequence_length"])
    height, width = s["height"], s["width"]
    kw: dict[str, Any] = {}
    if getattr(pipe, "image_encoder", None) is not None:
        tolerance = 0.02
        if not s.get("fixed_size"):
            img = open_first_frame(spec.image, where=f"prompt {spec.name!r}")
            height, width = i2v_size(img.height, img.width, s["height"] * s["width"])
            tolerance = None
        kw["image"] = load_first_frame(spec.image, height, width, where=f"prompt {spec.name!r}", tolerance=tolerance)
    if on_step is not None:
        total = s["steps"]

        def step_end(_pipe, i, _t, tensors):
            on_step(i + 1, total)
            return tensors

        kw["callback_on_step_end"] = step_end
    out = pipe(
        prompt=spec.prompt,
        negative_prompt=negative,
        height=height,
        width=width,
        num_frames=s["num_frames"],
        num_inference_steps=s["steps"],
        guidance_scale=s["guidance"],
        generator=torch.Generator("cpu").manual_seed(spec.seed),
        output_type="np",
        max_sequence_length=s["max_sequence_length"],
        **kw,
    )
    return frames_to_uint8(out.frames[0])


# ------------------------------------------------------------------------------------ MedSora


def load_medsora_for_generation(cfg: GenerateConfig, device: torch.device) -> dict[str, Any]:
    """Model (EMA weights by default), diffusion, VAE and text conditioner of a `medvid train` run."""
    from medvid.config import from_dict
    from medvid.diffusion import GaussianDiffusion
    from medvid.t2v.text import build_text_conditioner
    from medvid.training.config import TextConfig
    from medvid.models import create_model_from_config
    from medvid.training.builders import build_vae
    from medvid.utils.checkpoint import load_checkpoint

    weights = "ema" if cfg.use_ema else "model"
    groups, state, config = load_checkpoint(cfg.checkpoint, groups=[weights])
    if "model_config" not in state or "latent_shape" not in state:
        raise ValueError(f"--checkpoint {cfg.checkpoint} is not a `medvid train` checkpoint (no model_config in state.json)")
    text_cfg = (config or {}).get("text") or {}
    if not text_cfg.get("enabled"):
        raise ValueError(
            f"--checkpoint {cfg.checkpoint} was trained without text (text.enabled: false in its config.yaml); "
            "use `medvid sample` for it, or train with text.enabled: true"
        )
    if weights not in groups:
        raise ValueError(f"--checkpoint {cfg.checkpoint} holds no {weights!r} weights; use --no-ema")
    if cfg.height is not None or cfg.width is not None or cfg.num_frames not in (None, 1):
        raise ValueError("--height/--width/--frames: MedSora generates the latent size it was trained on; drop them "
                         "(--frames 1 alone asks for a still image)")
    model = create_model_from_config(dict(state["model_config"]))
    model.load_state_dict(groups[weights])
    model.to(device).eval()
    d = state.get("diffusion") or {}
    diffusion = GaussianDiffusion.from_description(d, learn_sigma=bool(state.get("learn_sigma", True)))
    if state.get("vae") is None:
        raise ValueError(f"--checkpoint {cfg.checkpoint} does not record its VAE; it cannot be decoded to video")
    vae = build_vae(state["vae"], device)
    text = build_text_conditioner(from_dict(TextConfig, text_cfg, where=f"{cfg.checkpoint} text config"), device=device)
    sample_cfg = (config or {}).get("sample") or {}
    return {"model": model, "diffusion": diffusion, "vae": vae, "text": text, "latent_shape": tuple(state["latent_shape"]),
            "default_steps": int(sample_cfg.get("steps", 250)), "default_fps": float(sample_cfg.get("fps", 8.0)),
            "step": state.get("step"), "latent_absmax": state.get("latent_absmax")}


def medsora_settings(cfg: GenerateConfig, m: dict[str, Any]) -> dict[str, Any]:
    f, c, h, w = m["latent_shape"]
    # --frames 1: one latent frame sampled as a joint-training image (num_images = 1), which the
    # VAE decodes alone into one frame: text-to-image with the video model.
    still = cfg.num_frames == 1
    return {"latent_shape": [1 if still else f, c, h, w], "num_images": int(still), "sampler": cfg.sampler, "steps": cfg.steps or m["default_steps"],
            "guidance": MEDSORA_GUIDANCE if cfg.guidance is None else cfg.guidance, "fps": cfg.fps or m["default_fps"],
            "weights": "ema" if cfg.use_ema else "model", "train_step": m["step"],
            "clip_denoised": m.get("latent_absmax")}


@torch.no_grad()
def medsora_latents(m: dict[str, Any], prompt: str, negative: str | None, seed: int, s: dict[str, Any],
                    on_step: OnStep | None = None) -> torch.Tensor:
    """Sample latents (1, F, C, h, w) for one prompt with classifier-free guidance.

    The conditional branch sees the prompt's encoding; the unconditional one the negative prompt's
    (or the null text). Guidance 1 is exactly the conditional model (the unconditional branch is
    not evaluated)."""
    from medvid.diffusion import sample

    model, text = m["model"], m["text"]
    device = next(model.parameters()).device
    ctx, mask = text.encode([prompt])
    nctx, nmask = text.negative(negative, 1)
    ni = int(s.get("num_images", 0))
    cond = {"context": ctx.to(device), "context_mask": mask.to(device), "num_images": ni}
    uncond = {"context": nctx.to(device), "context_mask": nmask.to(device), "num_images": ni}
    noise = torch.randn((1, *s.get("latent_shape", m["latent_shape"])), generator=torch.Generator().manual_seed(seed))
    return sample(
        lambda x, t: model(x, t, **cond), noise.shape, m["diffusion"], sampler=s["sampler"], steps=s["steps"],
        cfg_scale=s["guidance"], uncond_fn=(lambda x, t: model(x, t, **uncond)) if s["guidance"] != 1.0 else None,
        generator=torch.Generator().manual_seed(seed + 1), noise=noise, device=device, progress=on_step,
        clip_denoised=s.get("clip_denoised"),
    )


def medsora_video(m: dict[str, Any], spec: PromptSpec, negative: str | None, s: dict[str, Any],
                  on_step: OnStep | None = None) -> np.ndarray:
    from medvid.utils.video import to_uint8

    z = medsora_latents(m, spec.prompt, negative, spec.seed, s, on_step)
    decode = m["vae"].decode_images if s.get("num_images") else m["vae"].decode  # an image: decoded alone
    video = decode(z)[0].float().clamp(-1, 1)  # (T, 3, H, W) in [-1, 1]
    return to_uint8(video)


# ------------------------------------------------------------------------------------- driver


def write_frames(frames: np.ndarray, path: Path, fps: float) -> Path:
    """uint8 (T, H, W, 3) -> mp4, or a PNG for a single frame (atomically)."""
    if path.suffix == ".png":
        import os

        from PIL import Image

        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
        Image.fromarray(frames[0]).save(tmp)
        os.replace(tmp, path)
        return path
    from medvid.utils.video import write_mp4

    return write_mp4(frames, path, fps=fps)


def video_record(*, name: str, prompt: str | None, negative_prompt: str | None, seed: int, model: str,
                 checkpoint: str, lora: str | None, image: str | None = None, source: dict[str, Any], settings: dict[str, Any],
                 frames: np.ndarray, seconds: float) -> dict[str, Any]:
    """The JSON sidecar of one video (read by `medvid judge`, the evaluation report and `medvid serve`)."""
    from medvid import __version__

    return {
        "name": name, "prompt": prompt, "negative_prompt": negative_prompt, "seed": seed, "image": image, "model": model,
        "checkpoint": checkpoint, "lora": lora, "source": source, "settings": settings,
        "frames": int(frames.shape[0]), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
        "seconds": round(seconds, 3), "medvid_version": __version__,
    }


def save_video(out_dir: Path, frames: np.ndarray, fps: float, record: dict[str, Any]) -> Path:
    """``OUT/<name>.mp4`` (``.png`` for one frame), then its sidecar ``OUT/<name>.json`` (last: it
    marks a finished video)."""
    path = write_frames(frames, output_path(out_dir, record["name"], int(frames.shape[0])), fps)
    write_json(out_dir / f"{record['name']}.json", record)
    return path


def load_models(cfg: GenerateConfig, models: dict) -> Any:
    """The model ``cfg`` generates with, loaded once and kept in ``models`` (a dict the caller holds)
    while the checkpoint, LoRA, weights, device and precision stay the same."""
    device = _device(cfg.device)
    key = (cfg.model, str(cfg.checkpoint), cfg.lora, cfg.lora_scale, cfg.use_ema, str(device), cfg.precision)
    if key not in models:
        models.clear()  # one model in memory at a time
        models[key] = load_wan_for_generation(cfg, device) if cfg.model == "wan" else load_medsora_for_generation(cfg, device)
    return models[key]


def generate(cfg: GenerateConfig, progress: bool = True, on_step: OnStep | None = None,
             models: dict | None = None, shard: str | None = None) -> dict[str, Any]:
    """Generate every prompt of ``cfg`` into ``cfg.out``.

    Returns ``{"written": [paths], "skipped": [paths already there], "failed": {name: reason}}``.
    A prompt that cannot be generated is an error for ``--prompt`` and a warning (listed under
    "failed") in a batch, so one bad entry does not stop a long job. ``on_step(k, n)`` reports each
    denoising step. ``models`` is a dict the caller keeps between calls (``medvid serve``) so the
    model is loaded once (:func:`load_models`). Under torchrun (or with ``shard="I/N"``) this
    process generates its share of the prompts; torchrun's rank 0 returns every rank's lists."""
    import dataclasses

    from medvid.utils.sharding import sharding

    specs = prompt_specs(cfg)  # validate the prompt file before loading any model
    with sharding(shard, cfg.device) as sh:
        if sh.launched:  # this rank's GPU
            cfg = dataclasses.replace(cfg, device=str(sh.device(cfg.device)))
        result = _generate(cfg, sh.take(specs), progress, on_step, models)
        parts = sh.gather(result)
        return {k: [p for r in parts for p in r[k]] if k != "failed" else {n: e for r in parts for n, e in r[k].items()}
                for k in result}


def _generate(cfg: GenerateConfig, specs: list[PromptSpec], progress: bool, on_step: OnStep | None,
              models: dict | None) -> dict[str, Any]:
    from tqdm.auto import tqdm

    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if cfg.overwrite or not is_done(out_dir, s.name, cfg.num_frames)]
    skipped = [output_path(out_dir, s.name, cfg.num_frames) for s in specs if s not in todo]
    if skipped:
        log.info("%d of %d output(s) already in %s; generating the other %d", len(skipped), len(specs), out_dir, len(todo))
    written: list[Path] = []
    failed: dict[str, str] = {}
    if not todo:
        return {"written": written, "skipped": skipped, "failed": failed}
    loaded = load_models(cfg, {} if models is None else models)
    if cfg.model == "wan":
        from medvid.t2v.wan import WAN_NEGATIVE_PROMPT

        pipe, where = loaded
        settings = wan_settings(cfg)
        default_negative = WAN_NEGATIVE_PROMPT if cfg.negative_prompt is None else cfg.negative_prompt
        make: Callable[[PromptSpec, str | None], np.ndarray] = lambda spec, neg: wan_video(pipe, spec, neg, settings, on_step)  # noqa: E731
        source = {k: (str(v) if v is not None else None) for k, v in where.items()}
    else:
        m = loaded
        settings = medsora_settings(cfg, m)
        default_negative = cfg.negative_prompt
        make = lambda spec, neg: medsora_video(m, spec, neg, settings, on_step)  # noqa: E731
        source = {"checkpoint": str(cfg.checkpoint)}

    bar = tqdm(todo, desc="generate", unit="video", disable=not progress)
    for spec in bar:
        bar.set_postfix_str(spec.name[:40])
        negative = spec.negative_prompt if spec.negative_prompt is not None else default_negative
        t0 = time.perf_counter()
        try:
            frames = make(spec, negative)
        except ValueError as e:
            if cfg.batch is None:
                raise
            failed[spec.name] = str(e)
            log.warning("skipping %s", e)
            continue
        seconds = time.perf_counter() - t0
        path = save_video(out_dir, frames, settings["fps"], video_record(
            name=spec.name, prompt=spec.prompt, negative_prompt=negative, seed=spec.seed, model=cfg.model,
            checkpoint=str(cfg.checkpoint), lora=cfg.lora, image=spec.image, source=source, settings=settings,
            frames=frames, seconds=seconds))
        written.append(path)
        log.info("%s: %.1fs", path, seconds)
    if failed:
        log.warning("%d prompt(s) failed and were skipped: %s", len(failed), ", ".join(failed))
    return {"written": written, "skipped": skipped, "failed": failed}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=["medsora", "wan"])
    parser.add_argument("--checkpoint", required=True,
                        help="wan: diffusers or original-layout Wan2.1 folder, or a train-wan run folder; "
                             "medsora: medvid train run folder")
    parser.add_argument("--lora", default=None,
                        help="wan: LoRA folder / .safetensors (diffusers or Wan/ComfyUI layout) / train-wan run folder")
    parser.add_argument("--image", default=None, help="wan image-to-video: the first frame (PNG/JPEG)")
    parser.add_argument("--lora-scale", type=float, default=1.0)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--batch", help="prompts.json: list of strings or {prompt, seed, negative_prompt, name, image}")
    parser.add_argument("--out", default="generated", help="output folder (NAME.mp4 + NAME.json per video)")
    parser.add_argument("--name", default=None, help="output name for --prompt")
    parser.add_argument("--negative-prompt", default=None, help="default: MedGen's for wan, the null text for medsora")
    parser.add_argument("--seed", type=int, default=0, help="seed of --prompt; base seed of batch entries without one")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--frames", "--num-frames", dest="num_frames", type=int, default=None,
                        help="frames per video (wan: 4k + 1, default 81); 1 writes a PNG image")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm", "dpm++"], help="medsora only")
    parser.add_argument("--max-sequence-length", type=int, default=512, help="wan only: T5 tokens")
    parser.add_argument("--no-ema", action="store_true", help="use raw weights instead of EMA")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--overwrite", action="store_true", help="regenerate videos that already exist")
    add_shard_arguments(parser, merge=False)


def main(args: argparse.Namespace) -> int:
    from medvid.utils.weights import MissingWeightsError

    try:
        cfg = GenerateConfig(
            model=args.model, checkpoint=args.checkpoint, out=args.out, prompt=args.prompt, batch=args.batch,
            name=args.name, lora=args.lora, image=args.image, lora_scale=args.lora_scale, negative_prompt=args.negative_prompt,
            seed=args.seed, height=args.height, width=args.width, num_frames=args.num_frames, steps=args.steps,
            guidance=args.guidance, fps=args.fps, sampler=args.sampler, max_sequence_length=args.max_sequence_length,
            use_ema=not args.no_ema, device=args.device, precision=args.precision, overwrite=args.overwrite,
        )
        result = generate(cfg, shard=args.shard)
    except (ValueError, MissingWeightsError) as e:
        print(f"medvid generate: {e}", file=sys.stderr)
        return 2
    print(f"{len(result['written'])} output(s) written, {len(result['skipped'])} already done, "
          f"{len(result['failed'])} failed, in {args.out}")
    return 0

