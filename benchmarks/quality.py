"""Quality at equal wall-clock budget: the paper's comparisons on the embedded echocardiogram.

The demo's data (train heartbeats / held-out heartbeats of one real echocardiogram), VAE, latents and
flow features are made once; then every arm trains for the same number of seconds (steps sized by a
timed probe, as the demo does), samples 8 videos and is scored against 8 held-out real clips:

  * medsora + align (v)   : the demo's recipe (v prediction, flow alignment);
  * medsora, align off (v): the same without the alignment term;
  * stdit (v)             : the spatio-temporal attention baseline at the same width and depth (no alignment);
  * medsora + align (eps) : the paper's epsilon prediction, sampled with and without the x_0 clamp;
  * samplers              : DDIM-50, DDPM-50 (learned variance), DPM-Solver++-20 and DDIM-50 without
                            the clamp, from the same checkpoints of the first arm;
  * VAE                   : the held-out clips through the frequency-compensated VAE and through its base.

Reference rows in the same run: training clips (upper reference), training clips + noise sigma 0.3
(trivial baseline), the VAE round trips. Metrics: fd_effnet_clip and fd_effnet_frame with their
bootstrap intervals (per seed), and the motion statistic (mean grey-level step between frames). Across
seeds the table shows the mean and a 95 % t-interval of the seed means. The arms are not tuned: what
the table shows is the result.

    python benchmarks/quality.py                       # 3 seeds, 150 s per arm: ~50 min on 2 idle cores
    python benchmarks/quality.py --seeds 1 --seconds 30 --quick   # the script's own smoke test
    python benchmarks/quality.py --curve 300,600,1200   # then: the first arm trained on, scored at each budget
Writes benchmarks/results/quality.json and quality.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
METRICS = ["fd_effnet_clip", "fd_effnet_frame", "motion"]
ARMS = {
    # name: (model, alignment, prediction, [(sampler label, sampler, steps, clip)])
    "medsora + align (v)": ("medsora-s", True, "v", [
        ("DDIM-50", "ddim", 50, "auto"), ("DDPM-50", "ddpm", 50, "auto"), ("DPM++-20", "dpm++", 20, "auto"),
        ("DDIM-50, no clamp", "ddim", 50, "none")]),
    "medsora, align off (v)": ("medsora-s", False, "v", [("DDIM-50", "ddim", 50, "auto")]),
    "stdit (v)": ("stdit-s", False, "v", [("DDIM-50", "ddim", 50, "auto")]),
    "medsora + align (eps)": ("medsora-s", True, "eps", [
        ("DDIM-50, no clamp", "ddim", 50, "none"), ("DDIM-50", "ddim", 50, "auto"), ("DDPM-50", "ddpm", 50, "auto")]),
}


def shared_stages(cfg, work: Path) -> dict:
    """Data, VAE (base + compensation), latents and flow features, as the demo makes them (resumable)."""
    from medvid.demo.pipeline import stage_data, stage_encode, stage_flow, stage_vae
    from medvid.demo.stages import StageRunner

    runner = StageRunner(work, log=print)
    data = runner.run("data", lambda: stage_data(cfg, work), "data")
    vae = runner.run("vae", lambda: stage_vae(cfg, work, data["prepared"]), "vae")
    enc = runner.run("encode", lambda: stage_encode(cfg, work, data["prepared"], vae["vae_folder"]), "encode")
    flow = runner.run("flow", lambda: stage_flow(cfg, work, enc["latent_dir"]), "flow")
    return {"prepared": data["prepared"], "vae": vae, "latent_dir": enc["latent_dir"], "features_dir": flow["features_dir"]}


def arm_config(cfg, shared: dict, model: str, align: bool, prediction: str, seed: int, steps: int):
    from dataclasses import replace

    from medvid.demo.pipeline import train_config

    tc = train_config(replace(cfg, seed=seed, prediction=prediction), shared["latent_dir"],
                      shared["features_dir"] if align else None, steps)
    if model != "medsora-s":
        tc.model.name = model
        tc.model.overrides = {k: v for k, v in tc.model.overrides.items() if k != "d_state"}
    return tc


def arm_dir(work: Path, arm_name: str, seed: int) -> Path:
    """The run folder of one arm and seed (the arm's name without spaces and punctuation)."""
    return work / "runs" / arm_name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "") / f"seed{seed}"


def train_arm(cfg, shared: dict, run: Path, arm: tuple, seed: int, seconds: float) -> dict:
    """Train one arm for ``seconds`` (steps from a timed 5-step probe); resumable."""
    from medvid.training.trainer import train

    model, align, prediction, _ = arm
    done = run / "trained.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    train(arm_config(cfg, shared, model, align, prediction, seed, 5), run, resume="auto")
    per_step = (time.perf_counter() - t0) / 5
    steps = max(5, int(seconds / per_step))
    t1 = time.perf_counter()
    train(arm_config(cfg, shared, model, align, prediction, seed, steps), run, resume="auto")
    info = {"steps": steps, "seconds_per_step_probe": round(per_step, 4),
            "train_seconds": round(5 * per_step + time.perf_counter() - t1, 1)}
    done.write_text(json.dumps(info))
    return info


def score(real: Path, fake: Path, cfg, cache: Path) -> dict:
    from medvid.metrics.evaluate import evaluate

    res = evaluate(real, fake, METRICS, None, report=False, num_clips=cfg.real_clips, clip_length=cfg.num_frames,
                   bootstrap=200, seed=0, cache_dir=cache, effnet_resolution=224)
    out = {}
    for name, m in res["metrics"].items():
        out[name] = m["value"]
        if m.get("ci"):
            out[name + "_ci"] = m["ci"]
    out["real_motion"] = res["metrics"]["motion"]["real"]["value"]
    return out


def seed_stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return {"mean": float(v.mean()), "ci": None, "n": len(v)}
    half = T95.get(len(v) - 1, 1.96) * v.std(ddof=1) / math.sqrt(len(v))
    return {"mean": float(v.mean()), "ci": [float(v.mean() - half), float(v.mean() + half)], "n": len(v)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=150.0, help="training seconds per arm and seed")
    ap.add_argument("--minutes", type=float, default=12.0, help="the demo budget that sizes the shared VAE")
    ap.add_argument("--work", default="benchmarks/results/quality_work", help="resumable working folder")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--curve", default="", help="training seconds (cumulative, comma-separated) at which a copy of the "
                                                "first arm's seed-0 run is trained on and scored: what more minutes buy")
    args = ap.parse_args(argv)

    import torch

    from medvid.demo.pipeline import DemoConfig, _real_clips
    from medvid.metrics.real_clips import vae_round_trip
    from medvid.sampling.generate import sample_videos

    torch.set_num_threads(args.threads)
    cfg = DemoConfig(minutes=args.minutes)
    if args.quick:
        cfg = DemoConfig(minutes=0.3, resolution=32, clips_per_video=2, vae_channels=8, model_depth=2, model_width=48,
                         batch_size=2, sample_num=2, sample_steps=2, real_clips=2, min_vae_steps=1, min_fc_steps=1,
                         min_train_steps=2, fixed_seconds=0)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    shared = shared_stages(cfg, work)
    ev = work / "eval"
    real = _real_clips(cfg, shared["prepared"], "val", ev / "real_heldout", cfg.real_clips)
    refs = {
        "training clips (upper reference)": _real_clips(cfg, shared["prepared"], "train", ev / "ref_train", cfg.real_clips),
        "training clips + noise 0.3 (baseline)": _real_clips(cfg, shared["prepared"], "train", ev / "ref_noisy",
                                                             cfg.real_clips, noise=0.3),
        "held-out through the compensated VAE": vae_round_trip(real, shared["vae"]["vae_folder"], ev / "rt_fc"),
        "held-out through the base VAE": vae_round_trip(real, shared["vae"]["base_folder"], ev / "rt_base"),
    }
    cache = work / "feature_cache"
    rows: dict[str, dict] = {name: {"seeds": {0: score(real, d, cfg, cache)}} for name, d in refs.items()}
    steps = {"ddim": 2, "ddpm": 2, "dpm++": 2} if args.quick else None
    for seed in range(args.seeds):  # seed-major: a change of machine load spreads over the arms
        for arm_name, arm in ARMS.items():
            run = arm_dir(work, arm_name, seed)
            info = train_arm(cfg, shared, run, arm, seed, args.seconds)
            for label, sampler, n, clip in arm[3]:
                row = rows.setdefault(f"{arm_name}: {label}", {"seeds": {}, "train": {}})
                sdir = run / "samples" / f"{sampler}{n}_{clip}"
                if not (sdir / "samples.json").is_file():
                    sample_videos(run, cfg.sample_num, sdir, seed=100 + seed, sampler=sampler,
                                  steps=steps[sampler] if steps else n, batch_size=4, device="cpu", fps=10.0,
                                  clip_denoised=clip)
                row["seeds"][seed] = score(real, sdir, cfg, cache)
                row["train"][seed] = info
                print(f"{arm_name}: {label} seed {seed}: " + ", ".join(
                    f"{k}={v:.2f}" for k, v in row["seeds"][seed].items() if not k.endswith("_ci")), flush=True)
    curve = []
    if args.curve:
        import shutil

        from medvid.training.trainer import train

        arm_name, arm = next(iter(ARMS.items()))
        src = arm_dir(work, arm_name, 0)
        run = work / "curve"
        if not run.exists():
            shutil.copytree(src, run, ignore=shutil.ignore_patterns("samples", "tb"))
        info = json.loads((src / "trained.json").read_text())
        per_step = info["train_seconds"] / info["steps"]  # the arm's own pace, so the curve's budgets are comparable
        point = {"seconds": args.seconds, "steps": info["steps"], **rows[f"{arm_name}: DDIM-50"]["seeds"][0]}
        curve.append(point)
        for budget in [float(b) for b in args.curve.split(",") if b]:
            steps = int(budget / per_step)
            t0 = time.perf_counter()
            train(arm_config(cfg, shared, arm[0], arm[1], arm[2], 0, steps), run, resume="auto")
            sdir = run / "samples" / f"step{steps}"
            if not (sdir / "samples.json").is_file():
                sample_videos(run, cfg.sample_num, sdir, seed=100, sampler="ddim", steps=50, batch_size=4,
                              device="cpu", fps=10.0)
            point = {"seconds": budget, "steps": steps, "wall_seconds_now": round(time.perf_counter() - t0, 1),
                     **score(real, sdir, cfg, cache)}
            curve.append(point)
            print(f"curve: {budget:.0f} s ({steps} steps): fd_effnet_clip={point['fd_effnet_clip']:.1f} "
                  f"motion={point['motion']:.2f}", flush=True)
    for row in rows.values():
        row["summary"] = {m: seed_stats([s[m] for s in row["seeds"].values()]) for m in METRICS}
    real_motion = float(np.mean([s["real_motion"] for r in rows.values() for s in r["seeds"].values()]))
    result = {"settings": {"seeds": args.seeds, "seconds_per_arm": args.seconds, "demo_minutes": args.minutes,
                           "quick": args.quick, "threads": args.threads, "real_clips": cfg.real_clips,
                           "vae": {k: shared["vae"][k] for k in ("base_steps", "fc_steps")}},
              "real_heldout_motion": real_motion, "rows": rows, "curve": curve,
              "total_seconds": round(time.perf_counter() - t_start, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(result, indent=1, default=str))
    lines = [f"seeds {args.seeds}, {args.seconds:.0f} s of training per arm and seed; real held-out motion "
             f"{real_motion:.2f}", "",
             "| row | fd_effnet_clip | fd_effnet_frame | motion | motion / real | steps |", "| --- | --- | --- | --- | --- | --- |"]

    def cell(st):
        return f"{st['mean']:.1f}" + (f" [{st['ci'][0]:.1f}, {st['ci'][1]:.1f}]" if st["ci"] else "")

    for name, row in rows.items():
        s = row["summary"]
        st = row.get("train") or {}
        steps_s = "/".join(str(v["steps"]) for v in st.values()) if st else "–"
        lines.append(f"| {name} | {cell(s['fd_effnet_clip'])} | {cell(s['fd_effnet_frame'])} | "
                     f"{s['motion']['mean']:.2f} | {s['motion']['mean'] / real_motion:.2f} | {steps_s} |")
    if curve:
        lines += ["", "Quality against training time (first arm, seed 0, DDIM-50):", "",
                  "| training seconds | steps | fd_effnet_clip | motion |", "| --- | --- | --- | --- |"]
        lines += [f"| {p['seconds']:.0f} | {p['steps']} | {p['fd_effnet_clip']:.1f} | {p['motion']:.2f} |" for p in curve]
    table = "\n".join(lines)
    (out / "quality.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
