"""Backbone benchmark: MedSora vs the STDiT baseline on the CPU, and the Mamba2 mixer vs references.

Part 1, per model and latent shape (pixel clip -> latent: 4x temporal, 8x spatial compression):
parameters, forward+backward FLOPs (torch.utils.flop_counter: matmuls, convs, attention; not
elementwise ops), CPU time of one training step (forward, MSE, backward, AdamW; median of >= 5
after warm-up), achieved FLOP/s, peak memory (RSS growth of a fresh process during the steps),
and ratios against stdit of the same size in the same run.

Part 2: FLOPs per token as tokens per frame and frames grow (meta device, no compute): where the
two families cross.

Part 3: the Mamba2 mixer (d_model 512, d_state 128, headdim 64, chunk 256), forward, batch 1, at
several lengths: ours vs the same mixer with the sequential recurrence (``ssd_scan_ref``) vs
transformers' Mamba2Mixer PyTorch path with the same weights; and the SSD scan alone (ours vs
``ssd_scan_ref`` vs transformers' ``mamba2_chunk_scan`` fallback). Max |difference| is reported.

    python benchmarks/backbone.py            # --quick (default): a few minutes
    python benchmarks/backbone.py --full     # all shapes, medsora-s/b and stdit-s/b

Writes benchmarks/results/backbone.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {"quick": [(16, 128), (16, 256), (32, 256)], "full": [(16, 128), (16, 256), (32, 256), (16, 512)]}
MODELS = {"quick": ["medsora-s", "stdit-s"], "full": ["medsora-s", "medsora-b", "stdit-s", "stdit-b"]}
LENGTHS = {"quick": [48, 256, 1024, 4096], "full": [48, 128, 256, 512, 1024, 2048, 4096]}
# The training step's host settings, as medvid's trainer has them unless a flag asks for the defaults.
HOST = {"system_malloc": False, "optimizer_loop": False}


def configure_host(system_malloc: bool = False, optimizer_loop: bool = False, eager_conv: bool = False) -> dict:
    """Set this process up as ``medvid train`` on a CPU does (malloc keeps freed memory, fused AdamW, medvid's
    CPU convolution kernel), or with glibc's, torch.optim's and eager PyTorch's defaults; returns what is in
    effect. The kernel is built (or loaded) here, before anything is timed."""
    import medvid.models.kernels as kernels
    from medvid.utils.host import reuse_freed_memory

    HOST.update(system_malloc=system_malloc, optimizer_loop=optimizer_loop)
    reused = False if system_malloc else reuse_freed_memory()
    if eager_conv:  # also for the model packages of other revisions that --against imports
        os.environ["MEDVID_CPU_KERNELS"] = "0"
        kernels._CPU = None
    kernel = not eager_conv and kernels.cpu_ops() is not None
    return dict(malloc="keeps freed memory" if reused else "system default",
                optimizer="AdamW per-tensor loop" if optimizer_loop else "AdamW fused",
                conv="medvid CPU kernel" if kernel else "eager PyTorch")


def make_optimizer(model):
    """AdamW as the trainer builds it: the fused kernel (``HOST['optimizer_loop']``: the per-tensor loop)."""
    from medvid.utils.host import fused_optimizer_ok

    fused = not HOST["optimizer_loop"] and fused_optimizer_ok(model)
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=fused)


def latent_shape(frames: int, res: int) -> tuple[int, int]:
    return frames // 4, res // 8


def _build(name, frames, res, batch):
    from medvid.models import create_model

    torch.manual_seed(0)
    f, h = latent_shape(frames, res)
    model = create_model(name, input_size=h, attn_dropout=0.0)
    opt = make_optimizer(model)
    x = torch.randn(batch, f, model.in_channels, h, h)
    t = torch.randint(0, 1000, (batch,))
    target = torch.randn(batch, f, model.out_channels, h, h)

    def step():
        loss = torch.mean((model(x, t) - target) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, step, (x, t, target)


def _flops_and_memory(model, x, t, target) -> tuple[int, float]:
    """Forward+backward FLOPs, and an estimate of peak training memory in MB: weights, gradients and
    AdamW's two moments (4 x trainable floats) plus every tensor autograd saves for the backward pass
    (counted once per storage). Deterministic, unlike RSS on a shared machine."""
    from torch.utils.flop_counter import FlopCounterMode

    storages = {}

    def pack(tensor):
        st = tensor.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return tensor

    with FlopCounterMode(display=False) as fc:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            loss = torch.mean((model(x, t) - target) ** 2)
        loss.backward()
    model.zero_grad(set_to_none=True)
    state = sum(p.numel() * p.element_size() for p in model.parameters())
    train = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad) * 3
    return fc.get_total_flops(), (state + train + sum(storages.values())) / 2**20


def measure_pair(names, frames, res, batch, reps) -> list[dict]:
    """Models of one shape, timed in alternation (step A, step B, step A, ...) so that load changes on a
    shared machine hit all of them alike; the median of ``reps`` steps each after one warm-up."""
    built = [_build(n, frames, res, batch) for n in names]
    info = [_flops_and_memory(m, *data) for m, _, data in built]
    for _, step, _ in built:
        step()  # warm-up
    times = [[] for _ in names]
    for _ in range(reps):
        for i, (_, step, _) in enumerate(built):
            t0 = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - t0)
    rows = []
    for name, (model, _, (x, _, _)), (flops, mem), ts in zip(names, built, info, times):
        sec = statistics.median(ts)
        b, f, c, h, w = x.shape
        tokens = b * f * (h // model.patch_size) * (w // model.patch_size)
        rows.append(dict(model=name, frames=frames, resolution=res, latent=[b, f, c, h, w], tokens=tokens,
                         params=sum(p.numel() for p in model.parameters()), flops=flops, step_s=sec,
                         step_times=ts, gflops_per_s=flops / sec / 1e9, us_per_token=sec / tokens * 1e6,
                         flops_per_token=flops / tokens, peak_mem_mb=mem))
    return rows


def flops_scan(size: str) -> list[dict]:
    """Forward+backward FLOPs per token of medsora vs stdit as tokens per frame and frames grow.

    Counted on the meta device (shapes only, nothing is computed), so large shapes cost nothing."""
    from torch.utils.flop_counter import FlopCounterMode

    from medvid.models import create_model

    rows = []
    grid = [(4, h) for h in (16, 32, 64, 96, 128)] + [(f, 32) for f in (8, 16, 32)]
    for f, h in grid:
        per_token = {}
        for fam in ("medsora", "stdit"):
            with torch.device("meta"):
                m = create_model(f"{fam}-{size}", input_size=h, attn_dropout=0.0)
                x, t = torch.randn(1, f, m.in_channels, h, h), torch.zeros(1)
                with FlopCounterMode(display=False) as fc:
                    m(x, t).sum().backward()
            per_token[fam] = fc.get_total_flops() / (f * (h // m.patch_size) ** 2)
        rows.append(dict(size=size, latent_frames=f, latent_hw=h, tokens_per_frame=(h // 2) ** 2,
                         medsora_mflop_per_token=per_token["medsora"] / 1e6,
                         stdit_mflop_per_token=per_token["stdit"] / 1e6,
                         ratio=per_token["medsora"] / per_token["stdit"]))
        r = rows[-1]
        print(f"  {f:3d} frames x {h:3d}^2 latent ({r['tokens_per_frame']:5d} tokens/frame): medsora "
              f"{r['medsora_mflop_per_token']:6.1f}  stdit {r['stdit_mflop_per_token']:6.1f} MFLOP/token  "
              f"ratio {r['ratio']:.2f}", flush=True)
    return rows


def mixer_bench(lengths, reps, threads) -> list[dict]:
    """Forward time of the whole mixer and of the SSD scan alone: ours, sequential, transformers."""
    import medvid.models.mamba2 as mm
    from medvid.models import Mamba2

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = Mamba2(512, d_state=128, headdim=64, chunk_size=256)
    hf = hf_scan = None
    try:
        from transformers import Mamba2Config
        from transformers.models.mamba2 import modeling_mamba2 as hm

        cfg = Mamba2Config(hidden_size=512, state_size=128, expand=2, head_dim=64, num_heads=16, n_groups=1,
                           chunk_size=256, layer_norm_epsilon=1e-5, use_bias=False, use_conv_bias=True,
                           num_hidden_layers=1)
        hf = hm.Mamba2Mixer(cfg, layer_idx=0)
        hf.load_state_dict(m.state_dict())
        hf_scan = hm.mamba2_chunk_scan  # its PyTorch fallback on a CPU without mamba_ssm
    except ImportError:
        pass

    def timed(fn, n):
        fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    def sequential(x, dt, A, B, C, chunk_size, **kw):
        return mm.ssd_scan_ref(x, dt, A, B, C, kw.get("D"), kw.get("initial_states"),
                               kw.get("return_final_states", False))

    rows = []
    chunked = mm.ssd_chunk_scan
    with torch.no_grad():
        for L in lengths:
            u = torch.randn(1, L, 512)
            y = m(u)
            row = dict(length=L, mixer_ours_s=timed(lambda: m(u), reps))
            # the same mixer with the recurrence as its scan (ONE_CHUNK_MAX 0: no one-chunk shortcut either)
            mm.ssd_chunk_scan, block = sequential, mm.ONE_CHUNK_MAX
            mm.ONE_CHUNK_MAX = 0
            try:
                row["mixer_recurrence_s"] = timed(lambda: m(u), max(1, reps // 2))
                row["mixer_recurrence_maxdiff"] = (m(u) - y).abs().max().item()
            finally:
                mm.ssd_chunk_scan, mm.ONE_CHUNK_MAX = chunked, block
            # the scan alone, on the mixer's own inputs
            g = torch.Generator().manual_seed(L)
            x = torch.randn(1, L, 16, 64, generator=g)
            dt = torch.nn.functional.softplus(torch.randn(1, L, 16, generator=g) - 4)
            A = -torch.exp(m.A_log)
            B, C = (torch.randn(1, L, 1, 128, generator=g) for _ in range(2))
            ys = chunked(x, dt, A, B, C, 256, D=m.D)
            row["scan_ours_s"] = timed(lambda: chunked(x, dt, A, B, C, 256, D=m.D), reps)
            row["scan_recurrence_s"] = timed(lambda: mm.ssd_scan_ref(x, dt, A, B, C, m.D), max(1, reps // 2))
            if hf is not None:
                row["mixer_transformers_s"] = timed(lambda: hf(u), reps)
                row["mixer_transformers_maxdiff"] = (hf(u) - y).abs().max().item()
                row["scan_transformers_s"] = timed(lambda: hf_scan(x, dt, A, B, C, 256, D=m.D), reps)
                row["scan_transformers_maxdiff"] = (hf_scan(x, dt, A, B, C, 256, D=m.D) - ys).abs().max().item()
            rows.append(row)
    print(f"{'L':>5s} | {'mixer: ours':>11s} {'recurrence':>10s} {'transformers':>12s} {'x tf':>5s} | "
          f"{'scan: ours':>10s} {'recurrence':>10s} {'transformers':>12s} {'x tf':>6s} {'x rec':>6s} | max|diff| tf")
    for r in rows:
        tf = r.get("mixer_transformers_s", float("nan"))
        stf = r.get("scan_transformers_s", float("nan"))
        print(f"{r['length']:5d} | {r['mixer_ours_s'] * 1e3:9.1f}ms {r['mixer_recurrence_s'] * 1e3:8.1f}ms "
              f"{tf * 1e3:10.1f}ms {tf / r['mixer_ours_s']:5.2f} | {r['scan_ours_s'] * 1e3:8.1f}ms "
              f"{r['scan_recurrence_s'] * 1e3:8.1f}ms {stf * 1e3:10.1f}ms {stf / r['scan_ours_s']:6.2f} "
              f"{r['scan_recurrence_s'] / r['scan_ours_s']:6.1f} | "
              f"{r.get('mixer_transformers_maxdiff', float('nan')):.1e} / {r.get('scan_transformers_maxdiff', float('nan')):.1e}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="medsora-s vs stdit-s, three shapes (default)")
    g.add_argument("--full", action="store_true", help="all shapes, -s and -b models, more lengths")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5, help="timed training steps per point (median)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--skip-mixer", action="store_true")
    ap.add_argument("--mixer-only", action="store_true", help="only part 3 (the Mamba2 mixer against references)")
    ap.add_argument("--system-malloc", action="store_true",
                    help="glibc's default malloc (large tensors page-faulted anew each step) instead of the trainer's")
    ap.add_argument("--optimizer-loop", action="store_true",
                    help="torch.optim's per-tensor AdamW loop instead of the trainer's fused kernel")
    ap.add_argument("--eager-conv", action="store_true",
                    help="MedSora's convolution + SiLU and gated norm in eager PyTorch instead of medvid's CPU kernels")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "backbone.json"))
    args = ap.parse_args(argv)
    mode = "full" if args.full else "quick"

    host = configure_host(args.system_malloc, args.optimizer_loop, args.eager_conv)
    print(f"backbones ({mode}, batch {args.batch}, {args.threads} threads, median of {args.reps} steps; "
          f"malloc: {host['malloc']}, {host['optimizer']}, convolution: {host['conv']})", flush=True)
    torch.set_num_threads(args.threads)
    rows = []
    for frames, res in ([] if args.mixer_only else SHAPES[mode]):
        for r in measure_pair(MODELS[mode], frames, res, args.batch, args.reps):
            rows.append(r)
            print(f"  {r['model']:10s} {frames}x{res}: {r['step_s']:.3f} s/step, {r['gflops_per_s']:.1f} GFLOP/s",
                  flush=True)
    for r in rows:  # ratios against stdit of the same size and shape
        base = next((b for b in rows if b["model"] == "stdit-" + r["model"].split("-")[1]
                     and (b["frames"], b["resolution"]) == (r["frames"], r["resolution"])), None)
        if base:
            r["time_vs_stdit"] = r["step_s"] / base["step_s"]
            r["flops_vs_stdit"] = r["flops"] / base["flops"]
            r["flops_per_s_vs_stdit"] = r["gflops_per_s"] / base["gflops_per_s"]

    hdr = (f"{'model':10s} {'clip':>7s} {'latent':>10s} {'params':>8s} {'GFLOP':>8s} {'s/step':>7s} {'GFLOP/s':>8s} "
           f"{'us/tok':>7s} {'mem MB':>7s} {'t/stdit':>7s} {'F/stdit':>7s} {'FLOP/s/stdit':>12s}")
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for r in rows:
        lat = f"{r['latent'][1]}x{r['latent'][3]}x{r['latent'][4]}"
        print(f"{r['model']:10s} {r['frames']:>3d}x{r['resolution']:<3d} {lat:>10s} {r['params'] / 1e6:7.2f}M "
              f"{r['flops'] / 1e9:8.1f} {r['step_s']:7.3f} {r['gflops_per_s']:8.1f} {r['us_per_token']:7.1f} "
              f"{r['peak_mem_mb']:7.0f} {r.get('time_vs_stdit', float('nan')):7.2f} "
              f"{r.get('flops_vs_stdit', float('nan')):7.2f} {r.get('flops_per_s_vs_stdit', float('nan')):12.2f}")

    scan = []
    if not args.mixer_only:
        print("\nFLOPs per token (fwd+bwd, counted on the meta device), -s models:", flush=True)
        scan = flops_scan("s")

    mixer = []
    if not args.skip_mixer:
        print("\nMamba2 mixer forward (d_model 512, batch 1):", flush=True)
        mixer = mixer_bench(LENGTHS[mode], args.reps, args.threads)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(mode=mode, batch=args.batch, threads=args.threads, torch=torch.__version__, host=host,
                                   machine=platform.processor() or platform.machine(), backbones=rows, flops_per_token=scan,
                                   mixer=mixer), indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
