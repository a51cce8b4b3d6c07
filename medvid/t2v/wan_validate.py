"""Validation videos during ``train-wan``: fixed prompts rendered every N steps.

Each render writes ``RUN/validation/step-XXXXXXXX/NAME.mp4`` (and ``NAME.json``: prompt, seed,
settings, which weights) and shows the same clip as an animated image under ``validation/NAME`` in
TensorBoard (``RUN/tb``). The noise of every prompt is seeded, so renders at different steps differ
only through the weights. With EMA on, the EMA weights are rendered (they are what is exported).

A run trained from a ``medvid wan-cache`` folder renders with the prompt embeddings the cache
holds and loads the VAE only when the first render is due (moved back to the CPU between renders);
the text encoder is never loaded. Under DeepSpeed/FSDP sharding validation is skipped (rendering
would need every rank in lockstep), with a warning.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medvid.utils.logging import get_logger

log = get_logger("t2v.validate")


@dataclass
class WanValidationConfig:
    every: int = 0
    """Render the validation prompts every N optimiser steps (and at the last step); 0 disables."""
    prompts: list[Any] = field(default_factory=list)
    """Prompts as in a prompts.json: strings or {prompt, seed, name, negative_prompt, image}."""
    prompts_file: str = ""
    """A prompts.json file (added to ``prompts``)."""
    negative_prompt: str | None = None
    """None: MedGen's negative prompt."""
    height: int = 0
    """0: the first bucket's size and length."""
    width: int = 0
    num_frames: int = 0
    steps: int = 30
    guidance: float = 5.0
    fps: float = 16.0


def validation_specs(cfg) -> list:
    """PromptSpecs of ``cfg.validation`` (its prompt list, then its prompts file)."""
    from medvid.t2v.prompts import load_prompts, parse_prompts

    v = cfg.validation
    specs = parse_prompts(list(v.prompts), source="validation.prompts") if v.prompts else []
    specs += load_prompts(v.prompts_file) if v.prompts_file else []
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"validation prompts: name(s) {dup} used twice across validation.prompts and "
                         "validation.prompts_file; give them distinct \"name\"s")
    return specs


def tb_video(writer, tag: str, frames: np.ndarray, step: int, fps: float = 16.0) -> None:
    """Log uint8 (T, H, W, 3) frames as an animated GIF image summary (what SummaryWriter.add_video
    writes, without its moviepy dependency)."""
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    imgs = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=max(1, round(1000 / fps)), loop=0)
    h, w = frames.shape[1:3]
    img = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=buf.getvalue())
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=img)]), step)


class Validator:
    """Renders ``specs`` with the current transformer. ``pipe``: the training pipeline (uncached
    runs, text encoder loaded); otherwise ``cache`` (a WanCacheDataset) supplies the embeddings."""

    def __init__(self, cfg, specs, out_dir: Path, device: torch.device, size: tuple[int, int, int], *,
                 pipe=None, cache=None, writer=None):
        self.cfg, self.specs, self.out_dir, self.device = cfg, specs, Path(out_dir), device
        self.height, self.width, self.frames = size
        self.pipe, self.cache, self.writer = pipe, cache, writer
        self._bare = None  # pipeline without text encoder (cached runs), built on first use
        i2v = (cache.kind == "i2v") if cache is not None else getattr(pipe, "image_encoder", None) is not None
        if i2v:  # a missing or ill-sized first frame fails now, not after hours of training
            from medvid.t2v.generate import load_first_frame

            for s in specs:
                load_first_frame(s.image, self.height, self.width, where=f"validation prompt {s.name!r}")
        if cache is not None:
            self.embeds, self.negative = cache.prompts()
            missing = [s.name for s in specs if s.name not in self.embeds]
            if missing:
                raise ValueError(f"data.cache {cache.folder} holds no embeddings for validation prompt(s) {missing}; "
                                 "re-run `medvid wan-cache` with this config (it only adds the prompts)")

    def _pipeline(self, transformer):
        if self.pipe is not None:
            return self.pipe
        if self._bare is None:
            import diffusers

            from medvid.t2v import wan as W
            from medvid.t2v.wan_original import is_original_layout

            p = W.require_wan_folder(self.cfg.model_path)
            if is_original_layout(p):
                self._bare = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=W.load_wan_vae(p),
                                                   scheduler=W.load_wan_scheduler(p), transformer=None)
            else:
                cls = getattr(diffusers, W.pipeline_class(p))
                self._bare = cls.from_pretrained(p, transformer=None, text_encoder=None, tokenizer=None,
                                                 vae=W.load_wan_vae(p), **W.dtype_kwargs(torch.float32))
            self._bare.set_progress_bar_config(disable=True)
        self._bare.transformer = transformer
        return self._bare

    @torch.no_grad()
    def render(self, transformer, step: int, weights: str = "model", autocast: Callable | None = None) -> list[Path]:
        from contextlib import nullcontext

        from medvid.data.manifest import write_json
        from medvid.t2v.wan import WAN_NEGATIVE_PROMPT, frames_to_uint8
        from medvid.utils.video import write_mp4

        v = self.cfg.validation
        pipe = self._pipeline(transformer)
        pipe.vae.to(self.device)
        was_training = transformer.training
        transformer.eval()
        folder = self.out_dir / "validation" / f"step-{step:08d}"
        written = []
        default_neg = v.negative_prompt if v.negative_prompt is not None else WAN_NEGATIVE_PROMPT
        try:
            for spec in self.specs:
                kw: dict[str, Any] = dict(height=self.height, width=self.width, num_frames=self.frames,
                                          num_inference_steps=v.steps, guidance_scale=v.guidance, output_type="np",
                                          generator=torch.Generator("cpu").manual_seed(spec.seed),
                                          max_sequence_length=self.cfg.max_sequence_length)
                if self.cache is not None:
                    dtype = next(transformer.parameters()).dtype
                    kw["prompt_embeds"] = self.embeds[spec.name][None].to(self.device, dtype)
                    kw["negative_prompt_embeds"] = self.negative[None].to(self.device, dtype)
                else:
                    kw["prompt"] = spec.prompt
                    kw["negative_prompt"] = spec.negative_prompt if spec.negative_prompt is not None else default_neg
                if getattr(pipe, "image_encoder", None) is not None:
                    from medvid.t2v.generate import load_first_frame

                    kw["image"] = load_first_frame(spec.image, self.height, self.width, where=f"validation prompt {spec.name!r}")
                with autocast() if autocast is not None else nullcontext():
                    frames = frames_to_uint8(pipe(**kw).frames[0])
                path = write_mp4(frames, folder / f"{spec.name}.mp4", fps=v.fps)
                write_json(folder / f"{spec.name}.json", {"name": spec.name, "prompt": spec.prompt, "seed": spec.seed,
                                                          "step": step, "weights": weights, "steps": v.steps,
                                                          "guidance": v.guidance, "size": [self.height, self.width, self.frames]})
                if self.writer is not None:
                    tb_video(self.writer, f"validation/{spec.name}", frames, step, v.fps)
                written.append(path)
        finally:
            transformer.train(was_training)
            if self.cache is not None:
                pipe.vae.to("cpu")
        if self.writer is not None:
            self.writer.flush()
        log.info("step %d: %d validation video(s) in %s (%s weights)", step, len(written), folder, weights)
        return written
