"""VBench-style dimensions (Huang et al. 2024), what MedGen reports as "Med-VBench".

* ``subject_consistency`` (DINO ViT-B/16 features) and ``background_consistency`` (CLIP ViT-B/32):
  per frame i >= 1, [max(0, cos(f_{i-1}, f_i)) + max(0, cos(f_0, f_i))] / 2; averaged over all
  such frames of all videos (VBench sums per-frame values over videos and divides by their count).
* ``dynamic_degree``: optical flow between frames sampled at ~8 fps; per pair the mean of the top 5 %
  flow magnitudes; threshold 6 * max(1, 8/fps) * min(H, W)/256; a video is dynamic if at least
  round(4 N/16) of its N pairs exceed it; the score is the fraction of dynamic videos. VBench uses
  RAFT; without RAFT weights we use OpenCV's DIS flow and name the result ``dynamic_degree_dis``
  (``dynamic_degree_raft`` with RAFT). The two are not interchangeable.
* ``motion_smoothness``: drop the odd frames, re-create each from its two neighbours with a
  frame interpolator, mean absolute difference d (0..255) to the real odd frames, score
  (255 - d) / 255. VBench uses AMT-S; its weights are not available here, so the interpolator is
  pluggable: a TorchScript ``interp(img0, img1) -> mid`` on (N, 3, H, W) in [0, 1] gives
  ``motion_smoothness``; the weight-free ``blend_interpolator`` (mean of the neighbours, no motion
  model) gives ``motion_smoothness_blend``, a different and weaker quantity.
* ``imaging_quality``: the MUSIQ image-quality score (SPAQ checkpoint, 0..100) of every frame, VBench's
  "longer" preprocessing (a frame whose longer side exceeds 512 px is resized, bilinear without
  antialiasing, so that side is 512; values in [0, 1]), mean over the frames of a video, divided
  by 100. The MUSIQ weights are given as a local file: a TorchScript export of the scorer, or
  pyiqa's ``musiq_spaq_ckpt`` state dict (read with ``torch.load(weights_only=True)`` into pyiqa's
  MUSIQ architecture; needs ``pip install pyiqa``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["vbench_consistency", "dynamic_degree_video", "frame_motion", "motion_smoothness_video", "blend_interpolator",
           "load_interpolator", "imaging_quality_video", "quality_frames", "load_musiq"]


def vbench_consistency(feats) -> tuple[float, int]:
    """Sum of per-frame VBench consistency values of one video and their count (T - 1)."""
    f = F.normalize(torch.as_tensor(feats, dtype=torch.float64), dim=-1)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"consistency needs (T >= 2, D) features, got {tuple(f.shape)}")
    sim_prev = (f[1:] * f[:-1]).sum(-1).clamp(min=0)
    sim_first = (f[1:] * f[:1]).sum(-1).clamp(min=0)
    return float(((sim_prev + sim_first) / 2).sum()), f.shape[0] - 1


def dynamic_degree_video(frames: np.ndarray, fps: float, flow_fn: Callable) -> bool:
    """Is one uint8 (T, H, W, 3) video dynamic? ``flow_fn`` maps (N+1, 3, H, W) uint8 -> (N, 2, H, W)."""
    interval = max(1, round(fps / 8))  # sample at ~8 fps
    sub = frames[::interval]
    if len(sub) < 2:
        return False
    h, w = sub.shape[1:3]
    flow = torch.as_tensor(flow_fn(torch.from_numpy(np.ascontiguousarray(sub)).permute(0, 3, 1, 2)))  # (N, 2, H, W)
    mag = flow.float().norm(dim=1).flatten(1)  # (N, H*W)
    k = max(1, int(mag.shape[1] * 0.05))
    top = mag.topk(k, dim=1).values.mean(1)  # (N,)
    thres = 6.0 * max(1.0, 8.0 / fps) * min(h, w) / 256.0
    need = round(4 * len(top) / 16.0)
    return int((top > thres).sum()) >= need


def blend_interpolator(img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
    """Weight-free stand-in: the mean of the two neighbours (no motion compensation)."""
    return (img0 + img1) / 2


def load_interpolator(path) -> Callable:
    """A TorchScript frame interpolator ``forward(img0, img1) -> mid`` ((N, 3, H, W) in [0, 1])."""
    from medvid.utils.weights import require_weights

    p = require_weights(path, "motion smoothness", "a frame interpolator exported to TorchScript (AMT-S for VBench)",
                        hint="Pass it with --interpolator PATH.")
    return torch.jit.load(str(p), map_location="cpu").eval()


@torch.inference_mode()
def motion_smoothness_video(frames: np.ndarray, interpolator: Callable) -> tuple[float, int]:
    """Sum of per-frame mean absolute differences (0..255) of re-created odd frames, and their count."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    t = x.shape[0]
    odd = torch.arange(1, t - 1, 2)  # odd frames with a following even neighbour
    if len(odd) == 0:
        raise ValueError(f"motion smoothness needs videos of at least 3 frames, got {t}")
    mid = interpolator(x[odd - 1], x[odd + 1]).clamp(0, 1)
    # VBench compares uint8 frames: round the prediction to 0..255 first
    d = ((mid * 255).round() - (x[odd] * 255).round()).abs().mean(dim=(1, 2, 3))
    return float(d.sum()), len(odd)


def quality_frames(frames: np.ndarray, longer: int = 512) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> (T, 3, h, w) in [0, 1] as VBench's imaging quality reads them ("longer")."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W) 0..255
    h, w = x.shape[-2:]
    if max(h, w) > longer:
        scale = longer / max(h, w)
        x = F.interpolate(x, size=(int(scale * h), int(scale * w)), mode="bilinear", align_corners=False, antialias=False)
    return x / 255.0


@torch.inference_mode()
def imaging_quality_video(frames: np.ndarray, scorer: Callable) -> tuple[float, int]:
    """Sum over frames of MUSIQ score / 100 and the number of frames (one frame at a time, as VBench)."""
    x = quality_frames(frames)
    total = 0.0
    for f in x:
        total += float(torch.as_tensor(scorer(f[None])).float().mean()) / 100.0
    return total, len(x)


def load_musiq(path) -> Callable:
    """MUSIQ from a local file: a TorchScript scorer, or pyiqa's MUSIQ state dict (pyiqa installed)."""
    import zipfile

    from medvid.utils.weights import MissingWeightsError, require_weights

    p = require_weights(path, "imaging quality (MUSIQ)",
                        "MUSIQ weights: pyiqa's musiq_spaq_ckpt-358bb6af.pth (as VBench uses) or a TorchScript export",
                        hint="Pass it with --musiq PATH.")
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                scripted = any(n.endswith("constants.pkl") or n.endswith("/code/") or "/code/" in n for n in z.namelist())
        except zipfile.BadZipFile:
            scripted = False
        if scripted:
            return torch.jit.load(str(p), map_location="cpu").eval()
    try:
        from pyiqa.archs.musiq_arch import MUSIQ
    except ImportError as e:
        raise MissingWeightsError("imaging quality (MUSIQ)", "pyiqa's MUSIQ architecture to read this state dict", p,
                                  "pip install pyiqa, or export the scorer to TorchScript.") from e
    state = torch.load(str(p), map_location="cpu", weights_only=True)  # tensors only, no code
    state = state.get("params", state) if isinstance(state, dict) else state
    model = MUSIQ(pretrained=False)
    model.load_state_dict(state, strict=True)
    return model.eval()


def frame_motion(frames: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames in grey levels: uint8 (T, H, W, 3) -> float.

    Grey is ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B). Not a VBench dimension: a direct,
    weight-free reading of how much a clip moves, to set beside the real clips' value."""
    if frames.shape[0] < 2:
        raise ValueError("motion needs clips of at least 2 frames")
    grey = frames[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return float(np.abs(np.diff(grey, axis=0)).mean())
