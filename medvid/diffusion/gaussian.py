"""Gaussian diffusion with a linear beta schedule, epsilon or v prediction and learned-range variance.

The forward process, the posterior and the hybrid loss follow improved DDPM (Nichol & Dhariwal 2021,
"Improved Denoising Diffusion Probabilistic Models") as used by DiT: the network predicts epsilon and
a value v in [-1, 1] per element that interpolates the log variance between the posterior variance
beta~_t and beta_t (Eq. 15); the loss is L_simple + L_vb (Eq. 16 with lambda = 1 as in DiT, the
mean's gradient stopped in L_vb). MedSora's setting: 1000 steps, betas linear from 1e-4 to 0.02.

``prediction="v"`` makes the network predict the velocity v = sqrt(a_bar) eps - sqrt(1 - a_bar) x_0
(Salimans & Ho 2022, "Progressive Distillation", section 4), diffusers' ``v_prediction``. With epsilon
prediction the x_0 estimate is (x_t - sqrt(1 - a_bar) eps) / sqrt(a_bar): at t near T an error in eps
is multiplied by 1/sqrt(a_bar) (~160x at t = 999 for this schedule), and deterministic samplers
(DDIM, DPM-Solver++) carry such an x_0 through every later step; decoded, those latent outliers are
colour blotches. With v prediction x_0 = sqrt(a_bar) x_t - sqrt(1 - a_bar) v, whose error is bounded
by the error in v at every t.

Schedules are kept in float64 (as improved DDPM does in numpy) and cast per call; latents keep the
layout ``(B, F, C, H, W)``, so the learned-variance half of the model output is split on ``dim=2``.
"""

from __future__ import annotations

import math

import torch


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all dimensions but the batch: (B, ...) -> (B,)."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    # The tanh approximation of Phi used by improved DDPM (Page 1977), kept for parity with it.
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log-likelihood of ``x`` in [-1, 1] under a Gaussian discretised into 256 bins (DDPM's decoder L_0)."""
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )


PREDICTIONS = ("eps", "v")


class GaussianDiffusion:
    """The noise schedule plus everything computed from it (no network inside).

    ``num_timesteps``: training steps T; ``beta_start``/``beta_end``: the linear schedule (DDPM);
    ``learn_sigma``: the model outputs ``2C`` channels (the prediction, then the variance
    interpolation); ``prediction``: what the first ``C`` channels predict, ``"eps"`` (DDPM, DiT,
    MedSora) or ``"v"`` (the velocity; see the module docstring).
    """

    def __init__(
        self,
        num_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        learn_sigma: bool = True,
        channel_dim: int = 2,
        prediction: str = "eps",
    ):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction={prediction!r}: choose one of {list(PREDICTIONS)}")
        if num_timesteps < 2:
            raise ValueError(f"num_timesteps={num_timesteps}: need at least 2 diffusion steps")
        if not 0 < beta_start < beta_end < 1:
            raise ValueError(f"betas must satisfy 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
        self.num_timesteps = num_timesteps
        self.beta_start, self.beta_end = beta_start, beta_end
        self.learn_sigma = learn_sigma
        self.prediction = prediction
        self.channel_dim = channel_dim
        f64 = torch.float64
        self.betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=f64)
        alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=f64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        # q(x_{t-1} | x_t, x_0) (DDPM Eq. 6-7)
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~_0 = 0: improved DDPM replaces log(0) by log(beta~_1) so the learned range stays finite.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = self.betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / (1.0 - self.alphas_cumprod)
        self.log_betas = torch.log(self.betas)
        self.log_variance_fixed_large = torch.log(torch.cat([self.posterior_variance[1:2], self.betas[1:]]))
        self._tables_on: dict[tuple[int, torch.device], torch.Tensor] = {}  # tables copied to a device, once

    def describe(self) -> dict:
        return {
            "num_timesteps": self.num_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "learn_sigma": self.learn_sigma,
            "prediction": self.prediction,
        }

    @classmethod
    def from_description(cls, d: dict | None, learn_sigma: bool = True) -> "GaussianDiffusion":
        """Rebuild from :meth:`describe` as stored in a checkpoint (older checkpoints: eps prediction)."""
        d = d or {}
        return cls(d.get("num_timesteps", 1000), d.get("beta_start", 1e-4), d.get("beta_end", 0.02),
                   learn_sigma=bool(d.get("learn_sigma", learn_sigma)), prediction=d.get("prediction", "eps"))

    def _gather(self, arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """arr[t] broadcast to ``like``'s shape: (T,) , (B,) -> (B, 1, 1, ...). A table is copied to
        t's device the first time only (a copy per call would be a host-to-device wait per step)."""
        if arr.device != t.device:
            key = (id(arr), t.device)
            if key not in self._tables_on:
                self._tables_on[key] = arr.to(t.device)
            arr = self._tables_on[key]
        out = arr[t.long()].to(like.dtype)
        return out.view(-1, *([1] * (like.ndim - 1)))

    def sample_timesteps(self, batch_size: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(a_bar_t) x_0 + sqrt(1 - a_bar_t) eps (DDPM Eq. 4)."""
        return self._gather(self.sqrt_alphas_cumprod, t, x0) * x0 + self._gather(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * noise

    def q_posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._gather(self.posterior_mean_coef1, t, x_t) * x0 + self._gather(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, self._gather(self.posterior_variance, t, x_t), self._gather(self.posterior_log_variance_clipped, t, x_t)

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self._gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - self._gather(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        ) * eps

    def split_output(self, model_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, F, 2C, H, W) -> prediction (B, F, C, H, W), variance interpolation (B, F, C, H, W);
        without learn_sigma the second is None."""
        if not self.learn_sigma:
            return model_output, None
        pred, var = model_output.chunk(2, dim=self.channel_dim)
        return pred, var

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output: eps, or v = sqrt(a_bar) eps - sqrt(1 - a_bar) x_0."""
        if self.prediction == "eps":
            return noise
        return self._gather(self.sqrt_alphas_cumprod, t, x0) * noise - self._gather(
            self.sqrt_one_minus_alphas_cumprod, t, x0) * x0

    def eps_and_x0(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                   clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's prediction (its first C channels) as (eps, x_0) at x_t.

        ``clip``: clamp x_0 to [-clip, clip] and re-derive eps from the clamped x_0 (diffusers'
        ``clip_sample`` with ``use_clipped_model_output``), so every sampler step stays consistent
        with an x_0 inside the data's range."""
        a = self._gather(self.sqrt_alphas_cumprod, t, x_t)
        s = self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_t)
        if self.prediction == "eps":
            eps = pred
            x0 = self.predict_x0_from_eps(x_t, t, pred)
        else:
            x0 = a * x_t - s * pred
            eps = a * pred + s * x_t
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
            eps = (x_t - a * x0) / s
        return eps, x0

    def p_mean_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        clip: float | None = None) -> dict:
        """p(x_{t-1} | x_t): mean, log variance (learned range, improved DDPM Eq. 15) and predicted x_0
        (clamped to [-clip, clip] when given)."""
        pred, v = self.split_output(model_output)
        if v is None:  # fixed large variance (DDPM's sigma_t^2 = beta_t, with beta~_1 at t = 0)
            log_var = self._gather(self.log_variance_fixed_large, t, x_t)
            log_var = log_var.expand_as(x_t)
        else:
            min_log = self._gather(self.posterior_log_variance_clipped, t, x_t)
            max_log = self._gather(self.log_betas, t, x_t)
            frac = (v + 1) / 2  # v in [-1, 1] -> interpolation weight
            log_var = frac * max_log + (1 - frac) * min_log
        eps, pred_x0 = self.eps_and_x0(pred, x_t, t, clip)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {"mean": mean, "log_variance": log_var, "pred_x0": pred_x0, "eps": eps}

    def vb_terms_bpd(self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 and the decoder NLL L_0, in bits/dim."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"])
        nll = mean_flat(nll) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_losses(
        self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Hybrid loss per sample: {"loss", "mse", "vb"}, each (B,).

        L_simple = ||target - prediction||^2 (target eps, or v with ``prediction="v"``); with learned variance L_vb is added with the mean's
        gradient stopped, so L_vb trains only the variance (improved DDPM section 3.1, DiT).
        """
        if model_output.shape[self.channel_dim] != x0.shape[self.channel_dim] * (2 if self.learn_sigma else 1):
            raise ValueError(
                f"model output has {model_output.shape[self.channel_dim]} channels for {x0.shape[self.channel_dim]} "
                f"latent channels; learn_sigma={self.learn_sigma} needs {'2x' if self.learn_sigma else '1x'} "
                "(create the model with the matching learn_sigma)"
            )
        pred, v = self.split_output(model_output)
        mse = mean_flat((self.target(x0, noise, t).float() - pred.float()) ** 2)
        if v is None:
            vb = torch.zeros_like(mse)
        else:
            frozen = torch.cat([pred.detach(), v], dim=self.channel_dim).float()
            vb = self.vb_terms_bpd(frozen, x0.float(), x_t.float(), t)
        return {"loss": mse + vb, "mse": mse, "vb": vb}
