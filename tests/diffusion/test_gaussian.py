"""GaussianDiffusion against diffusers' DDPMScheduler and torch.distributions on identical inputs."""

import math

import pytest
import torch
from diffusers import DDPMScheduler
from scipy.stats import norm

from medvid.diffusion import GaussianDiffusion, discretized_gaussian_log_likelihood, normal_kl


def ddpm_scheduler(**kw):
    return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         clip_sample=False, prediction_type="epsilon", **kw)


def test_q_sample_matches_diffusers_add_noise():
    d = GaussianDiffusion()
    x0, noise = torch.randn(4, 3, 4, 5, 5), torch.randn(4, 3, 4, 5, 5)
    t = torch.tensor([0, 1, 500, 999])
    ref = ddpm_scheduler().add_noise(x0, noise, t)
    torch.testing.assert_close(d.q_sample(x0, t, noise), ref, atol=1e-5, rtol=1e-5)


def test_schedule_is_linear_1e4_to_002():
    d = GaussianDiffusion()
    assert d.betas[0].item() == pytest.approx(1e-4) and d.betas[-1].item() == pytest.approx(0.02)
    torch.testing.assert_close(d.alphas_cumprod.float(), ddpm_scheduler().alphas_cumprod, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("t", [1, 37, 500, 999])
def test_p_mean_variance_matches_diffusers_learned_range(t):
    """Mean and learned-range log variance of p(x_{t-1}|x_t) equal one diffusers DDPM step."""
    d = GaussianDiffusion()
    sched = ddpm_scheduler(variance_type="learned_range")
    sched.set_timesteps(1000)
    x_t = torch.randn(2, 1, 4, 3, 3)
    out = torch.cat([torch.randn(2, 1, 4, 3, 3), torch.rand(2, 1, 4, 3, 3) * 2 - 1], dim=2)
    ours = d.p_mean_variance(out, x_t, torch.full((2,), t))
    flat = lambda z: z.reshape(2, -1, 3, 3)  # (B, 1, C, H, W) -> (B, C, H, W): diffusers' layout
    g = torch.Generator().manual_seed(3)
    prev = sched.step(flat(out), t, flat(x_t), generator=g).prev_sample
    log_var = sched._get_variance(t, predicted_variance=flat(out)[:, 4:])
    noise = torch.randn(flat(x_t).shape, generator=torch.Generator().manual_seed(3))
    mean_ref = prev - torch.exp(0.5 * log_var) * noise
    torch.testing.assert_close(flat(ours["log_variance"]), log_var, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(flat(ours["mean"]), mean_ref, atol=1e-4, rtol=1e-4)


def test_normal_kl_matches_torch_distributions():
    m1, m2, lv1, lv2 = torch.randn(4, 10).unbind(0)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()),
                                            torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), ref, atol=1e-5, rtol=1e-5)


def test_discretized_log_likelihood_matches_exact_normal_bins():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0], dtype=torch.float64)
    mean = x + torch.tensor([0.01, -0.02, 0.0, 0.03, -0.01], dtype=torch.float64)
    log_scale = torch.log(torch.full_like(x, 0.05))
    s = 0.05
    lo, hi = (x - mean - 1 / 255) / s, (x - mean + 1 / 255) / s
    exact = torch.tensor(norm.cdf(hi.numpy()) - norm.cdf(lo.numpy()))
    exact[0] = float(norm.cdf(hi[0].item()))  # x = -1: all mass below
    exact[-1] = float(1 - norm.cdf(lo[-1].item()))  # x = 1: all mass above
    ours = discretized_gaussian_log_likelihood(x, mean, log_scale)
    torch.testing.assert_close(ours, exact.log(), atol=5e-3, rtol=5e-3)


def test_hybrid_loss_terms():
    d = GaussianDiffusion()
    x0, noise = torch.randn(3, 2, 4, 4, 4) * 0.5, torch.randn(3, 2, 4, 4, 4)
    t = torch.tensor([0, 10, 700])
    x_t = d.q_sample(x0, t, noise)
    # Exact epsilon and v = -1 (posterior variance): KL(q || p) = 0 for t > 0.
    perfect = torch.cat([noise, -torch.ones_like(noise)], dim=2)
    terms = d.training_losses(perfect, x0, x_t, t, noise)
    assert terms["mse"].abs().max() < 1e-10
    assert terms["vb"][1:].abs().max() < 1e-5
    assert terms["vb"][0] > 0  # decoder NLL in bits/dim
    # A wrong prediction: mse is the plain squared error, vb the KL from torch.distributions.
    eps = torch.randn_like(noise, requires_grad=True)
    v = (torch.rand_like(noise) * 2 - 1).requires_grad_(True)
    terms = d.training_losses(torch.cat([eps, v], dim=2), x0, x_t, t, noise)
    torch.testing.assert_close(terms["mse"], ((noise - eps) ** 2).mean(dim=(1, 2, 3, 4)))
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    out = d.p_mean_variance(torch.cat([eps, v], dim=2).detach(), x_t, t)
    q_mean, q_var, _ = d.q_posterior_mean_variance(x0, x_t, t)
    q = torch.distributions.Normal(q_mean[1:], q_var[1:].sqrt().expand_as(q_mean[1:]))  # t > 0: beta~_t > 0
    p = torch.distributions.Normal(out["mean"][1:], (0.5 * out["log_variance"][1:]).exp())
    kl = torch.distributions.kl_divergence(q, p).mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(terms["vb"][1:], kl / math.log(2), atol=1e-4, rtol=1e-4)
    # The VB term trains only the variance: its gradient w.r.t. epsilon is zero.
    terms["vb"].sum().backward()
    assert eps.grad.abs().max() == 0 and v.grad.abs().max() > 0


def test_wrong_channel_count_is_a_clear_error():
    d = GaussianDiffusion()
    x = torch.randn(1, 2, 4, 2, 2)
    with pytest.raises(ValueError, match="learn_sigma"):
        d.training_losses(x, x, x, torch.tensor([3]), x)


def test_v_prediction_target_and_inversion_agree_with_diffusers():
    from diffusers import DDPMScheduler

    d = GaussianDiffusion(prediction="v")
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                          prediction_type="v_prediction")
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 4, 5, 5, generator=g), torch.randn(3, 2, 4, 5, 5, generator=g)
    t = torch.tensor([0, 500, 999])
    v = d.target(x0, noise, t)
    torch.testing.assert_close(v, sched.get_velocity(x0, noise, t), atol=1e-5, rtol=1e-5)
    x_t = d.q_sample(x0, t, noise)
    eps, x0_hat = d.eps_and_x0(v, x_t, t)  # the exact v gives back the exact eps and x_0
    torch.testing.assert_close(eps, noise, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)
    out = torch.cat([v, torch.zeros_like(v)], dim=2)
    assert d.training_losses(out, x0, x_t, t, noise)["mse"].abs().max() < 1e-8


def test_prediction_is_recorded_and_rebuilt():
    d = GaussianDiffusion(prediction="v", learn_sigma=False)
    e = GaussianDiffusion.from_description(d.describe())
    assert (e.prediction, e.learn_sigma) == ("v", False)
    assert GaussianDiffusion.from_description({"num_timesteps": 1000}).prediction == "eps"  # older checkpoints
    with pytest.raises(ValueError, match="prediction"):
        GaussianDiffusion(prediction="x0")
