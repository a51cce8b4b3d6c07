"""Samplers: DDIM (eta), ancestral DDPM with the learned variance, DPM-Solver++ (2M), and
classifier-free guidance.

Each sampler walks a subset of the training timesteps with the same spacing as the diffusers
scheduler of the same name (DDIM/DDPM: "leading", DPM-Solver++: "linspace"), so for identical
inputs and the same ``torch.Generator`` they agree with ``DDIMScheduler`` (``set_alpha_to_one``),
``DDPMScheduler(variance_type="learned_range")`` and ``DPMSolverMultistepScheduler`` (tested).

Every sampler reads the network through ``GaussianDiffusion.eps_and_x0``, so epsilon- and
v-prediction models share them, and each takes ``clip_denoised``: clamp every x_0 estimate to
[-c, c] and re-derive eps from it (diffusers' ``clip_sample`` + ``use_clipped_model_output`` for DDIM,
the same clamp of the data prediction for DDPM and DPM-Solver++). A latent-space clamp at the training latents'
range keeps a deterministic sampler from carrying an amplified x_0 error to the end (see
``medvid.diffusion.gaussian``); ``None`` leaves the samplers exactly diffusers' unclipped ones.

``model_fn(x, t) -> model output`` takes latents ``(B, F, C, H, W)`` and timesteps ``(B,)`` (the
original training indices, never rescaled) and returns ``(B, F, 2C, H, W)`` (learned sigma) or
``(B, F, C, H, W)``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from medvid.diffusion.gaussian import GaussianDiffusion

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS = ("ddim", "ddpm", "dpm++")


def leading_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """[.., 2r, r, 0] with r = T // steps (diffusers "leading", DiT's "ddimN" respacing)."""
    ratio = num_timesteps // steps
    return [i * ratio for i in range(steps)][::-1]


def linspace_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """round(linspace(0, T-1, steps+1))[::-1][:-1] (diffusers "linspace", DPM-Solver's default)."""
    pts = torch.linspace(0, num_timesteps - 1, steps + 1, dtype=torch.float64).round().long().tolist()
    return pts[::-1][:-1]


def guided(model_fn: ModelFn, uncond_fn: ModelFn, scale: float, channel_dim: int = 2, learn_sigma: bool = True) -> ModelFn:
    """Classifier-free guidance (Ho & Salimans 2022): eps = eps_u + s (eps_c - eps_u).

    Guidance is applied to the prediction only (for v prediction the same linear combination of v,
    which is the guided eps since eps is linear in v at fixed x_t and t); the learned variance is the conditional one (as in DiT's
    ``forward_with_cfg``, without its defect of guiding only 3 channels).
    """

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out_c, out_u = model_fn(x, t), uncond_fn(x, t)
        if learn_sigma:
            eps_c, rest = out_c.chunk(2, dim=channel_dim)
            eps_u = out_u.chunk(2, dim=channel_dim)[0]
            return torch.cat([eps_u + scale * (eps_c - eps_u), rest], dim=channel_dim)
        return out_u + scale * (out_c - out_u)

    return fn


def _eps_x0(diffusion: GaussianDiffusion, out: torch.Tensor, x: torch.Tensor, t: int,
            clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x_0) of the model output at (x, t), x_0 clamped to [-clip, clip] when given."""
    pred = diffusion.split_output(out)[0].to(x.dtype)
    return diffusion.eps_and_x0(pred, x, _tvec(t, x), clip)


def _tvec(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


def _randn(shape, generator, like_device, dtype) -> torch.Tensor:
    """Standard normal noise; a list of generators draws each batch element from its own one (so a
    video's noise does not depend on which batch it is in). Drawn on the generator's device, so a
    seed gives the same noise on CPU and GPU runs."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([_randn((1, *shape[1:]), g, like_device, dtype) for g in generator])
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(like_device)


@torch.no_grad()
def ddim_loop(model_fn, x, diffusion, steps, eta=0.0, generator=None, progress=None, clip_denoised=None):
    """DDIM (Song et al. 2021, Eq. 12): x_{t'} = sqrt(a') x0 + sqrt(1 - a' - s^2) eps + s z."""
    ac = diffusion.alphas_cumprod
    ts = leading_timesteps(diffusion.num_timesteps, steps)
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        a_t = float(ac[t])
        a_prev = float(ac[prev]) if prev >= 0 else 1.0  # set_alpha_to_one: the last step lands on x_0
        eps, x0 = _eps_x0(diffusion, model_fn(x, _tvec(t, x)), x, t, clip_denoised)
        # sigma_t(eta) (Eq. 16): eta = 0 deterministic DDIM, eta = 1 DDPM-like.
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if eta > 0:
            x = x + sigma * _randn(x.shape, generator, x.device, x.dtype)
        if progress:
            progress(i + 1, len(ts))
    return x


@torch.no_grad()
def ddpm_loop(model_fn, x, diffusion, steps=None, generator=None, progress=None, clip_denoised=None):
    """Ancestral sampling with the learned-range variance (improved DDPM Eq. 15), optionally respaced.

    With ``steps < T`` the chain uses beta'_t = 1 - a_bar_t / a_bar_t' between kept steps, and the
    learned v interpolates between that chain's posterior variance and beta'_t (improved DDPM 4.4).
    """
    steps = steps or diffusion.num_timesteps
    ac = diffusion.alphas_cumprod
    ts = leading_timesteps(diffusion.num_timesteps, steps)
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        a_t = float(ac[t])
        a_prev = float(ac[prev]) if prev >= 0 else 1.0
        beta = 1 - a_t / a_prev
        out = model_fn(x, _tvec(t, x))
        v = diffusion.split_output(out)[1]
        _, x0 = _eps_x0(diffusion, out, x, t, clip_denoised)
        # posterior mean (DDPM Eq. 7)
        mean = (math.sqrt(a_prev) * beta / (1 - a_t)) * x0 + (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t)) * x
        if prev >= 0:
            post_var = max((1 - a_prev) / (1 - a_t) * beta, 1e-20)
            if v is None:
                log_var = torch.full_like(x, math.log(beta))
            else:
                frac = (v.to(x.dtype) + 1) / 2
                log_var = frac * math.log(beta) + (1 - frac) * math.log(post_var)
            x = mean + torch.exp(0.5 * log_var) * _randn(x.shape, generator, x.device, x.dtype)
        else:
            x = mean
        if progress:
            progress(i + 1, len(ts))
    return x


@torch.no_grad()
def dpmpp_loop(model_fn, x, diffusion, steps=20, progress=None, clip_denoised=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2, data prediction, midpoint form as in diffusers).

    alpha_t = sqrt(a_bar_t), sigma_t = sqrt(1 - a_bar_t), lambda_t = log(alpha_t / sigma_t); the last
    step goes to sigma = 0 with a first-order update (it returns the x_0 prediction).
    """
    ac = diffusion.alphas_cumprod
    ts = linspace_timesteps(diffusion.num_timesteps, steps)

    def coeffs(t):
        if t < 0:
            return 1.0, 0.0, math.inf
        a = float(ac[t])
        return math.sqrt(a), math.sqrt(1 - a), 0.5 * math.log(a / (1 - a))

    prev_x0, prev_lambda = None, None
    for i, t in enumerate(ts):
        s_next = ts[i + 1] if i + 1 < len(ts) else -1
        alpha_s, sigma_s, lambda_s = coeffs(t)
        alpha_t, sigma_t, lambda_t = coeffs(s_next)
        _, x0 = _eps_x0(diffusion, model_fn(x, _tvec(t, x)), x, t, clip_denoised)  # data prediction
        final = s_next < 0
        # First order at the start (no history) and at the end (sigma -> 0: the update is x_0 itself).
        first_order = prev_x0 is None or final
        if final:
            x = x0
        else:
            h = lambda_t - lambda_s
            phi = math.expm1(-h)  # exp(-h) - 1
            if first_order:
                x = (sigma_t / sigma_s) * x - alpha_t * phi * x0
            else:
                r = (lambda_s - prev_lambda) / h
                d1 = (x0 - prev_x0) / r
                x = (sigma_t / sigma_s) * x - alpha_t * phi * x0 - 0.5 * alpha_t * phi * d1
        prev_x0, prev_lambda = x0, lambda_s
        if progress:
            progress(i + 1, len(ts))
    return x


def sample(
    model_fn: ModelFn,
    shape: tuple[int, ...],
    diffusion: GaussianDiffusion,
    sampler: str = "ddim",
    steps: int | None = 250,
    eta: float = 0.0,
    cfg_scale: float = 1.0,
    uncond_fn: ModelFn | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    noise: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int, int], None] | None = None,
    clip_denoised: float | None = None,
) -> torch.Tensor:
    """Draw latents of ``shape`` (B, F, C, H, W) from noise; deterministic given ``generator`` (one,
    or a list with one per batch element).

    ``cfg_scale != 1`` needs ``uncond_fn`` (the model with the null label / empty text).
    ``clip_denoised``: clamp each x_0 estimate to [-c, c] (the training latents' range).
    """
    if clip_denoised is not None and not clip_denoised > 0:
        raise ValueError(f"clip_denoised={clip_denoised}: give a positive bound or None")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: choose one of {list(SAMPLERS)}")
    if steps is not None and not 1 <= steps <= diffusion.num_timesteps:
        raise ValueError(f"steps={steps}: must be between 1 and {diffusion.num_timesteps}")
    if cfg_scale != 1.0:
        if uncond_fn is None:
            raise ValueError(
                f"cfg_scale={cfg_scale} needs an unconditional model (a class-conditional or text-conditioned "
                "checkpoint); use cfg_scale=1 for an unconditional model"
            )
        model_fn = guided(model_fn, uncond_fn, cfg_scale, diffusion.channel_dim, diffusion.learn_sigma)
    device = torch.device(device) if device is not None else torch.device("cpu")
    x = noise.to(device, dtype) if noise is not None else _randn(shape, generator, device, dtype)
    if sampler == "ddim":
        return ddim_loop(model_fn, x, diffusion, steps or 250, eta, generator, progress, clip_denoised)
    if sampler == "ddpm":
        return ddpm_loop(model_fn, x, diffusion, steps, generator, progress, clip_denoised)
    return dpmpp_loop(model_fn, x, diffusion, steps or 20, progress, clip_denoised)
