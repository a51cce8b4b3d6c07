"""What the served checkpoint can do, and one job -> one video through the project's own generators.

* Wan, and MedSora trained with captions: :func:`medvid.t2v.generate.generate` (the code behind
  `medvid generate`), so a video made in the page is the one the command makes with the same prompt,
  seed and settings, with the same sidecar.
* MedSora trained with class labels or without conditioning: :func:`medvid.sampling.generate.generate_to_dir`
  (the code behind `medvid sample`; video 0 of ``--num 1 --seed S``), then the same mp4 + sidecar.

The model is loaded by the first job and kept for the next ones.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from medvid.utils.logging import get_logger

log = get_logger("serve")

OnStep = Callable[[int, int], None]


@dataclass
class Capabilities:
    """What the form offers for this checkpoint (sent to the page as JSON)."""

    model: Literal["medsora", "wan"]
    checkpoint: str
    conditioning: Literal["text", "class", "none"]
    num_classes: int = 0
    steps: int = 50
    guidance: float | None = 1.0  # None: no guidance for this checkpoint (unconditional)
    num_frames: int | None = None  # None: fixed by the checkpoint (MedSora)
    negative_prompt: str | None = None  # shown for text-conditioned checkpoints ("" = the null text)
    first_frame: bool = False  # image-to-video
    lora: str | None = None
    notes: list[str] = field(default_factory=list)

    def identity(self) -> dict[str, str | None]:
        """What a job was queued for: a restarted server with another model does not run it."""
        return {"model": self.model, "checkpoint": str(Path(self.checkpoint).resolve()),
                "lora": str(Path(self.lora).resolve()) if self.lora else None}


def first_frame_supported(base: Path) -> bool:
    """True when `medvid generate` takes a first frame (``GenerateConfig.image``) and the diffusers
    folder is an image-to-video pipeline (its ``model_index.json`` names one, or has an image encoder)."""
    from medvid.t2v.generate import GenerateConfig

    if "image" not in {f.name for f in dataclasses.fields(GenerateConfig)}:
        return False
    try:
        index = json.loads((Path(base) / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return "ImageToVideo" in str(index.get("_class_name", "")) or bool(index.get("image_encoder"))


def inspect_checkpoint(model: str, checkpoint: str | Path, lora: str | None = None) -> Capabilities:
    """Read what the checkpoint is without loading its weights; bad paths raise ValueError /
    MissingWeightsError naming the fix."""
    if model == "wan":
        from medvid.t2v import wan as W
        from medvid.t2v.generate import resolve_wan_checkpoint

        where = resolve_wan_checkpoint(checkpoint, lora)
        return Capabilities("wan", str(checkpoint), "text", steps=W.WAN_STEPS, guidance=W.WAN_GUIDANCE,
                            num_frames=W.WAN_NUM_FRAMES, negative_prompt=W.WAN_NEGATIVE_PROMPT,
                            first_frame=first_frame_supported(where["base"]), lora=lora)
    if model != "medsora":
        raise ValueError(f"--model {model!r}: choose medsora or wan")
    if lora is not None:
        raise ValueError("--lora applies to --model wan only; a MedSora checkpoint holds all its weights")
    from medvid.t2v.generate import MEDSORA_GUIDANCE
    from medvid.utils.checkpoint import CheckpointError, load_checkpoint

    try:
        _, state, config = load_checkpoint(checkpoint, groups=[])
    except CheckpointError as e:
        raise ValueError(f"--checkpoint {checkpoint}: {e}; give a `medvid train` run folder or one of its step-* folders") from e
    if "model_config" not in state or "latent_shape" not in state:
        raise ValueError(f"--checkpoint {checkpoint} is not a `medvid train` checkpoint (no model_config in state.json)")
    config = config or {}
    steps = int((config.get("sample") or {}).get("steps", 250))
    if (config.get("text") or {}).get("enabled"):
        return Capabilities("medsora", str(checkpoint), "text", steps=steps, guidance=MEDSORA_GUIDANCE, negative_prompt="")
    num_classes = int(state.get("num_classes", 0) or 0)
    if num_classes > 0:
        return Capabilities("medsora", str(checkpoint), "class", num_classes=num_classes, steps=steps,
                            guidance=MEDSORA_GUIDANCE)
    return Capabilities("medsora", str(checkpoint), "none", steps=steps, guidance=None,
                        notes=["This model is unconditional: every seed gives a different video."])


class Backend:
    """Runs jobs on one device, one at a time (the server's single worker thread calls :meth:`run`)."""

    def __init__(self, caps: Capabilities, device: str = "auto", height: int | None = None, width: int | None = None):
        self.caps, self.device, self.height, self.width = caps, device, height, width
        self._models: dict = {}  # medvid.t2v.generate's model cache
        self._sampler = None  # medvid.sampling.generate.SamplingModel

    @property
    def loaded(self) -> bool:
        return bool(self._models) or self._sampler is not None

    def load(self) -> None:
        """Load the model now (the worker does it at start, while the first prompt is being written)."""
        if self.caps.conditioning == "text":
            from medvid.t2v.generate import load_models

            load_models(self._config({"prompt": "-", "seed": 0, "steps": None, "guidance": None}, "-", Path(".")),
                        self._models)
        elif self._sampler is None:
            from medvid.sampling.generate import load_sampling_model

            self._sampler = load_sampling_model(self.caps.checkpoint, device=self.device)

    def run(self, name: str, params: dict[str, Any], out_dir: Path, on_step: OnStep) -> Path:
        """Make one video ``out_dir/<name>.mp4`` (+ its sidecar); returns the mp4 path."""
        if self.caps.conditioning == "text":
            return self._generate(name, params, out_dir, on_step)
        return self._sample(name, params, out_dir, on_step)

    def _config(self, params: dict[str, Any], name: str, out_dir: Path):
        """The `medvid generate` configuration of one job."""
        from medvid.t2v.generate import GenerateConfig

        c = self.caps
        kw: dict[str, Any] = dict(
            model=c.model, checkpoint=c.checkpoint, lora=c.lora, out=str(out_dir), prompt=params["prompt"], name=name,
            seed=params["seed"], steps=params["steps"], guidance=params["guidance"], device=self.device,
            negative_prompt=params.get("negative_prompt"),
        )
        if c.model == "wan":
            kw.update(num_frames=params.get("num_frames"), height=self.height, width=self.width)
        if params.get("image"):
            kw["image"] = str(out_dir / params["image"])
        return GenerateConfig(**kw)

    def _generate(self, name: str, params: dict[str, Any], out_dir: Path, on_step: OnStep) -> Path:
        from medvid.t2v.generate import generate

        result = generate(self._config(params, name, out_dir), progress=False, on_step=on_step, models=self._models)
        return (result["written"] or result["skipped"])[0]  # skipped: made before a restart, not yet marked done

    def _sample(self, name: str, params: dict[str, Any], out_dir: Path, on_step: OnStep) -> Path:
        from medvid.sampling.generate import SampleSpec, generate_to_dir, resolve_clip
        from medvid.t2v.generate import is_done, save_video, video_record

        if is_done(out_dir, name):  # made before a restart, not yet marked done
            return out_dir / f"{name}.mp4"
        self.load()
        m = self._sampler
        guidance = params["guidance"] if self.caps.conditioning == "class" else 1.0
        spec = SampleSpec(num=1, steps=params["steps"], cfg_scale=guidance, seed=params["seed"], batch_size=1,
                          fps=m.default_fps, class_id=params.get("class_id"),
                          clip_denoised=resolve_clip("auto", m.meta.get("latent_absmax")))
        work = out_dir / ".work" / name
        t0 = time.perf_counter()
        try:
            generate_to_dir(m.model, m.diffusion, m.latent_shape, spec, work, vae=m.vae, num_classes=m.num_classes,
                            device=m.device, meta=m.meta, progress=on_step)
            frames = np.load(work / "video_0000.npz")["frames"]
        finally:
            shutil.rmtree(work, ignore_errors=True)
        settings = {"sampler": spec.sampler, "steps": spec.steps, "guidance": guidance, "fps": spec.fps,
                    "class_id": spec.class_id, "latent_shape": list(m.latent_shape), "weights": m.meta["weights"],
                    "train_step": m.meta["step"]}
        record = video_record(name=name, prompt=None, negative_prompt=None, seed=spec.seed, model="medsora",
                              checkpoint=self.caps.checkpoint, lora=None, source={"checkpoint": m.meta["checkpoint"]},
                              settings=settings, frames=frames, seconds=time.perf_counter() - t0)
        return save_video(out_dir, frames, spec.fps, record)
