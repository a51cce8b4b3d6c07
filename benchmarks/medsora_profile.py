"""Where a MedSora training step spends its time on the CPU: by operator and by module.

For each shape (the three of ``backbone.py --quick``: medsora-s, batch 1; and the demo's: depth 4,
width 96, d_state 16, headdim 48, 4 channels, 4 x 16 x 16 latents, batch 4), one training step
(forward, MSE, backward, AdamW) after warm-up is profiled:

* by operator: ``torch.profiler`` self CPU time per aten op, forward and backward together;
* by module: inclusive forward time (forward pre-hook -> forward hook) and inclusive backward time
  (full backward pre-hook -> full backward hook) of the branches of every block, summed over blocks.

``--against REF [REF ...]`` also times the MedSora step of the models package at each git revision
(a copy of ``medvid/models`` from ``git archive``, imported under another name), today's, and stdit
of the same size, in alternation in one process, so load on a shared machine hits all of them alike;
the ratios, not the seconds, are the result.

    python benchmarks/medsora_profile.py                      # profile all four shapes
    python benchmarks/medsora_profile.py --against main       # + interleaved before/after timing
    python benchmarks/medsora_profile.py --profile-at main    # the profile of another revision

Writes benchmarks/results/medsora_profile.json.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backbone import _flops_and_memory, configure_host, make_optimizer  # noqa: E402  (as backbone.py)

DEMO = dict(depth=4, hidden_size=96, input_size=16, in_channels=4, d_state=16, headdim=48)
DEMO_ST = dict(depth=4, hidden_size=96, input_size=16, in_channels=4, headdim=48)
SHAPES = {  # name -> (medsora overrides, stdit overrides, latent (F, H), batch)
    "16x128": ({}, {}, (4, 16), 1),
    "16x256": ({}, {}, (4, 32), 1),
    "32x256": ({}, {}, (8, 32), 1),
    "demo": (DEMO, DEMO_ST, (4, 16), 4),
}
# Module roles reported (names inside a block; summed over blocks).
# out_proj is not listed: it runs inside the gated norm's function (Mamba2.gate_norm_out), and a hook on it
# would make it a module call again, so it is part of its mixer's time here.
ROLES = ("attn", "spatial_mamba", "spatial_mamba.mixer.in_proj", "spatial_mamba.gated_fusion", "temporal_mamba",
         "temporal_mamba.in_proj", "adaLN_modulation", "norm1", "norm2", "norm3")


def build(models, name, shape, overrides=None):
    """A model of ``models`` (a medvid.models-like package) and its training step at ``shape``."""
    med, st, (f, h), batch = SHAPES[shape]
    over = (med if name.startswith("medsora") else st) if overrides is None else overrides
    torch.manual_seed(0)
    model = models.create_model(name, **({"input_size": h} | over), attn_dropout=0.0)
    opt = make_optimizer(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, f, model.in_channels, h, h, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    target = torch.randn(batch, f, model.out_channels, h, h, generator=g)

    def step():
        loss = torch.mean((model(x, t) - target) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    tokens = batch * f * (h // model.patch_size) ** 2
    step.data = (x, t, target)
    return model, step, tokens


def module_times(model, step) -> dict:
    """Inclusive forward / backward seconds per block role, summed over blocks, for one step."""
    fwd, bwd = defaultdict(float), defaultdict(float)
    starts: dict[str, list[float]] = defaultdict(list)
    handles = []
    for full, mod in model.named_modules():
        parts = full.split(".")
        if len(parts) < 3 or parts[0] != "blocks" or ".".join(parts[2:]) not in ROLES:
            continue
        role = ".".join(parts[2:])

        def pre(m, args, role=role, full=full):
            starts["f" + full].append(time.perf_counter())

        def post(m, args, out, role=role, full=full):
            fwd[role] += time.perf_counter() - starts["f" + full].pop()

        def bpre(m, gout, role=role, full=full):
            starts["b" + full].append(time.perf_counter())

        def bpost(m, gin, gout, role=role, full=full):
            if starts["b" + full]:
                bwd[role] += time.perf_counter() - starts["b" + full].pop()

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post),
                    mod.register_full_backward_pre_hook(bpre), mod.register_full_backward_hook(bpost)]
    t0 = time.perf_counter()
    step()
    total = time.perf_counter() - t0
    for hd in handles:
        hd.remove()
    return dict(step_s=total, forward_s=dict(fwd), backward_s=dict(bwd))


def operator_table(step, top) -> tuple[list[dict], float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    rows = sorted(({"op": e.key, "calls": e.count, "self_s": e.self_cpu_time_total / 1e6} for e in events),
                  key=lambda r: -r["self_s"])
    for r in rows:
        r["share"] = r["self_s"] / total
    return rows[:top], total


def profile_shape(models, shape, top) -> dict:
    model, step, tokens = build(models, "medsora-s", shape)
    step()  # warm-up
    step()
    mods = module_times(model, step)
    ops, total = operator_table(step, top)
    print(f"\n== medsora-s at {shape}: {tokens} tokens, step {mods['step_s']:.3f} s (with hooks), "
          f"profiled self CPU {total:.3f} s")
    print(f"  {'operator':40s} {'calls':>6s} {'self s':>8s} {'share':>6s}")
    for r in ops:
        print(f"  {r['op'][:40]:40s} {r['calls']:6d} {r['self_s']:8.4f} {r['share']:6.1%}")
    print(f"  {'module (all blocks)':40s} {'fwd s':>8s} {'bwd s':>8s} {'share':>6s}")
    for role in ROLES:
        f_, b_ = mods["forward_s"].get(role, 0.0), mods["backward_s"].get(role, 0.0)
        print(f"  {role:40s} {f_:8.4f} {b_:8.4f} {(f_ + b_) / mods['step_s']:6.1%}")
    return dict(shape=shape, tokens=tokens, operators=ops, profiled_self_cpu_s=total, modules=mods)


def load_models_at(ref: str, into: Path):
    """``medvid/models`` as of git revision ``ref``, importable as a separate package."""
    into = into / ref.replace("/", "_").replace("~", "_")
    into.mkdir()
    data = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "medvid/models"], check=True,
                          capture_output=True).stdout
    pkg = into / f"medvid_models_{ref.replace('/', '_').replace('~', '_')}"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into / "x", filter="data")
    (into / "x" / "medvid" / "models").rename(pkg)
    sys.path.insert(0, str(into))
    return importlib.import_module(pkg.name)


def interleaved(refs: dict, shapes, reps) -> list[dict]:
    """Steps of MedSora at each revision in ``refs`` (name -> models package), MedSora now and STDiT, in
    alternation; medians, each against stdit, and the speedup of now over the first revision."""
    import medvid.models as now

    rows = []
    first = next(iter(refs))
    for shape in shapes:
        runs = {f"medsora@{r}": build(pkg, "medsora-s", shape) for r, pkg in refs.items()}
        runs |= {"medsora": build(now, "medsora-s", shape), "stdit": build(now, "stdit-s", shape)}
        for _, step, _ in runs.values():
            step()
        times = {k: [] for k in runs}
        for _ in range(reps):
            for k, (_, step, _) in runs.items():
                t0 = time.perf_counter()
                step()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        mem = {k: _flops_and_memory(m, *step.data)[1] for k, (m, step, _) in runs.items()}
        row = dict(shape=shape, tokens=runs["stdit"][2], step_s=med, step_times=times, peak_mem_mb=mem,
                   vs_stdit={k: v / med["stdit"] for k, v in med.items()},
                   speedup=med[f"medsora@{first}"] / med["medsora"])
        rows.append(row)
        print(f"  {shape:7s} " + "  ".join(f"{k} {v:.3f}" for k, v in med.items()) + " s/step | vs stdit: "
              + "  ".join(f"{k} {v:.2f}" for k, v in row["vs_stdit"].items() if k != "stdit")
              + f" | speedup over {first}: {row['speedup']:.2f}x | memory MB: "
              + "  ".join(f"{k} {v:.0f}" for k, v in mem.items()), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--top", type=int, default=15, help="operators listed per shape")
    ap.add_argument("--no-profile", action="store_true", help="only the interleaved timing")
    ap.add_argument("--profile-at", metavar="REF", help="profile the models package at this git revision")
    ap.add_argument("--against", metavar="REF", nargs="+", help="git revisions to time against, interleaved")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--system-malloc", action="store_true", help="glibc's default malloc (see backbone.py)")
    ap.add_argument("--optimizer-loop", action="store_true", help="per-tensor AdamW loop (see backbone.py)")
    ap.add_argument("--eager-conv", action="store_true", help="no CPU convolution kernel (see backbone.py)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "medsora_profile.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    host = configure_host(args.system_malloc, args.optimizer_loop, args.eager_conv)
    print(f"malloc: {host['malloc']}, {host['optimizer']}, convolution: {host['conv']}", flush=True)
    import medvid.models as now

    result = dict(threads=args.threads, torch=torch.__version__, host=host, profiles=[], interleaved=[])
    if not args.no_profile:
        with tempfile.TemporaryDirectory() as tmp:
            pkg = load_models_at(args.profile_at, Path(tmp)) if args.profile_at else now
            result["profiled"] = args.profile_at or "working tree"
            result["profiles"] = [profile_shape(pkg, s, args.top) for s in args.shapes]
    if args.against:
        print(f"\ninterleaved training steps, {args.threads} threads, median of {args.reps}: medsora-s at "
              f"{', '.join(args.against)}, now, and stdit-s")
        with tempfile.TemporaryDirectory() as tmp:
            refs = {r: load_models_at(r, Path(tmp)) for r in args.against}
            result["against"] = args.against
            result["interleaved"] = interleaved(refs, args.shapes, args.reps)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
