"""Seconds per 100 clips for each metric of ``medvid evaluate`` on this CPU, feature caching off vs on.

    python benchmarks/metrics.py [--num-clips 8] [--size 64] [--effnet-resolution 112] [--bootstrap 20]

Both sets hold ``--num-clips`` synthetic 16-frame videos (``--size`` px). Each metric runs three
times: caching off (the baseline), caching on with an empty cache (cold: compute + write) and
again with the filled cache (warm: real and generated features read back). Times are scaled
linearly to 100 clips per set. Both CPU seconds of this process (all its threads; what the
metric costs, little affected by other processes sharing the CPU) and wall seconds are recorded;
ratios are CPU-time ratios relative to the uncached run of the same metric.

Metrics that need weights which are not on this machine (I3D, Inception, VideoMAE, CLIP, DINO)
are timed with tiny random TorchScript stand-ins that have the real call signatures: those rows
measure the pipeline (decoding, batching, statistics, bootstrap), not the real network, and are
marked "stand-in". Writes ``benchmarks/results/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

# One BLAS thread for numpy/scipy: idle OpenBLAS threads spin and would be counted as CPU time.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medvid.metrics.evaluate import evaluate  # noqa: E402
from medvid.utils.video import save_npz  # noqa: E402


class StandInI3D(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        h = x.float() / 127.5 - 1 if rescale else x.float()
        if resize:
            h = F.interpolate(h, size=(x.shape[2], 32, 32), mode="trilinear", align_corners=False)
        return self.fc(torch.tanh(self.conv(h)).mean(dim=(2, 3, 4)))


class StandInInception(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.feat = nn.Linear(16, 2048)
        self.out = nn.Linear(2048, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False):
        h = F.interpolate(img.float() / 127.5 - 1, size=(32, 32), mode="bilinear", align_corners=False)
        f = self.feat(torch.relu(self.conv(h)).mean(dim=(2, 3)))
        if return_features:
            return f
        logits = f @ self.out.weight.t()
        if not no_output_bias:
            logits = logits + self.out.bias
        return torch.softmax(logits, dim=1)


class StandInImageNet(nn.Module):
    """CLIP / DINO stand-in: (N, 3, 224, 224) normalised -> (N, 512)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 7, stride=4)
        self.fc = nn.Linear(16, 512)

    def forward(self, x: torch.Tensor):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def make_sets(root: Path, n: int, size: int) -> tuple[Path, Path]:
    real, fake = root / "real", root / "fake"
    real.mkdir(parents=True)
    fake.mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        for folder, speed in ((real, 0.3), (fake, 0.15)):
            frames = []
            for t in range(16):
                base = np.sin(7 * xx + speed * t + i) * np.cos(5 * yy + 0.3 * i)
                frames.append((np.stack([base, np.roll(base, 3, 0), -base], -1) * 127.5 + 127.5).astype(np.uint8))
            save_npz(np.stack(frames), folder / f"v{i:04d}.npz")
    return real, fake


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-clips", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--effnet-resolution", type=int, default=112)
    ap.add_argument("--bootstrap", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "metrics.json"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="medvid-bench-"))
    try:
        real, fake = make_sets(tmp / "data", args.num_clips, args.size)
        torch.manual_seed(0)
        nets = {}
        for name, mod in (("i3d", StandInI3D()), ("inception", StandInInception()), ("clip", StandInImageNet()),
                          ("dino", StandInImageNet())):
            nets[name] = tmp / f"{name}.pt"
            torch.jit.save(torch.jit.script(mod), str(nets[name]))
        rows = [
            ("fd_effnet_frame", "EfficientNet-Lite0 (real weights)"), ("fd_effnet_clip", "EfficientNet-Lite0 (real weights)"),
            ("dynamic_degree", "DIS flow (OpenCV)"), ("motion_smoothness", "blend interpolator"),
            ("psnr", "-"), ("ssim", "-"),
            ("fvd", "stand-in I3D"), ("fid", "stand-in Inception"), ("is", "stand-in Inception"),
            ("fc", "stand-in CLIP"), ("subject_consistency", "stand-in DINO"), ("background_consistency", "stand-in CLIP"),
        ]
        results = []
        scale = 100.0 / args.num_clips
        for metric, net in rows:
            kw = dict(i3d=nets["i3d"], inception=nets["inception"], clip=nets["clip"], dino=nets["dino"],
                      num_clips=args.num_clips, bootstrap=args.bootstrap, effnet_resolution=args.effnet_resolution,
                      report=False)
            wall, cpu = {}, {}
            cache = tmp / f"cache-{metric}"
            for mode, cdir in (("off", None), ("cold", cache), ("warm", cache)):
                t, c = time.perf_counter(), time.process_time()
                res = evaluate(real, fake, [metric], None, cache_dir=cdir, **kw)
                wall[mode], cpu[mode] = time.perf_counter() - t, time.process_time() - c
            rec = {"metric": metric, "network": net,
                   **{f"cpu_s_per_100_{k}": v * scale for k, v in cpu.items()},
                   **{f"wall_s_per_100_{k}": v * scale for k, v in wall.items()},
                   "warm_vs_off_cpu": cpu["warm"] / cpu["off"], "cold_vs_off_cpu": cpu["cold"] / cpu["off"],
                   "cache_hits_warm": res["cache"]["hits"]}
            results.append(rec)
            print(f"{metric:24s} CPU s/100 clips: off {rec['cpu_s_per_100_off']:7.2f}  cold {rec['cpu_s_per_100_cold']:7.2f}  "
                  f"warm {rec['cpu_s_per_100_warm']:7.2f}  warm/off {rec['warm_vs_off_cpu']:.2f}  ({net})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"seconds per 100 clips ({args.num_clips} real + {args.num_clips} generated 16-frame clips at {args.size}px, "
          f"EfficientNet at {args.effnet_resolution}px, {args.bootstrap} bootstrap resamples, {torch.get_num_threads()} threads)")
    print("CPU seconds (all threads of this process; robust to other processes on the machine) and wall seconds")
    print(f"{'metric':24s} {'network':34s} {'CPU off':>8s} {'cold':>8s} {'warm':>8s} {'warm/off':>9s} {'wall off':>9s} {'wall warm':>9s}")
    for r in results:
        print(f"{r['metric']:24s} {r['network']:34s} {r['cpu_s_per_100_off']:8.2f} {r['cpu_s_per_100_cold']:8.2f} "
              f"{r['cpu_s_per_100_warm']:8.2f} {r['warm_vs_off_cpu']:9.2f} {r['wall_s_per_100_off']:9.2f} {r['wall_s_per_100_warm']:9.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "machine": {"python": platform.python_version(),
                               "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
                               "cpu_count": os.cpu_count(), "loadavg_before": load_before,
                               "loadavg_after": os.getloadavg()},
                               "results": results}, indent=1))
    print(f"load average before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(other processes share this CPU: absolute times scale with it, the ratios less so)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
