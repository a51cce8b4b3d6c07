"""Dense optical flow between consecutive frames, behind one interface.

``estimator(frames) -> flow``: frames ``(T+1, 3, H, W)`` -> flow ``(T, 2, H, W)`` float32 in pixels,
``flow[t, 0]`` = horizontal (u, +x right) and ``flow[t, 1]`` = vertical (v, +y down) displacement
that carries frame ``t`` to frame ``t+1``.

Frames may be given as
* ``uint8`` (any tensor or numpy array), values 0..255, or
* float in [-1, 1] (medvid's pixel convention, ``(B, T, 3, H, W)`` videos sliced to one clip).
Anything else (float in [0, 255], float in [0, 1] is ambiguous and accepted only as [-1, 1]) is
converted explicitly below; floats outside [-1, 1] are refused with a ValueError, because silently
feeding a network the wrong range is the reference code's RAFT defect (it fed [-1, 1] to the
original RAFT, which expects 0..255 and rescales internally).

* ``DISFlow``: OpenCV's DIS dense flow (Kroeger et al. 2016) on grey frames; no weights; the default.
* ``RAFTFlow``: torchvision's RAFT with a local weights file (optional extra ``medvid[raft]``).
  torchvision's RAFT takes images normalised to [-1, 1] (its ``Raft_Large_Weights.transforms()``
  preset is ``ConvertImageDtype`` then ``Normalize(0.5, 0.5)``), unlike the original RAFT code
  (0..255, normalised inside ``RAFT.forward``). ``RAFTFlow`` converts 0..255 frames to exactly that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medvid.utils.weights import require_weights

__all__ = ["DISFlow", "RAFTFlow", "build_flow_estimator", "frames_to_uint8"]


def frames_to_uint8(frames) -> np.ndarray:
    """(T+1, 3, H, W) uint8 or float in [-1, 1] -> uint8 numpy (T+1, H, W, 3)."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        arr = frames.numpy() if frames.dtype != torch.bfloat16 else frames.float().numpy()
    else:
        arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"flow estimators take frames shaped (T+1, 3, H, W); got {tuple(arr.shape)}")
    if arr.shape[0] < 2:
        raise ValueError(f"optical flow needs at least 2 frames (T+1 frames give T fields); got {arr.shape[0]}")
    if arr.dtype == np.uint8:
        out = arr
    elif np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1.001 or hi > 1.001:
            raise ValueError(
                f"float frames must be in [-1, 1] (medvid's pixel range); got [{lo:.3g}, {hi:.3g}]. "
                "Pass uint8 frames for 0..255 data, or rescale with x / 127.5 - 1."
            )
        out = np.clip(np.rint((arr.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"frames must be uint8 or float in [-1, 1]; got dtype {arr.dtype}")
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1))  # (T+1, H, W, 3)


class DISFlow:
    """OpenCV DIS optical flow (no weights). ``preset``: "ultrafast", "fast" or "medium"."""

    name = "dis"
    PRESETS = ("ultrafast", "fast", "medium")

    def __init__(self, preset: str = "medium"):
        if preset not in self.PRESETS:
            raise ValueError(f"DISFlow preset {preset!r} is not one of {self.PRESETS}")
        import cv2

        self.preset = preset
        code = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }[preset]
        self._dis = cv2.DISOpticalFlow_create(code)

    def __call__(self, frames) -> torch.Tensor:
        import cv2

        rgb = frames_to_uint8(frames)  # (T+1, H, W, 3)
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]
        flows = [self._dis.calc(grey[i], grey[i + 1], None) for i in range(len(grey) - 1)]  # (H, W, 2)
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous().float()  # (T, 2, H, W)


def _import_raft():
    try:
        from torchvision.models.optical_flow import raft_large, raft_small
    except Exception as e:  # ImportError, or a torchvision built for another torch (RuntimeError)
        raise ImportError(
            "RAFT optical flow needs torchvision built for this torch "
            f"({torch.__version__}); it did not import: {e}. Install the extra "
            "(pip install 'medvid[raft]') with a matching torch, or use the default flow='dis'."
        ) from e
    return raft_large, raft_small


class RAFTFlow:
    """torchvision RAFT from a local weights file (a torchvision ``raft_large`` / ``raft_small``
    state dict, e.g. ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``). Nothing is downloaded.

    ``model`` may be given instead of ``weights`` (any module with RAFT's call signature
    ``model(img1, img2) -> list of flow predictions``); the tests use a stand-in that way.
    """

    name = "raft"

    def __init__(self, weights: str | Path | None = None, small: bool = False, iters: int = 12,
                 device: str | torch.device = "cpu", model: torch.nn.Module | None = None,
                 batch_size: int = 8):
        self.iters, self.device, self.batch_size = iters, torch.device(device), batch_size
        if model is None:
            path = require_weights(
                weights, "RAFT optical flow", "a torchvision RAFT state dict (.pth)",
                hint="Get raft_large_C_T_SKHT_V2-ff5fadd5.pth from torchvision's model zoo on a machine "
                "with internet, pass it as --flow-weights, or use --flow dis (no weights needed).",
            )
            raft_large, raft_small = _import_raft()
            model = (raft_small if small else raft_large)(weights=None, progress=False)
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"{path} does not fit torchvision's {'raft_small' if small else 'raft_large'}: "
                    f"missing keys {missing[:5]}..., unexpected keys {unexpected[:5]}... "
                    "(is it a RAFT checkpoint of the other size, or the original RAFT repo's format?)"
                )
        self.model = model.to(self.device).eval()

    @staticmethod
    def to_model_range(frames) -> torch.Tensor:
        """Frames -> float (T+1, 3, H, W) in [-1, 1] = torchvision's RAFT preset (x/255 - 0.5) / 0.5."""
        rgb = frames_to_uint8(frames)  # explicit, validated 0..255
        x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()  # (T+1, 3, H, W) in 0..255
        return (x / 255.0 - 0.5) / 0.5

    @torch.no_grad()
    def __call__(self, frames) -> torch.Tensor:
        x = self.to_model_range(frames).to(self.device)
        _, _, h, w = x.shape
        # RAFT needs sides divisible by 8: replicate-pad, then crop the flow back.
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
        out = []
        for s in range(0, x.shape[0] - 1, self.batch_size):
            e = min(s + self.batch_size, x.shape[0] - 1)
            preds = self.model(x[s:e], x[s + 1 : e + 1], num_flow_updates=self.iters) \
                if _accepts_iters(self.model) else self.model(x[s:e], x[s + 1 : e + 1])
            out.append(preds[-1])  # the last refinement, (n, 2, H', W')
        flow = torch.cat(out)[:, :, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        return flow.float().cpu().contiguous()  # (T, 2, H, W)


def _accepts_iters(model) -> bool:
    import inspect

    try:
        return "num_flow_updates" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def build_flow_estimator(method: str = "dis", weights: str | Path | None = None, device="cpu"):
    """``"dis"`` -> DISFlow(); ``"raft"`` / ``"raft-small"`` -> RAFTFlow(weights)."""
    if method == "dis":
        return DISFlow()
    if method in ("raft", "raft-small"):
        return RAFTFlow(weights, small=method == "raft-small", device=device)
    raise ValueError(f"flow method {method!r} is unknown; use 'dis' (no weights) or 'raft' with --flow-weights")
