"""Optical-flow representation alignment (MedSora section 3.2, Eq. 14-15).

The spatial-branch output of every backbone block is pulled towards the representation-network
features of the clip's optical-flow images:

* targets: flow (RAFT or DIS) -> RGB (Eq. 13) -> representation net -> L layers (F_video, tokens, C);
* frame mixing F_video -> f_latent: parameter-free. The reference code uses a 1x1 convolution over
  the 16 frames filled with 1/16, i.e. *every* latent frame gets the mean of all 16 flow frames.
  We default to the mean over consecutive groups (``frame_mix="groups"``, adaptive average pooling:
  16 -> 4 averages frames 0-3, 4-7, ...), which keeps each latent frame's own motion;
  ``frame_mix="global"`` reproduces the reference;
* sampling: each layer's (tokens x channels) plane is bilinearly resampled to the block's
  (N x D) plane (antialiased when it shrinks, so a 4096-token plane is averaged, not point-sampled);
* block -> layer: block i -> layer i when depth == L; round(i L / depth) when depth < L;
  floor(i / (depth / L)) when depth > L (medsora.md, with the reference's L = 12 generalised);
* Eq. 14: r = 1 - Pearson correlation. Over which tokens is ``pooling``:
  ``"sample"`` (default): per feature channel, over all f * N tokens of one sample (Eq. 14 pools
  each channel over K = b * f * l tokens; we stop at the sample so each r has one t and g(t) stays
  per sample): r is (B, D);
  ``"frame"``: per channel over the N tokens of each latent frame (medvid before 0.2): (B, f, D);
  ``"token"``: the reference code's, per token over the D channels after a LayerNorm (REPA-like):
  (B, f, N);
* Eq. 15: L_align = max(mean(g(t) r) - margin, 0), g(t) = 1 / (t + 1), the mean taken over blocks
  and every r of a block; the total loss adds alpha * L_align.
  alpha: paper 0.01 (our default), reference config 0.1; margin 0.01.
* joint-training images (the trailing ``num_images`` latent frames) are masked out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F

from medvid.utils.logging import get_logger

__all__ = ["AlignConfig", "AlignmentLoss", "FlowAligner", "build_alignment", "layer_for_block",
           "mix_frames", "resample_plane", "pearson_residual", "pooled_residual", "flow_targets"]

log = get_logger("flow")

POOLINGS = ("sample", "frame", "token")


@dataclass
class AlignConfig:
    """Switch and settings of the alignment term (the trainer's ``align`` section)."""

    enabled: bool = False
    alpha: float = 0.01  # paper 0.01; the reference config uses 0.1
    margin: float = 0.01
    features_dir: str | None = None  # a `medvid flow-features` cache; None -> on the fly
    flow: str = "dis"  # "dis" (OpenCV, no weights) | "raft" (torchvision + flow_weights)
    flow_weights: str | None = None
    repnet: str = "effnet-lite0"  # "dino" (needs repnet_weights) | "effnet-lite0" (ImageNet stand-in)
    repnet_weights: str | None = None
    allow_random_repnet: bool = False
    frame_mix: Literal["groups", "global"] = "groups"
    pooling: Literal["sample", "frame", "token"] = "sample"  # the tokens one Pearson r pools (Eq. 14)

    def __post_init__(self):
        if self.alpha < 0 or self.margin < 0:
            raise ValueError(f"align.alpha ({self.alpha}) and align.margin ({self.margin}) must be >= 0")
        if self.frame_mix not in ("groups", "global"):
            raise ValueError(f"align.frame_mix {self.frame_mix!r} must be 'groups' or 'global'")
        if self.pooling not in POOLINGS:
            raise ValueError(f"align.pooling {self.pooling!r} must be one of {POOLINGS}")


def layer_for_block(i: int, depth: int, num_layers: int) -> int:
    """The representation layer that supervises block ``i`` of ``depth`` blocks."""
    if depth == num_layers:
        return i
    if depth < num_layers:
        return min(num_layers - 1, int(round(i * num_layers / depth)))
    return min(num_layers - 1, int(i // (depth / num_layers)))


def mix_frames(y: torch.Tensor, f_latent: int, mode: str = "groups") -> torch.Tensor:
    """(B, F_video, tokens, C) -> (B, f_latent, tokens, C), parameter-free."""
    b, fv, n, c = y.shape
    if mode == "global":  # the reference's 1x1 conv filled with 1/F_video
        return y.mean(dim=1, keepdim=True).expand(b, f_latent, n, c)
    if fv == f_latent:
        return y
    flat = y.permute(0, 2, 3, 1).reshape(b, n * c, fv)  # (B, tokens*C, F_video)
    pooled = F.adaptive_avg_pool1d(flat, f_latent)  # mean over consecutive groups
    return pooled.reshape(b, n, c, f_latent).permute(0, 3, 1, 2)  # (B, f_latent, tokens, C)


def resample_plane(y: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """(..., tokens, C) -> (..., n, d): bilinear resampling of the (tokens x channels) plane."""
    lead, (tok, c) = y.shape[:-2], y.shape[-2:]
    if (tok, c) == (n, d):
        return y
    plane = y.reshape(-1, 1, tok, c)
    out = F.interpolate(plane, size=(n, d), mode="bilinear", align_corners=False, antialias=n < tok or d < c)
    return out.reshape(*lead, n, d)


def pearson_residual(h: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - Pearson correlation over the token axis (-2), per channel: (..., N, D) -> (..., D)."""
    h = h - h.mean(dim=-2, keepdim=True)
    y = y - y.mean(dim=-2, keepdim=True)
    num = (h * y).sum(dim=-2)
    den = torch.sqrt((h * h).sum(dim=-2) * (y * y).sum(dim=-2) + eps)
    return 1.0 - num / den


def pooled_residual(h: torch.Tensor, y: torch.Tensor, pooling: str = "sample") -> torch.Tensor:
    """Eq. 14's r = 1 - Pearson correlation of block features ``h`` and targets ``y``, both
    (B, f, N, D), pooled as ``pooling`` says: "sample" -> (B, D), "frame" -> (B, f, D),
    "token" -> (B, f, N) (over channels, after a LayerNorm without affine as the reference does)."""
    if pooling == "sample":
        return pearson_residual(h.flatten(1, 2), y.flatten(1, 2))  # (B, f*N, D) -> (B, D)
    if pooling == "frame":
        return pearson_residual(h, y)  # (B, f, D)
    if pooling == "token":
        d = h.shape[-1]
        hn, yn = F.layer_norm(h, (d,)), F.layer_norm(y, (d,))  # per token over channels
        return pearson_residual(hn.unsqueeze(-1), yn.unsqueeze(-1)).squeeze(-1)  # (B, f, N, D, 1) -> (B, f, N)
    raise ValueError(f"pooling {pooling!r}: use one of {POOLINGS}")


class AlignmentLoss(torch.nn.Module):
    """``loss(block_feats, target_feats, t, num_images)`` -> scalar alpha * L_align (Eq. 14-15).

    block_feats: list over blocks of (B, F, N, D), F = video latent frames + num_images.
    target_feats: list over representation layers of (B, F_video, tokens, C).
    t: (B,) integer timesteps.
    pooling: which tokens one correlation pools, "sample" | "frame" | "token" (module docstring).
    """

    def __init__(self, alpha: float = 0.01, margin: float = 0.01, frame_mix: str = "groups", pooling: str = "sample"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"AlignmentLoss: pooling {pooling!r} must be one of {POOLINGS}")
        self.alpha, self.margin, self.frame_mix, self.pooling = alpha, margin, frame_mix, pooling

    def residuals(self, block_feats: Sequence[torch.Tensor], target_feats: Sequence[torch.Tensor],
                  t: torch.Tensor, num_images: int = 0) -> torch.Tensor:
        """g(t) * r for every block: (depth, B, D) for "sample" pooling, (depth, B, f_latent, D) for
        "frame", (depth, B, f_latent, N) for "token"."""
        depth, num_layers = len(block_feats), len(target_feats)
        b, f, n, d = block_feats[0].shape
        f_lat = f - int(num_images)
        if f_lat <= 0:
            raise ValueError(f"alignment needs video frames: F={f} with num_images={num_images}")
        g = 1.0 / (t.to(block_feats[0].device, torch.float32) + 1.0)  # (B,)
        mixed: dict[int, torch.Tensor] = {}
        out = []
        for i, h in enumerate(block_feats):
            j = layer_for_block(i, depth, num_layers)
            if j not in mixed:
                y = target_feats[j].to(h.device, torch.float32)
                if y.shape[0] != b:
                    raise ValueError(f"flow features batch {y.shape[0]} != block features batch {b}")
                mixed[j] = resample_plane(mix_frames(y, f_lat, self.frame_mix), n, d).detach()
            r = pooled_residual(h[:, :f_lat].float(), mixed[j], self.pooling)  # images masked out
            out.append(g.view(b, *[1] * (r.ndim - 1)) * r)
        return torch.stack(out)

    def forward(self, block_feats, target_feats, t, num_images: int = 0) -> torch.Tensor:
        weighted = self.residuals(block_feats, target_feats, t, num_images)
        return self.alpha * torch.clamp(weighted.mean() - self.margin, min=0.0)


@torch.no_grad()
def flow_targets(video: torch.Tensor, flow_estimator, repnet, batch_size: int = 32) -> list[torch.Tensor]:
    """(B, T+1, 3, H, W) in [-1, 1] -> list of L tensors (B, T, tokens, C) (flow -> RGB -> repnet)."""
    from medvid.flow.rgb import flow_to_rgb

    if video.ndim != 5:
        raise ValueError(f"flow_targets takes videos (B, T+1, 3, H, W); got {tuple(video.shape)}")
    b, t1 = video.shape[:2]
    rgb = torch.stack([flow_to_rgb(flow_estimator(v)) for v in video])  # (B, T, 3, H, W) in [0, 1]
    imgs = rgb.flatten(0, 1)  # (B*T, 3, H, W)
    device = next(iter(repnet.parameters())).device
    chunks = [repnet(imgs[s : s + batch_size].to(device)) for s in range(0, imgs.shape[0], batch_size)]
    return [torch.cat([c[i] for c in chunks]).reshape(b, t1 - 1, *chunks[0][i].shape[1:])
            for i in range(len(chunks[0]))]


class FlowAligner:
    """What the trainer calls each step: ``aligner(block_feats, batch, t, num_images)``.

    Uses ``batch["flow_features"]`` (cache) when present, else computes the targets from
    ``batch["video"]`` (B, T+1, 3, H, W) in [-1, 1] on the fly with the configured flow
    estimator and representation net (built lazily, so a cached run never loads them).
    """

    def __init__(self, cfg: Any, model: torch.nn.Module | None = None):
        self.cfg = cfg
        self.loss = AlignmentLoss(cfg.alpha, cfg.margin, getattr(cfg, "frame_mix", "groups"),
                                  getattr(cfg, "pooling", "sample"))
        self.device = next(iter(model.parameters())).device if model is not None else torch.device("cpu")
        self._flow = self._repnet = None

    def _build_on_the_fly(self):
        from medvid.flow.estimators import build_flow_estimator
        from medvid.flow.repnet import build_repnet

        self._flow = build_flow_estimator(self.cfg.flow, self.cfg.flow_weights, device=self.device)
        self._repnet = build_repnet(self.cfg.repnet, self.cfg.repnet_weights,
                                    allow_random=self.cfg.allow_random_repnet).to(self.device)
        log.info("alignment targets on the fly: flow=%s, repnet=%s", self.cfg.flow, self._repnet.name)

    def targets(self, batch: dict) -> list[torch.Tensor]:
        if batch.get("flow_features") is not None:
            return list(batch["flow_features"])
        if batch.get("video") is None:
            raise ValueError(
                "alignment is enabled but the batch has neither 'flow_features' (set align.features_dir "
                "to a `medvid flow-features` cache) nor 'video' (pixel clips for on-the-fly flow)"
            )
        if self._flow is None:
            self._build_on_the_fly()
        return flow_targets(batch["video"], self._flow, self._repnet)

    def __call__(self, block_feats, batch: dict, t: torch.Tensor, num_images: int = 0) -> torch.Tensor:
        return self.loss(block_feats, self.targets(batch), t, num_images)


def build_alignment(align_cfg: Any, model: torch.nn.Module | None = None) -> FlowAligner | None:
    """The trainer's entry point; ``None`` when ``align_cfg.enabled`` is false."""
    if not getattr(align_cfg, "enabled", False):
        return None
    log.info("flow alignment on: alpha=%g (paper 0.01, reference config 0.1), margin=%g, pooling=%s, %s",
             align_cfg.alpha, align_cfg.margin, getattr(align_cfg, "pooling", "sample"),
             f"cache {align_cfg.features_dir}" if getattr(align_cfg, "features_dir", None) else "on the fly")
    return FlowAligner(align_cfg, model)
