"""Text conditioning for MedSora: a frozen T5/UMT5 or CLIP text encoder from a local folder.

``build_text_conditioner(text_cfg)`` returns a :class:`TextConditioner` that turns captions into
``context (B, L, context_dim)`` float and ``context_mask (B, L)`` bool, the two inputs of the
backbone's cross-attention (docs/architecture.md, "Backbone").

Choices (documented here because training and sampling must agree on them):

* **Fixed length.** Every caption is padded / truncated to ``max_length`` tokens, so encodings of
  different batches (and cached encodings) stack without re-padding. Padding positions are zeroed
  in ``context`` and ``False`` in ``mask``, as Wan2.1 does with its T5 embeddings.
* **Null embedding = the encoding of the empty string** (Imagen / Wan convention) rather than a
  learned or zero vector: it needs no extra parameters, so a checkpoint's text side is fully
  described by the encoder folder, and the null is what the encoder says about "no caption".
* **Caption dropout** (``train=True``): each caption is replaced by the null embedding with
  probability ``dropout`` (default 0.1), which trains the unconditional branch that classifier-free
  guidance needs (Ho & Salimans 2022).
* **Negative prompts** are encoded like captions; at sampling they replace the null embedding as
  the unconditional branch.
* **Cache.** With ``cache_dir`` set, each caption's encoding is stored as one safetensors file named
  by a SHA-256 of (encoder fingerprint, max_length, caption); later calls read it instead of
  running the encoder, like cached VAE latents.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from medvid.utils.logging import get_logger
from medvid.utils.weights import require_weights

log = get_logger("t2v.text")

ENCODERS = ("t5", "clip")
_T5_TYPES = ("t5", "umt5", "mt5")


def _resolve_folders(path: Path) -> tuple[Path, Path]:
    """(encoder folder, tokenizer folder): a plain model folder, or a diffusers pipeline folder
    with ``text_encoder/`` and ``tokenizer/`` (e.g. Wan2.1-T2V-1.3B-Diffusers)."""
    if (path / "text_encoder").is_dir():
        tok = path / "tokenizer" if (path / "tokenizer").is_dir() else path
        return path / "text_encoder", tok
    return path, path


def _load_encoder(kind: str, path: Path) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoConfig, AutoTokenizer

    enc_dir, tok_dir = _resolve_folders(path)
    if not (enc_dir / "config.json").is_file():
        raise ValueError(
            f"text encoder folder {enc_dir} has no config.json; point text.encoder_path at a "
            "transformers model folder (config.json + weights + tokenizer files)"
        )
    config = AutoConfig.from_pretrained(enc_dir, local_files_only=True)
    model_type = getattr(config, "model_type", "")
    if kind == "t5":
        if model_type not in _T5_TYPES:
            raise ValueError(
                f"text.encoder is 't5' but {enc_dir}/config.json has model_type {model_type!r}; "
                f"use a T5/UMT5 folder or set text.encoder: clip"
            )
        from transformers import MT5EncoderModel, T5EncoderModel, UMT5EncoderModel

        cls = {"t5": T5EncoderModel, "umt5": UMT5EncoderModel, "mt5": MT5EncoderModel}[model_type]
    else:
        if model_type not in ("clip", "clip_text_model"):
            raise ValueError(
                f"text.encoder is 'clip' but {enc_dir}/config.json has model_type {model_type!r}; "
                f"use a CLIP folder or set text.encoder: t5"
            )
        from transformers import CLIPTextModel

        cls = CLIPTextModel
    model = cls.from_pretrained(enc_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    return model, tokenizer


class TextEmbeddingCache:
    """One safetensors file per caption: ``cache_dir/ab/abcdef....safetensors`` with
    ``context (L, Dc)`` and ``mask (L,)``. Files are written atomically (temp file, rename)."""

    def __init__(self, cache_dir: str | Path, fingerprint: str):
        self.dir = Path(cache_dir)
        self.fingerprint = fingerprint

    def key(self, caption: str) -> str:
        return hashlib.sha256(f"{self.fingerprint}\n{caption}".encode("utf-8")).hexdigest()

    def path(self, caption: str) -> Path:
        k = self.key(caption)
        return self.dir / k[:2] / f"{k}.safetensors"

    def get(self, caption: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        from safetensors.torch import load_file

        p = self.path(caption)
        if not p.is_file():
            return None
        try:
            t = load_file(str(p))
        except Exception:  # a damaged file is re-encoded, never trusted
            log.warning("text cache file %s is unreadable; re-encoding its caption", p)
            return None
        return t["context"], t["mask"].bool()

    def put(self, caption: str, context: torch.Tensor, mask: torch.Tensor) -> Path:
        from safetensors.torch import save_file

        p = self.path(caption)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        save_file(
            {"context": context.detach().cpu().contiguous(), "mask": mask.detach().cpu().to(torch.uint8)},
            str(tmp),
            metadata={"caption": caption[:2000], "fingerprint": self.fingerprint},
        )
        os.replace(tmp, p)
        return p


class TextConditioner:
    """Frozen text encoder + tokenizer -> (context, mask) with caption dropout, null and cache."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        tokenizer: Any,
        kind: str = "t5",
        max_length: int = 77,
        dropout: float = 0.1,
        cache_dir: str | Path | None = None,
    ):
        if kind not in ENCODERS:
            raise ValueError(f"text.encoder must be one of {list(ENCODERS)}, got {kind!r}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"text.dropout must be in [0, 1], got {dropout}")
        if max_length < 1:
            raise ValueError(f"text.max_length must be >= 1, got {max_length}")
        self.encoder = encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.kind = kind
        self.max_length = int(max_length)
        self.dropout = float(dropout)
        cfg = encoder.config
        self.context_dim = int(getattr(cfg, "d_model", None) or cfg.hidden_size)
        max_pos = getattr(cfg, "max_position_embeddings", None)  # CLIP has learned positions; T5 is relative
        if max_pos is not None and self.max_length > max_pos:
            raise ValueError(
                f"text.max_length={self.max_length} exceeds the {kind} encoder's {max_pos} positions; "
                f"set text.max_length <= {max_pos}"
            )
        self.cache = TextEmbeddingCache(cache_dir, self.fingerprint()) if cache_dir else None
        self._null: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def to(self, device: str | torch.device) -> "TextConditioner":
        self.encoder.to(device)
        self._null = None
        return self

    def fingerprint(self) -> str:
        """Identifies encoder + tokenizer + length, so a cache never mixes two encoders."""
        h = hashlib.sha256()
        cfg = self.encoder.config.to_dict()
        cfg.pop("_name_or_path", None)
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
        h.update(f"{self.kind}|{self.max_length}|{len(self.tokenizer)}".encode())
        emb = self.encoder.get_input_embeddings().weight
        h.update(emb.detach().flatten()[:4096].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    @torch.no_grad()
    def _run_encoder(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(
            list(captions),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids = tok["input_ids"].to(self.device)  # (B, L)
        mask = tok["attention_mask"].to(self.device).bool()  # (B, L)
        out = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, Dc)
        out = out.float() * mask[..., None]  # padding positions carry no information
        return out, mask

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (context (B, L, Dc) float32, mask (B, L) bool); no dropout; uses the cache."""
        if isinstance(captions, str):
            raise TypeError("encode() takes a list of captions, not a single string")
        captions = [str(c) for c in captions]
        if self.cache is None:
            return self._run_encoder(captions)
        found = {c: self.cache.get(c) for c in dict.fromkeys(captions)}
        missing = [c for c, v in found.items() if v is None]
        if missing:
            ctx, mask = self._run_encoder(missing)
            for c, x, m in zip(missing, ctx, mask):
                self.cache.put(c, x, m)
                found[c] = (x.cpu(), m.cpu())
        dev = self.device
        ctx = torch.stack([found[c][0] for c in captions]).to(dev, torch.float32)
        mask = torch.stack([found[c][1] for c in captions]).to(dev)
        return ctx, mask

    def null(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional input: the encoding of the empty string, repeated ``batch_size`` times."""
        if self._null is None:
            self._null = self._run_encoder([""])
        ctx, mask = self._null
        return ctx.expand(batch_size, -1, -1).clone(), mask.expand(batch_size, -1).clone()

    def negative(self, negative_prompt: str | Sequence[str] | None, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Unconditional branch for CFG: the negative prompt's encoding, or the null if none."""
        if negative_prompt is None or (isinstance(negative_prompt, str) and not negative_prompt):
            return self.null(batch_size)
        if isinstance(negative_prompt, str):
            ctx, mask = self.encode([negative_prompt])
            return ctx.expand(batch_size, -1, -1).clone(), mask.expand(batch_size, -1).clone()
        if len(negative_prompt) != batch_size:
            raise ValueError(f"got {len(negative_prompt)} negative prompts for a batch of {batch_size}")
        return self.encode(list(negative_prompt))

    def __call__(
        self, captions: Sequence[str], train: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode captions; with ``train`` each is replaced by the null with probability ``dropout``."""
        ctx, mask = self.encode(captions)
        if train and self.dropout > 0:
            drop = torch.rand(len(ctx), generator=generator) < self.dropout  # (B,)
            if drop.any():
                drop = drop.to(ctx.device)
                null_ctx, null_mask = self.null(len(ctx))
                ctx = torch.where(drop[:, None, None], null_ctx, ctx)
                mask = torch.where(drop[:, None], null_mask, mask)
        return ctx, mask


def build_text_conditioner(text_cfg: Any, device: str | torch.device | None = None) -> TextConditioner:
    """``text_cfg`` has ``encoder`` ("t5"|"clip"), ``encoder_path``, ``dropout``, ``max_length``,
    ``cache_dir`` (the training config's TextConfig, or any object with those attributes)."""
    kind = getattr(text_cfg, "encoder", "t5")
    if kind not in ENCODERS:
        raise ValueError(f"text.encoder must be one of {list(ENCODERS)}, got {kind!r}")
    expected = (
        "a T5/UMT5 encoder folder (config.json, model.safetensors, tokenizer files), e.g. "
        "google/t5-v1_1-xxl or the text_encoder/+tokenizer/ of Wan2.1-T2V-1.3B-Diffusers"
        if kind == "t5"
        else "a CLIP text model folder (config.json, model.safetensors, tokenizer files), "
        "e.g. openai/clip-vit-large-patch14"
    )
    path = require_weights(
        getattr(text_cfg, "encoder_path", None), "text conditioning (text.encoder_path)", expected,
        hint="Download it once on a machine with internet access and set text.encoder_path.",
    )
    model, tokenizer = _load_encoder(kind, path)
    cond = TextConditioner(
        model,
        tokenizer,
        kind=kind,
        max_length=int(getattr(text_cfg, "max_length", 77)),
        dropout=float(getattr(text_cfg, "dropout", 0.1)),
        cache_dir=getattr(text_cfg, "cache_dir", None),
    )
    if device is not None:
        cond.to(device)
    log.info("text encoder %s from %s: context_dim=%d, max_length=%d", kind, path, cond.context_dim, cond.max_length)
    return cond
