"""Our samplers against diffusers' DDIM / DDPM / DPM-Solver++ schedulers on identical inputs."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from medvid.diffusion import GaussianDiffusion, sample

B, C, H, W = 2, 4, 3, 3
COMMON = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", prediction_type="epsilon")


def toy_model(x, t):
    """A fixed smooth 'network': (B, 1, C, H, W), (B,) -> (B, 1, 2C, H, W) (eps, v in [-1, 1])."""
    s = (t.float() / 1000).view(-1, *([1] * (x.ndim - 1)))
    eps = torch.tanh(0.8 * x + s) * 0.9 + 0.1 * x.roll(1, dims=-1)
    v = torch.tanh(x - s)
    return torch.cat([eps, v], dim=-3)


def flat(z):  # (B, 1, C, H, W) -> (B, C, H, W): diffusers' layout, same element order
    return z.reshape(z.shape[0], -1, H, W)


def run_diffusers(sched, steps, split_eps, seed, **step_kw):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B, C, H, W), generator=g)
    sched.set_timesteps(steps)
    for t in sched.timesteps:
        out = flat(toy_model(x[:, None], torch.full((B,), int(t))))
        out = out[:, :C] if split_eps else out
        x = sched.step(out, t, x, generator=g, **step_kw).prev_sample
    return x


def run_ours(sampler, steps, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    return flat(sample(toy_model, (B, 1, C, H, W), GaussianDiffusion(), sampler=sampler, steps=steps, generator=g, **kw))


@pytest.mark.parametrize("steps,eta", [(25, 0.0), (10, 1.0), (250, 0.0)])
def test_ddim_matches_diffusers(steps, eta):
    sched = DDIMScheduler(**COMMON, clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    ref = run_diffusers(sched, steps, True, seed=1, eta=eta)
    torch.testing.assert_close(run_ours("ddim", steps, seed=1, eta=eta), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("steps", [50, 1000])
def test_ddpm_learned_variance_matches_diffusers(steps):
    sched = DDPMScheduler(**COMMON, clip_sample=False, variance_type="learned_range", timestep_spacing="leading")
    ref = run_diffusers(sched, steps, False, seed=2)
    torch.testing.assert_close(run_ours("ddpm", steps, seed=2), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("steps", [5, 20])
def test_dpm_solver_pp_matches_diffusers(steps):
    sched = DPMSolverMultistepScheduler(**COMMON, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                        timestep_spacing="linspace", lower_order_final=True, final_sigmas_type="zero")
    ref = run_diffusers(sched, steps, True, seed=3)
    torch.testing.assert_close(run_ours("dpm++", steps, seed=3), ref, atol=1e-4, rtol=1e-4)


def test_samplers_are_deterministic_given_a_seed_and_differ_across_seeds():
    a, b, c = run_ours("ddpm", 20, seed=5), run_ours("ddpm", 20, seed=5), run_ours("ddpm", 20, seed=6)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_classifier_free_guidance_equals_scaled_condition():
    """For a model linear in its condition c, guidance scale s equals conditioning on s*c."""
    c = torch.randn(1, 1, C, H, W)

    def model_with(cond):
        def fn(x, t):
            eps = 0.5 * x + cond + (t.float() / 1000).view(-1, 1, 1, 1, 1)
            return torch.cat([eps, torch.tanh(x)], dim=2)
        return fn

    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    d = GaussianDiffusion()
    guided = sample(model_with(c), (B, 1, C, H, W), d, "dpm++", 10, cfg_scale=3.0,
                    uncond_fn=model_with(torch.zeros_like(c)), generator=g1)
    direct = sample(model_with(3.0 * c), (B, 1, C, H, W), d, "dpm++", 10, generator=g2)
    torch.testing.assert_close(guided, direct, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unconditional"):
        sample(model_with(c), (B, 1, C, H, W), d, "ddim", 5, cfg_scale=2.0)


def test_bad_sampler_arguments():
    d = GaussianDiffusion()
    with pytest.raises(ValueError, match="ddim"):
        sample(toy_model, (1, 1, C, H, W), d, sampler="euler")
    with pytest.raises(ValueError, match="steps"):
        sample(toy_model, (1, 1, C, H, W), d, steps=2000)
