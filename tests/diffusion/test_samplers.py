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


# --- v prediction and the x_0 clamp, against the same diffusers schedulers -------------------------

V_COMMON = {**COMMON, "prediction_type": "v_prediction"}


def run_ours_v(sampler, steps, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    d = GaussianDiffusion(prediction="v")
    return flat(sample(toy_model, (B, 1, C, H, W), d, sampler=sampler, steps=steps, generator=g, **kw))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_v_prediction_matches_diffusers(eta):
    sched = DDIMScheduler(**V_COMMON, clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    ref = run_diffusers(sched, 25, True, seed=4, eta=eta)
    torch.testing.assert_close(run_ours_v("ddim", 25, seed=4, eta=eta), ref, atol=1e-4, rtol=1e-4)


def test_ddpm_v_prediction_matches_diffusers():
    sched = DDPMScheduler(**V_COMMON, clip_sample=False, variance_type="learned_range", timestep_spacing="leading")
    ref = run_diffusers(sched, 50, False, seed=5)
    torch.testing.assert_close(run_ours_v("ddpm", 50, seed=5), ref, atol=1e-4, rtol=1e-4)


def test_dpm_solver_pp_v_prediction_matches_diffusers():
    sched = DPMSolverMultistepScheduler(**V_COMMON, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
                                        timestep_spacing="linspace", lower_order_final=True, final_sigmas_type="zero")
    ref = run_diffusers(sched, 20, True, seed=6)
    torch.testing.assert_close(run_ours_v("dpm++", 20, seed=6), ref, atol=1e-4, rtol=1e-4)


def big_model(x, t):
    """A toy network whose eps is off by a constant: its x_0 estimates leave [-1, 1] at large t."""
    out = toy_model(x, t)
    eps, v = out.chunk(2, dim=-3)
    return torch.cat([eps + 0.3, v], dim=-3)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_clip_denoised_matches_diffusers_clip_sample(prediction):
    sched = DDIMScheduler(**{**COMMON, "prediction_type": prediction}, clip_sample=True, clip_sample_range=1.5,
                          set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    g = torch.Generator().manual_seed(7)
    x = torch.randn((B, C, H, W), generator=g)
    sched.set_timesteps(25)
    for t in sched.timesteps:
        out = flat(big_model(x[:, None], torch.full((B,), int(t))))[:, :C]
        x = sched.step(out, t, x, generator=g, use_clipped_model_output=True).prev_sample
    d = GaussianDiffusion(prediction="eps" if prediction == "epsilon" else "v")
    ours = flat(sample(big_model, (B, 1, C, H, W), d, sampler="ddim", steps=25,
                       generator=torch.Generator().manual_seed(7), clip_denoised=1.5))
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)
    assert ours.abs().max() <= 1.5 + 1e-5  # the last step lands on a clamped x_0
    unclipped = flat(sample(big_model, (B, 1, C, H, W), d, sampler="ddim", steps=25,
                            generator=torch.Generator().manual_seed(7)))
    assert not torch.allclose(unclipped, ours, atol=1e-3)  # the clamp acted


def test_ddpm_clip_denoised_matches_diffusers_clip_sample():
    sched = DDPMScheduler(**COMMON, clip_sample=True, clip_sample_range=1.5, variance_type="learned_range",
                          timestep_spacing="leading")
    g = torch.Generator().manual_seed(8)
    x = torch.randn((B, C, H, W), generator=g)
    sched.set_timesteps(50)
    for t in sched.timesteps:
        x = sched.step(flat(big_model(x[:, None], torch.full((B,), int(t)))), t, x, generator=g).prev_sample
    ours = flat(sample(big_model, (B, 1, C, H, W), GaussianDiffusion(), sampler="ddpm", steps=50,
                       generator=torch.Generator().manual_seed(8), clip_denoised=1.5))
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)


def test_dpm_solver_pp_clip_denoised_bounds_every_data_prediction():
    d = GaussianDiffusion()
    seen = []

    def spy(x, t):
        out = big_model(x, t)
        seen.append(d.eps_and_x0(out.chunk(2, dim=-3)[0], x, t, clip=1.5)[1].abs().max().item())
        return out

    z = sample(spy, (B, 1, C, H, W), d, sampler="dpm++", steps=10, generator=torch.Generator().manual_seed(9),
               clip_denoised=1.5)
    assert max(seen) <= 1.5 + 1e-6 and z.abs().max() <= 1.5 + 1e-5
    free = sample(big_model, (B, 1, C, H, W), d, sampler="dpm++", steps=10, generator=torch.Generator().manual_seed(9))
    assert free.abs().max() > 1.5  # without the clamp this network's samples leave the range


def test_clip_denoised_must_be_positive():
    with pytest.raises(ValueError, match="clip_denoised"):
        sample(toy_model, (B, 1, C, H, W), GaussianDiffusion(), sampler="ddim", steps=2, clip_denoised=0)
