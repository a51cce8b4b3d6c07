"""Optical-flow alignment: training-step cost and loss curves on the embedded echocardiogram.

Tiny MedSora (depth 2, width 64) on latents of a tiny random CogVideoX VAE (64 px -> 8x8x4 latents),
clips of 16 frames (+1 flow frame, 4 video latents) + 2 joint-training images, batch 2.
Modes, same seed and the same batches:
  * none       : diffusion loss only (baseline),
  * cache      : + alignment with targets read from a `medvid flow-features` cache,
  * on-the-fly : + alignment with DIS flow -> Eq. 13 RGB -> EfficientNet-Lite0 inside the step.
Step time counts the step's compute (targets, forward, backward, optimiser); batches are preloaded
so file I/O is excluded for every mode. Loss curves: the diffusion loss (mse + vb) of `none` and
`cache` over the same steps, the alignment term, and r = 1 - Pearson between block features and
the cached flow features (unweighted, measured in both runs) to show whether alignment moves it.
Note: with g(t) = 1/(t+1) and margin 0.01 the hinged term is zero unless a batch draws a small t
(E[g] over uniform t in [0, 999] is ~0.0075), so the term acts on few steps: "min t" shows when.

    python benchmarks/align.py [--steps 40] [--timing-steps 8]
Writes benchmarks/results/align.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def build_data(work: Path, resolution: int):
    import pydicom.data

    from medvid.data.prepare import prepare
    from medvid.flow.cache import compute_flow_features
    from medvid.latents import tiny_vae
    from medvid.latents.encode import encode

    src = work / "videos"
    src.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("examples_ybr_color.dcm"), src / "echo.dcm")
    prepare(src, work / "prepared", val_fraction=0.0, progress=False)
    manifest = work / "prepared" / "manifest.jsonl"
    proto = dict(num_frames=16, frame_stride=1, resolution=resolution, clips_per_video=4)
    t0 = time.perf_counter()
    encode(manifest, tiny_vae(num_blocks=4), work / "latents", num_images=2, splits=("train",), progress=False, **proto)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = compute_flow_features(work / "latents", work / "flow", splits=("train",), progress=False)
    t_cache = time.perf_counter() - t0
    return manifest, proto, {"encode_s": t_enc, "flow_features_s": t_cache, "clips": s["total_clips"],
                             "cache_shapes": s["shapes"]}


def run(mode: str, batches, steps: int, alpha: float, seed: int = 0):
    from medvid.diffusion import GaussianDiffusion
    from medvid.flow.alignment import AlignConfig, AlignmentLoss, build_alignment
    from medvid.models import create_model

    torch.manual_seed(seed)
    model = create_model("medsora-s", depth=2, hidden_size=64, input_size=8, in_channels=4, d_state=16, headdim=32)
    diffusion = GaussianDiffusion()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    aligner = None if mode == "none" else build_alignment(AlignConfig(enabled=True, alpha=alpha), model)
    gen = torch.Generator().manual_seed(seed)
    probe = AlignmentLoss(alpha=1.0, margin=0.0)
    times, curve = [], []
    for step in range(steps):
        b = batches[step % len(batches)]
        batch = {"flow_features": b["flow_features"]} if mode == "cache" else {"video": b["video"]}
        x0 = b["latents"]
        t = diffusion.sample_timesteps(x0.shape[0], gen)
        noise = torch.randn(x0.shape, generator=gen)
        t0, c0 = time.perf_counter(), time.process_time()
        x_t = diffusion.q_sample(x0, t, noise)
        out, feats = model(x_t, t, num_images=b["num_images"], return_features=True)
        la = torch.zeros(()) if aligner is None else aligner(feats, batch, t, b["num_images"])
        terms = diffusion.training_losses(out, x0, x_t, t, noise)
        loss = terms["loss"].mean() + la
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append((time.perf_counter() - t0, time.process_time() - c0))
        with torch.no_grad():  # unweighted 1 - Pearson to the cached targets, measured in every mode
            r = probe.residuals([f.detach() for f in feats], b["flow_features"], torch.zeros_like(t), b["num_images"])
        curve.append({"step": step + 1, "diffusion": float(terms["loss"].mean().detach()), "align": float(la.detach()),
                      "r": float(r.mean()), "min_t": int(t.min())})
    warm = times[2:] if len(times) > 4 else times
    wall, cpu = (sum(w[i] for w in warm) / len(warm) for i in (0, 1))
    return {"wall": wall, "cpu": cpu}, curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="steps of the loss-curve runs")
    ap.add_argument("--timing-steps", type=int, default=8, help="steps of the on-the-fly timing run")
    ap.add_argument("--alpha", type=float, default=0.1, help="alignment weight (paper 0.01, reference 0.1)")
    ap.add_argument("--resolution", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from medvid.data.datasets import ClipDataset, LatentDataset

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest, proto, prep = build_data(work, args.resolution)
        lat = LatentDataset(work / "latents", split="train", flow_features_dir=work / "flow")
        clips = ClipDataset(str(manifest), split=None, extra_flow_frame=True, num_images=0, **proto)
        items = [lat[i] for i in range(len(lat))]
        batches = []
        for i in range(0, len(items) - 1, 2):
            pair = items[i : i + 2]
            batches.append({
                "latents": torch.stack([p["latents"] for p in pair]),
                "num_images": pair[0]["num_images"],
                "flow_features": [torch.stack([p["flow_features"][k] for p in pair]) for k in range(len(pair[0]["flow_features"]))],
                "video": torch.stack([clips.get_clip(p["clip_id"])["video"] for p in pair]),
            })
        t_none, curve_none = run("none", batches, args.steps, args.alpha)
        t_cache, curve_cache = run("cache", batches, args.steps, args.alpha)
        t_fly, _ = run("on-the-fly", batches, args.timing_steps, args.alpha)
    rows = [("none", t_none), ("cache", t_cache), ("on-the-fly", t_fly)]
    print(f"\nstep time, tiny MedSora (depth 2, width 64), batch 2 x (4 video + 2 image latents 8x8x4), "
          f"{args.resolution}px 17-frame clips, 2 CPU threads; CPU seconds of this process (robust on a shared "
          "machine) and wall seconds")
    print(f"{'mode':<12}{'cpu s':>9}{'vs none':>9}{'wall s':>9}{'vs none':>9}")
    for name, t in rows:
        print(f"{name:<12}{t['cpu']:>9.3f}{t['cpu'] / t_none['cpu']:>8.2f}x{t['wall']:>9.3f}{t['wall'] / t_none['wall']:>8.2f}x")
    print("\nloss curves (same seed, same batches): diffusion loss and r = 1 - Pearson(block features, flow "
          "features) without / with alignment (cache); align = the weighted, hinged term")
    print(f"{'step':>6}{'diff none':>11}{'diff align':>11}{'r none':>9}{'r align':>9}{'align':>9}{'min t':>7}")
    for a, b in zip(curve_none, curve_cache):
        if a["step"] % max(1, args.steps // 10) == 0 or a["step"] == 1:
            print(f"{a['step']:>6}{a['diffusion']:>11.4f}{b['diffusion']:>11.4f}{a['r']:>9.4f}{b['r']:>9.4f}"
                  f"{b['align']:>9.4f}{b['min_t']:>7d}")
    k = max(1, args.steps // 4)
    tail = lambda c, key: sum(r[key] for r in c[-k:]) / k  # noqa: E731
    result = {
        "setup": {"model": "medsora-s depth 2 hidden 64 d_state 16 headdim 32", "batch": 2, "alpha": args.alpha,
                  "repnet": "efficientnet-lite0 (ImageNet stand-in for DINO)", "flow": "dis",
                  "resolution": args.resolution, "data": "pydicom examples_ybr_color.dcm, 4 clips", **prep},
        "step_time_s": dict(rows),
        "ratio_vs_none": {n: {k: t[k] / t_none[k] for k in ("cpu", "wall")} for n, t in rows},
        "curves": {"none": curve_none, "aligned_cache": curve_cache},
        "last_quarter_mean": {"diffusion_none": tail(curve_none, "diffusion"),
                              "diffusion_aligned": tail(curve_cache, "diffusion"),
                              "r_none": tail(curve_none, "r"), "r_aligned": tail(curve_cache, "r")},
        "align_active_fraction": sum(r["align"] > 0 for r in curve_cache) / len(curve_cache),
    }
    out = Path(__file__).parent / "results" / "align.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nlast-quarter means: {json.dumps(result['last_quarter_mean'])}; hinge active on "
          f"{result['align_active_fraction']:.0%} of steps\nwrote {out}")


if __name__ == "__main__":
    main()
