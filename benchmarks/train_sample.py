"""Training and sampling speed on the CPU: medsora-s vs stdit-s, DDIM-250 vs DPM-Solver++-20.

1. Training steps/s (forward + hybrid loss + backward + AdamW, the trainer's step) and peak memory
   for medsora-s and stdit-s at a tiny shape and at the paper's shape (latent 4 video + 2 image
   frames x 16 ch x 16 x 16, Table 1's z-shape; batch 1). Each case runs in its own process so its
   peak RSS is its own. Baseline: stdit-s (ratio = medsora / stdit).
2. Sampling: seconds per video for DDIM-250 and DPM-Solver++-20 with the tiny medsora model, and how
   far apart the two samplers land from the same noise. Because a random network has no "right"
   answer, the distance is also measured on a model whose exact answer is known: Gaussian data
   x0 ~ N(mu, s^2) has a closed-form epsilon predictor and a closed-form probability-flow ODE
   solution, which both samplers approximate. Baseline: DDIM-250.

    python benchmarks/train_sample.py            # a few minutes
    python benchmarks/train_sample.py --quick    # smoke run (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medvid.diffusion import GaussianDiffusion, sample  # noqa: E402

TINY = {"depth": 2, "hidden_size": 64, "input_size": 8, "in_channels": 4, "d_state": 16, "headdim": 32}
SHAPES = {  # name -> (model overrides, (F_video, N_img, C, H, W), batch)
    "tiny": (TINY, (4, 2, 4, 8, 8), 2),
    "paper": ({}, (4, 2, 16, 16, 16), 1),
}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train_worker(model_name: str, shape: str, steps: int, warmup: int) -> dict:
    """Runs in a child process: time ``steps`` optimiser steps after ``warmup``."""
    from medvid.models import create_model

    torch.manual_seed(0)
    torch.set_num_threads(2)
    over, (fv, ni, c, h, w), b = SHAPES[shape]
    if model_name.startswith("stdit"):
        over = {k: v for k, v in over.items() if k not in ("d_state",)}
    base = rss_mb()
    model = create_model(model_name, **over)
    diffusion = GaussianDiffusion()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    x0 = torch.randn(b, fv + ni, c, h, w)
    times, cpu_times = [], []
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        t = torch.randint(0, 1000, (b,))
        noise = torch.randn_like(x0)
        x_t = diffusion.q_sample(x0, t, noise)
        out = model(x_t, t, num_images=ni)
        loss = diffusion.training_losses(out, x0, x_t, t, noise)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    sec = sorted(times)[len(times) // 2]
    cpu = sorted(cpu_times)[len(cpu_times) // 2]
    return {"model": model_name, "shape": shape, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "batch": b, "latent": [fv + ni, c, h, w], "sec_per_step": sec, "steps_per_s": 1 / sec,
            "clips_per_s": b / sec, "cpu_sec_per_step": cpu, "peak_rss_MB": rss_mb(), "rss_growth_MB": rss_mb() - base}


def run_child(model_name: str, shape: str, steps: int, warmup: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps([model_name, shape, steps, warmup])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def gaussian_oracle(diffusion: GaussianDiffusion, mu: float, s: float):
    """Exact eps(x_t, t) for x0 ~ N(mu, s^2) and the exact probability-flow ODE map x_T -> x_0."""
    ac = diffusion.alphas_cumprod

    def eps_fn(x, t):
        a = ac[t].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        # x_t ~ N(sqrt(a) mu, a s^2 + 1 - a); E[eps | x_t] = sqrt(1-a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a)
        eps = (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * s**2 + 1 - a)
        return torch.cat([eps, torch.zeros_like(eps)], dim=2)

    a_t = float(ac[-1])

    def exact(x_T):
        # The PF-ODE keeps the standardised value z = (x_t - sqrt(a) mu) / sqrt(a s^2 + 1 - a) fixed.
        return mu + s * (x_T - math.sqrt(a_t) * mu) / math.sqrt(a_t * s**2 + 1 - a_t)

    return eps_fn, exact


def sampling_bench(num_videos: int, ddim_steps: int, dpm_steps: int) -> dict:
    from medvid.models import create_model

    torch.manual_seed(0)
    torch.set_num_threads(2)
    diffusion = GaussianDiffusion()
    model = create_model("medsora-s", **TINY).eval()
    with torch.no_grad():  # a random but non-degenerate network (the zero-initialised heads would give eps = 0)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    shape = (1, 4, 4, 8, 8)
    fn = lambda x, t: model(x, t)  # noqa: E731
    res: dict = {"num_videos": num_videos, "latent": list(shape[1:])}
    outs = {}
    for name, sampler, steps in (("ddim", "ddim", ddim_steps), ("dpm++", "dpm++", dpm_steps)):
        t0, c0 = time.perf_counter(), time.process_time()
        zs = [sample(fn, shape, diffusion, sampler, steps, generator=torch.Generator().manual_seed(i))
              for i in range(num_videos)]
        res[f"{name}_steps"] = steps
        res[f"{name}_sec_per_video"] = (time.perf_counter() - t0) / num_videos
        res[f"{name}_cpu_sec_per_video"] = (time.process_time() - c0) / num_videos
        outs[name] = torch.cat(zs)
    a, b = outs["ddim"], outs["dpm++"]
    res["network_rmse_ddim_vs_dpm"] = float((a - b).pow(2).mean().sqrt())
    res["network_rel_diff"] = float((a - b).norm() / a.norm())
    # The Gaussian oracle: distances to the exact ODE solution.
    mu, s = 0.5, 1.0  # latents are scaled to about unit variance
    eps_fn, exact = gaussian_oracle(diffusion, mu, s)
    noise = torch.randn((64, 1, 4, 8, 8), generator=torch.Generator().manual_seed(123))
    truth = exact(noise)
    for name, sampler, steps in (("ddim", "ddim", ddim_steps), ("dpm++", "dpm++", dpm_steps)):
        z = sample(eps_fn, noise.shape, diffusion, sampler, steps, noise=noise)
        res[f"oracle_rmse_{name}_vs_exact"] = float((z - truth).pow(2).mean().sqrt())
    z_ddim = sample(eps_fn, noise.shape, diffusion, "ddim", ddim_steps, noise=noise)
    z_dpm = sample(eps_fn, noise.shape, diffusion, "dpm++", dpm_steps, noise=noise)
    res["oracle_rmse_ddim_vs_dpm"] = float((z_ddim - z_dpm).pow(2).mean().sqrt())
    res["oracle_data_std"] = s
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shape only, few steps")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(train_worker(*json.loads(args.worker))))
        return 0
    shapes = ["tiny"] if args.quick else ["tiny", "paper"]
    train_rows = []
    for shape in shapes:
        steps, warmup = (10, 2) if shape == "tiny" else (3, 1)
        for name in ("stdit-s", "medsora-s"):
            train_rows.append(run_child(name, shape, 3 if args.quick else steps, 1 if args.quick else warmup))
    samp = sampling_bench(1 if args.quick else 3, 250, 20)

    print("\nTraining (CPU, 2 threads; forward + hybrid loss + backward + AdamW). CPU s = seconds of CPU time")
    print("(all threads of the process): unlike wall time it does not grow with other load on the machine.")
    print(f"{'model':<11}{'shape':<7}{'params M':>9}{'batch':>6}{'s/step':>9}{'CPU s/step':>11}{'steps/s':>9}"
          f"{'peak RSS MB':>12}{'vs stdit':>9}")
    for r in train_rows:
        base = next(x for x in train_rows if x["shape"] == r["shape"] and x["model"] == "stdit-s")
        r["steps_per_s_vs_stdit"] = r["steps_per_s"] / base["steps_per_s"]
        print(f"{r['model']:<11}{r['shape']:<7}{r['params_M']:>9.2f}{r['batch']:>6}{r['sec_per_step']:>9.3f}"
              f"{r['cpu_sec_per_step']:>11.3f}{r['steps_per_s']:>9.3f}{r['peak_rss_MB']:>12.0f}"
              f"{r['steps_per_s_vs_stdit']:>9.2f}")
    speedup = samp["ddim_sec_per_video"] / samp["dpm++_sec_per_video"]
    samp["dpm_speedup_vs_ddim"] = speedup
    print(f"\nSampling one video, tiny medsora-s, latent {samp['latent']} (baseline DDIM-250)")
    print(f"{'sampler':<16}{'s/video':>9}{'CPU s/video':>12}{'vs DDIM':>9}{'oracle RMSE to exact':>22}")
    print(f"{'DDIM-250':<16}{samp['ddim_sec_per_video']:>9.3f}{samp['ddim_cpu_sec_per_video']:>12.3f}{1.0:>9.2f}"
          f"{samp['oracle_rmse_ddim_vs_exact']:>22.2e}")
    print(f"{'DPM-Solver++-20':<16}{samp['dpm++_sec_per_video']:>9.3f}{samp['dpm++_cpu_sec_per_video']:>12.3f}"
          f"{1 / speedup:>9.2f}{samp['oracle_rmse_dpm++_vs_exact']:>22.2e}")
    print(f"DDIM-250 vs DPM++-20 from the same noise: random network RMSE {samp['network_rmse_ddim_vs_dpm']:.3e} "
          f"(relative {samp['network_rel_diff']:.3f}); Gaussian oracle RMSE {samp['oracle_rmse_ddim_vs_dpm']:.2e} "
          f"(data std {samp['oracle_data_std']})")
    out = ROOT / "benchmarks" / "results" / "train_sample.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"(machine load average during the run: {load[0]:.1f} on {os.cpu_count()} cores; timings scale with it)")
    out.write_text(json.dumps({"train": train_rows, "sample": samp, "quick": args.quick, "torch": torch.__version__,
                               "load_average": load, "cpu_count": os.cpu_count()}, indent=1))
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
