"""A vision-language model from a local folder, asked about a few frames of a video.

Loading goes through ``transformers``' auto classes (``AutoProcessor`` +
``AutoModelForImageTextToText``), so Qwen2-VL / Qwen2.5-VL checkpoints load as they are; Hulu-Med,
UniMedVL and other models that ship their own code load the same way with
``trust_remote_code=True``, which is only passed when the user asks for it. Nothing is downloaded.

Frames go to the model as a list of images in one chat message (every image-text model supports
several images; native video inputs vary between families). With transformers 5 the Qwen2-VL
processor also builds a video processor that needs torchvision; without torchvision we build the
same processor class with only its image processor and tokenizer, which is all we use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from medvid.utils.logging import get_logger
from medvid.utils.weights import require_weights

log = get_logger("vlm")


def _processor_without_video(path: Path, trust_remote_code: bool):
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    cls = PROCESSOR_MAPPING[type(config)]
    if "video_processor" not in cls.get_attributes():
        raise ImportError(f"{cls.__name__} cannot be built without its optional dependencies")

    class ImageOnlyProcessor(cls):  # type: ignore[misc, valid-type]
        """``cls`` with the (unused) video processor left out."""

        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None and "video" in argument_name:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    images = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return ImageOnlyProcessor(image_processor=images, tokenizer=tok, video_processor=None,
                              chat_template=getattr(tok, "chat_template", None))


def load_processor(path: str | Path, trust_remote_code: bool = False):
    from transformers import AutoProcessor

    path = Path(path)
    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ImportError as e:
        if "torchvision" not in str(e).lower():
            raise
        log.info("%s: video processor needs torchvision; using the image processor only", path)
        return _processor_without_video(path, trust_remote_code)


class VisionLanguageModel:
    """``generate([(frames, prompt), ...]) -> [text, ...]`` with a local image-text-to-text model.

    ``frames``: uint8 ``(n, H, W, 3)``, resized so the longer side is at most ``image_size``.
    Decoding is greedy, so results are reproducible.
    """

    def __init__(self, path: str | Path, trust_remote_code: bool = False, device: str = "auto",
                 dtype: str = "auto", image_size: int = 448, name: str | None = None):
        import torch
        from transformers import AutoModelForImageTextToText

        from medvid.training.distributed import resolve_device

        device = resolve_device(device)  # auto: the GPU when there is one; a bad name fails before loading

        path = require_weights(path, "the vision-language captioner/judge",
                               "a local model folder (config.json, weights, tokenizer and processor files), "
                               "e.g. Qwen2.5-VL-7B-Instruct or Hulu-Med",
                               "download it once with `huggingface-cli download ... --local-dir DIR`")
        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: no config.json; --model must be the folder of a transformers model")
        self.path, self.name, self.image_size = path, name or path.name, image_size
        self.processor = load_processor(path, trust_remote_code)
        tok = getattr(self.processor, "tokenizer", None)
        if tok is None:
            raise ValueError(f"{path}: the processor has no tokenizer; the folder must hold tokenizer files")
        tok.padding_side = "left"  # decoder-only batched generation pads on the left
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if getattr(self.processor, "chat_template", None) is None:
            raise ValueError(f"{path}: no chat template (chat_template.jinja or in tokenizer_config.json); "
                             "use an instruction-tuned checkpoint")
        torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                       "float16": torch.float16}.get(dtype)
        if torch_dtype is None:
            raise ValueError(f"dtype {dtype!r}: use auto, float32, bfloat16 or float16")
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                                     dtype=torch_dtype)
        except ValueError:
            if not trust_remote_code:
                raise
            from transformers import AutoModelForCausalLM  # remote-code VLMs often register here

            self.model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=torch_dtype)
        self.model.to(device).eval()
        self.device = device
        self.tokenizer = tok

    def _images(self, frames: np.ndarray):
        from PIL import Image

        from medvid.curation.filters import resize_max_side

        return [Image.fromarray(resize_max_side(np.ascontiguousarray(f), self.image_size)) for f in frames]

    def build_text(self, num_images: int, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}] * num_images + [{"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, requests: Sequence[tuple[np.ndarray, str]], max_new_tokens: int = 128) -> list[str]:
        import torch

        if not requests:
            return []
        texts = [self.build_text(len(frames), prompt) for frames, prompt in requests]
        images = [self._images(frames) for frames, _ in requests]
        inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]  # (B, new tokens): drop the echoed prompt
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def model_info(path: str | Path) -> dict:
    """``{"name", "model_type"}`` of a model folder without loading weights (for records)."""
    path = Path(path)
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        cfg = {}
    return {"name": path.name, "model_type": cfg.get("model_type")}


def add_model_arguments(parser, max_new_tokens: int, max_new_tokens_help: str = "") -> None:
    """The flags ``medvid caption`` and ``medvid judge`` share: the model folder and how to run it."""
    parser.add_argument("--model", required=True, help="local vision-language model folder")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help=max_new_tokens_help or None)
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own code (Hulu-Med, UniMedVL); only for folders you trust")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
