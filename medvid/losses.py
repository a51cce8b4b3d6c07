"""Losses shared by the VAE fine-tuning (MedSora Eq. 16): focal frequency loss and a perceptual
(LPIPS) loss that is skipped, with a note, when its weights are not on this machine.

``focal_frequency_loss`` is Jiang et al., "Focal Frequency Loss for Image Reconstruction and
Synthesis" (ICCV 2021), written to give exactly what the authors' ``focal-frequency-loss`` package
(``FocalFrequencyLoss``) gives for the same settings: orthonormal 2D DFT per patch and channel,
spectrum weights |F_pred - F_target|^alpha (optionally log(1 + .)), normalised by their maximum
per image/patch/channel (or per batch), NaN -> 0, detached; loss = mean(weights * |F_pred - F_target|^2).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from medvid.utils.logging import get_logger

__all__ = ["focal_frequency_loss", "PerceptualLoss", "vae_reconstruction_loss"]

log = get_logger("losses")


def _spectrum(x: torch.Tensor, patch_factor: int) -> torch.Tensor:
    """(N, C, H, W) -> complex (N, P, C, H/p, W/p): orthonormal 2D DFT of each of P = p^2 patches."""
    n, c, h, w = x.shape
    if h % patch_factor or w % patch_factor:
        raise ValueError(f"focal_frequency_loss: patch_factor {patch_factor} must divide the image size {h}x{w}")
    ph, pw = h // patch_factor, w // patch_factor
    # patches in row-major order, as the reference implementation stacks them
    patches = x.reshape(n, c, patch_factor, ph, patch_factor, pw).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, patch_factor * patch_factor, c, ph, pw)
    return torch.fft.fft2(patches.float(), norm="ortho")


def focal_frequency_loss(pred: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.0, patch_factor: int = 1,
                         ave_spectrum: bool = False, log_matrix: bool = False, batch_matrix: bool = False,
                         matrix: torch.Tensor | None = None, loss_weight: float = 1.0) -> torch.Tensor:
    """Focal frequency loss of images (N, C, H, W) or videos (B, T, C, H, W) (frames as images)."""
    if pred.shape != target.shape:
        raise ValueError(f"focal_frequency_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.ndim == 5:
        pred, target = pred.flatten(0, 1), target.flatten(0, 1)  # (B*T, C, H, W)
    if pred.ndim != 4:
        raise ValueError(f"focal_frequency_loss takes (N, C, H, W) or (B, T, C, H, W); got {tuple(pred.shape)}")
    fp, ft = _spectrum(pred, patch_factor), _spectrum(target, patch_factor)
    if ave_spectrum:  # minibatch-average spectrum
        fp, ft = fp.mean(0, keepdim=True), ft.mean(0, keepdim=True)
    dist = (fp - ft).abs() ** 2  # squared Euclidean distance of (real, imag) pairs
    if matrix is not None:
        weight = matrix.detach()
    else:
        with torch.no_grad():
            weight = dist.sqrt() ** alpha
            if log_matrix:
                weight = torch.log(weight + 1.0)
            if batch_matrix:
                weight = weight / weight.max()
            else:
                weight = weight / weight.amax(dim=(-2, -1), keepdim=True)
            weight = torch.nan_to_num(weight, nan=0.0).clamp(0.0, 1.0)
    if weight.min() < 0 or weight.max() > 1:
        raise ValueError("focal_frequency_loss: a given spectrum weight matrix must lie in [0, 1]")
    return (weight * dist).mean() * loss_weight


def _lpips_backbone_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision alexnet/vgg ``features.{i}.*`` keys -> lpips' ``slice{k}.{i}.*`` keys."""
    out = {}
    for key in model.state_dict():
        _slice, idx, param = key.split(".", 2)
        out[key] = state[f"features.{idx}.{param}"]
    return out


class PerceptualLoss(nn.Module):
    """LPIPS (Zhang et al. 2018) when it can run here, else a no-op that says why once.

    LPIPS needs the ``lpips`` package (which imports torchvision) and the ImageNet weights of its
    backbone (torchvision's alexnet/vgg16 ``.pth``; lpips would download them, we never do). Pass
    ``backbone_weights`` as a local file. When anything is missing, ``available`` is False,
    ``note`` says what, and the loss is 0 (Eq. 16 then reduces to L1 + lambda * FFL).
    """

    def __init__(self, backbone_weights: str | Path | None = None, net: str = "alex"):
        super().__init__()
        self.model, self.note = None, ""
        if net not in ("alex", "vgg"):
            raise ValueError(f"PerceptualLoss net {net!r}: use 'alex' or 'vgg'")
        try:
            import lpips  # noqa: F401  (imports torchvision)
        except Exception as e:
            self.note = f"LPIPS skipped: the lpips package does not import ({type(e).__name__}: {e})"
        else:
            if backbone_weights is None or not Path(backbone_weights).is_file():
                self.note = (f"LPIPS skipped: no local {net} backbone weights (torchvision {net} .pth) "
                             f"given (got {backbone_weights}); pass --lpips-weights to enable it")
            else:
                model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
                state = torch.load(backbone_weights, map_location="cpu", weights_only=True)
                model.net.load_state_dict(_lpips_backbone_state(model.net, state), strict=True)
                self.model = model.eval().requires_grad_(False)
        if self.note:
            log.warning(self.note)

    @property
    def available(self) -> bool:
        return self.model is not None

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS of images (N, 3, H, W) or videos (B, T, 3, H, W) in [-1, 1]."""
        if self.model is None:
            return pred.new_zeros(())
        if pred.ndim == 5:
            pred, target = pred.flatten(0, 1), target.flatten(0, 1)
        return self.model(pred, target).mean()


def vae_reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, perceptual: PerceptualLoss | None = None,
                            ffl_weight: float = 0.1) -> dict[str, torch.Tensor]:
    """MedSora Eq. 16: L1 + perceptual + lambda * FFL (lambda 0.1); videos (B, T, 3, H, W) in [-1, 1]."""
    l1 = (recon - target).abs().mean()
    perc = perceptual(recon, target) if perceptual is not None else recon.new_zeros(())
    ffl = focal_frequency_loss(recon, target)
    return {"loss": l1 + perc + ffl_weight * ffl, "l1": l1, "perceptual": perc, "ffl": ffl}
