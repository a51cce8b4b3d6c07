"""The GPU check (issue 13): fused kernels against the PyTorch path, MedSora-B fused vs PyTorch, bf16
training steps through the real trainer step, host syncs per step, a profiled step, DDIM fp32 vs bf16.

One script, at most ~8 minutes on one modern GPU, no network. It prints a table (PASS / FAIL / INFO /
SKIP per row) and writes ``gpu_check.json`` (and ``gpu_check_profile.txt``) into ``--out`` (default
``$OUT`` when set, else ``./gpu_check_out``). The JSON is rewritten after every section, so a run cut
short by a time limit still leaves what it measured. Exit status: 0 when every checked row passed,
1 when one failed. On a machine without CUDA it says so in one line and exits 0.

    PYTHONUNBUFFERED=1 PYTHONPATH=.gpu:. python3 benchmarks/gpu_check.py --out "$OUT"
    python benchmarks/gpu_check.py --cpu-smoke --out /tmp/gpu_check   # the script's own test, on a CPU

Sections:
  1. ``mamba_chunk_scan_combined`` (and ``causal_conv1d_fn`` when present) against the PyTorch scan at
     the shapes MedSora-B's mixers really see at the paper's shape (16 frames at 128x128 -> 4 latent
     frames + 8 joint images, 16x16x16 latents, patch 2, micro-batch 16), forward and gradients, fp32
     and bf16, each against a float64 reference: relative L2 < 5e-3 (fp32) / 2e-2 (bf16).
  2. A whole MedSora-B forward and backward, fused vs PyTorch path, weights re-randomised first
     (adaLN-Zero makes a fresh model output exactly zero, which would compare nothing).
  3. bf16 training steps of medsora-b and stdit-b through ``Trainer.train_step`` (micro-batch 16 and 2,
     with and without activation checkpointing) after warm-up (Triton autotuning): steps/s, clips/s,
     peak memory; target: medsora-b at most 1.5x stdit-b's step time.
  4. Host syncs inside one step (``torch.cuda.set_sync_debug_mode``) and the top kernels of a profiled step.
  5. DDIM sampling speed, fp32 vs bf16 autocast; and which SDPA kernel MedSora's local attention reaches.

Bringing the fused kernels. The ``mamba-ssm`` sdist's ``__init__`` imports CUDA extensions that need
compiling, but its SSD kernels (``mamba_ssm/ops/triton/*``) are pure Triton. On a machine with
network access and pip, in the checkout (``.gpu/`` is git-ignored locally, so name it in ``carry``):

    echo /.gpu/ >> .git/info/exclude
    d=$(mktemp -d)
    MAMBA_SKIP_CUDA_BUILD=TRUE pip download --no-deps --no-build-isolation mamba-ssm==2.3.2.post1 -d "$d"
    tar xzf "$d"/mamba_ssm-2.3.2.post1.tar.gz -C "$d"
    mkdir -p .gpu/mamba_ssm
    cp -r "$d"/mamba_ssm-2.3.2.post1/mamba_ssm/ops "$d"/mamba_ssm-2.3.2.post1/mamba_ssm/utils .gpu/mamba_ssm/
    echo '__version__ = "2.3.2.post1"' > .gpu/mamba_ssm/__init__.py   # a stub: no CUDA extension imports

then run with ``PYTHONPATH=.gpu:.``. ``causal_conv1d`` is C++/CUDA and must be compiled; without it
the conv rows say SKIP and the mixers use the PyTorch conv (the scan is the fused part that matters).
Where ``pip install mamba-ssm causal-conv1d --no-build-isolation`` works, no ``.gpu/`` is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import medvid.models.mamba2 as M  # noqa: E402
from medvid.models import create_model  # noqa: E402
from medvid.models.kernels import fused_ops  # noqa: E402

TOL = {"fp32": 5e-3, "bf16": 2e-2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# -- shapes -------------------------------------------------------------------------------------------
def paper_shape(smoke: bool) -> dict:
    """MedSora-B at the paper's shape; a tiny stand-in for --cpu-smoke."""
    if smoke:
        return dict(overrides=dict(depth=1, hidden_size=64, input_size=8, in_channels=4, d_state=16, headdim=32),
                    stdit=dict(depth=1, hidden_size=64, input_size=8, in_channels=4, headdim=32),
                    frames=2, images=1, channels=4, size=8, micro=[2], sample_batch=1, ddim_steps=2)
    return dict(overrides={}, stdit={}, frames=4, images=8, channels=16, size=16, micro=[16, 2], sample_batch=4,
                ddim_steps=25)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    if not torch.isfinite(a).all():
        return math.inf
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


class Report:
    def __init__(self, out: Path, meta: dict):
        self.out, self.rows, self.data = out, [], {"meta": meta, "sections": {}}
        out.mkdir(parents=True, exist_ok=True)

    def row(self, section: str, name: str, value, target: str = "", status: str = "INFO", **extra) -> None:
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        self.rows.append((section, name, shown, target, status))
        self.data["sections"].setdefault(section, []).append(
            {"name": name, "value": value, "target": target, "status": status, **extra})
        print(f"[{section}] {name}: {shown} {target} {status}", flush=True)
        self.save()

    def save(self) -> None:
        self.data["rows"] = [dict(zip(("section", "name", "value", "target", "status"), r)) for r in self.rows]
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.out / "gpu_check.json")

    def table(self) -> str:
        w = [max(len(str(r[i])) for r in self.rows + [("section", "check", "value", "target", "status")])
             for i in range(5)]
        lines = ["  ".join(str(c).ljust(w[i]) for i, c in enumerate(("section", "check", "value", "target", "status")))]
        lines += ["  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) for r in self.rows]
        return "\n".join(lines)

    @property
    def failed(self) -> bool:
        return any(r[4] == "FAIL" for r in self.rows)


def verdict(err: float, tol: float) -> str:
    return "PASS" if err < tol else "FAIL"


# -- stand-ins for --cpu-smoke: the kernels' signatures over the PyTorch path ----------------------------
def reference_ops() -> SimpleNamespace:
    def chunk_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                   cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False):
        dt = dt.float() + (dt_bias.float() if dt_bias is not None else 0)
        dt = (F.softplus(dt) if dt_softplus else dt).clamp(*dt_limit)
        out = M.ssd_chunk_scan(x.float(), dt, A.float(), B.float(), C.float(), chunk_size, D=D.float(),
                               initial_states=initial_states, return_final_states=return_final_states)
        return (out[0].to(x.dtype), out[1]) if return_final_states else out.to(x.dtype)

    def conv1d(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
               final_states_out=None, activation=None):
        k = weight.shape[1]
        y = F.conv1d(x, weight[:, None], bias, padding=k - 1, groups=x.shape[1])[..., : x.shape[2]]
        return F.silu(y) if activation in ("silu", "swish") else y

    return SimpleNamespace(chunk_scan=chunk_scan, conv1d=conv1d)


@contextlib.contextmanager
def mixer_path(ops: SimpleNamespace | None):
    """Force the Mamba mixers onto ``ops`` (the fused kernels or a stand-in) or, with None, the PyTorch path."""
    real = M.fused_ops
    M.fused_ops = lambda device: ops
    try:
        yield
    finally:
        M.fused_ops = real


@contextlib.contextmanager
def no_tf32():
    """Correctness comparisons without TF32, so the kernels are what differs."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def randomise(model: torch.nn.Module, scale: float = 0.02, seed: int = 0) -> None:
    """Re-randomise every weight (adaLN-Zero and zero-initialised heads would hide every difference)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.device, p.dtype))


# -- 1. kernels ------------------------------------------------------------------------------------------
def scan_shapes(shape: dict, device: torch.device) -> list[tuple[int, int]]:
    """(batch, length) of every Mamba2.ssm call of one MedSora block at micro-batch 1, times the micro-batch."""
    seen: list[tuple[int, int]] = []
    real = M.Mamba2.ssm

    def spy(self, xBC, dt, *a, **k):
        seen.append(tuple(xBC.shape[:2]))
        return real(self, xBC, dt, *a, **k)

    m = create_model("medsora-b", **(shape["overrides"] | {"depth": 1})).to(device)
    x = torch.randn(1, shape["frames"] + shape["images"], shape["channels"], shape["size"], shape["size"], device=device)
    M.Mamba2.ssm = spy
    try:
        with torch.no_grad(), mixer_path(None):
            m(x, torch.tensor([10], device=device), num_images=shape["images"])
    finally:
        M.Mamba2.ssm = real
    micro = shape["micro"][0]
    return sorted({(b * micro, l) for b, l in seen})


def check_scan(rep: Report, ops, device, mixer: M.Mamba2, b: int, l: int, name: str, seed: int) -> None:
    g = torch.Generator(device=device).manual_seed(seed)
    h, p, n, ng = mixer.nheads, mixer.headdim, mixer.d_state, mixer.ngroups
    chunk = M.fused_chunk_size(mixer.chunk_size, l)
    A = -torch.exp(mixer.A_log.detach().float())
    for tag, dtype in DTYPES.items():
        base = dict(x=torch.randn(b, l, h, p, device=device, generator=g),
                    dt=torch.randn(b, l, h, device=device, generator=g) - 1.0,
                    B=torch.randn(b, l, ng, n, device=device, generator=g),
                    C=torch.randn(b, l, ng, n, device=device, generator=g))
        leaves = {k: v.to(dtype).requires_grad_() for k, v in base.items()}
        params = {"A": A.clone().requires_grad_(), "D": mixer.D.detach().float().clone().requires_grad_(),
                  "dt_bias": mixer.dt_bias.detach().float().clone().requires_grad_()}
        gout = torch.randn(b, l, h, p, device=device, generator=g)
        t0 = time.perf_counter()
        y = M.fused_chunk_scan(ops.chunk_scan, *(leaves[k] for k in ("x", "dt")), params["A"], leaves["B"],
                               leaves["C"], chunk, D=params["D"], dt_bias=params["dt_bias"], dt_softplus=True)
        grads = torch.autograd.grad((y.float() * gout).sum(), [*leaves.values(), *params.values()])
        sync(device)
        secs = time.perf_counter() - t0
        # float64 reference on the same (rounded) inputs through the PyTorch scan.
        ref_in = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
        ref_p = {k: v.detach().double().requires_grad_() for k, v in params.items()}
        dt = F.softplus(ref_in["dt"] + ref_p["dt_bias"])
        y_ref = M.ssd_chunk_scan(ref_in["x"], dt, ref_p["A"], ref_in["B"], ref_in["C"], min(chunk, M.CPU_BLOCK),
                                 D=ref_p["D"])
        grads_ref = torch.autograd.grad((y_ref * gout.double()).sum(), [*ref_in.values(), *ref_p.values()])
        tol = TOL[tag]
        err = rel_l2(y, y_ref)
        rep.row("1 kernels", f"{name} b={b} l={l} chunk={chunk} {tag} fwd", err, f"< {tol:g}", verdict(err, tol),
                seconds_fwd_bwd=secs)
        gerr = {k: rel_l2(a, r) for k, a, r in zip([*leaves, *params], grads, grads_ref)}
        worst = max(gerr.values())
        rep.row("1 kernels", f"{name} b={b} l={l} {tag} grads (worst of {','.join(gerr)})", worst, f"< {tol:g}",
                verdict(worst, tol), per_input=gerr)


def check_conv(rep: Report, ops, device, d_model: int, b: int, l: int, name: str) -> None:
    """causal_conv1d_fn on the in_proj slice the mixer really passes (conv1d_input), vs the PyTorch conv."""
    mixer = M.Mamba2(d_model, **({} if d_model >= 256 else dict(d_state=16, headdim=32))).to(device)
    for tag, dtype in DTYPES.items():
        u = torch.randn(b, l, d_model, device=device, dtype=dtype)
        with torch.no_grad():
            zxbcdt = mixer.in_proj.to(dtype)(u)
        xBC = mixer.split_projection(zxbcdt)[3].detach().requires_grad_()
        w = mixer.conv1d.weight.detach().squeeze(1).to(dtype).requires_grad_()
        bias = mixer.conv1d.bias.detach().to(dtype).requires_grad_()
        gout = torch.randn(b, l, xBC.shape[-1], device=device)
        try:
            y = ops.conv1d(M.conv1d_input(xBC), w, bias, activation="silu").transpose(1, 2)
        except RuntimeError as e:
            rep.row("1 kernels", f"causal_conv1d {name} {tag}", str(e)[:80], "runs", "FAIL")
            continue
        grads = torch.autograd.grad((y.float() * gout).sum(), [xBC, w, bias])
        ref = [v.detach().double().requires_grad_() for v in (xBC, w, bias)]
        y_ref = F.silu(M.causal_conv1d(ref[0], ref[1], ref[2]))
        grads_ref = torch.autograd.grad((y_ref * gout.double()).sum(), ref)
        tol = TOL[tag]
        err = max(rel_l2(y, y_ref), *(rel_l2(a, r) for a, r in zip(grads, grads_ref)))
        rep.row("1 kernels", f"causal_conv1d {name} (in_proj row {zxbcdt.shape[-1]}) {tag} fwd+grads", err,
                f"< {tol:g}", verdict(err, tol))


def section_kernels(rep: Report, ops, device, shape: dict) -> None:
    if ops is None:
        rep.row("1 kernels", "mamba_ssm", "not importable", "", "SKIP")
        return
    shapes = scan_shapes(shape, device)
    mixer = create_model("medsora-b", **(shape["overrides"] | {"depth": 1})).blocks[0].temporal_mamba.to(device)
    rep.row("1 kernels", "scan shapes (batch, length) at micro-batch %d" % shape["micro"][0], str(shapes))
    with no_tf32():
        for i, (b, l) in enumerate(shapes):
            if l == 1:  # joint-training images: the closed form, never the kernel
                kw = {k: torch.randn(b, 1, *s, device=device, dtype=torch.float64) for k, s in
                      (("x", (mixer.nheads, mixer.headdim)), ("B", (1, mixer.d_state)), ("C", (1, mixer.d_state)))}
                dt = torch.rand(b, 1, mixer.nheads, device=device, dtype=torch.float64)
                A = -torch.rand(mixer.nheads, device=device, dtype=torch.float64)
                err = rel_l2(M.ssd_step(kw["x"], dt, A, kw["B"], kw["C"]), M.ssd_scan_ref(kw["x"], dt, A, kw["B"], kw["C"]))
                rep.row("1 kernels", f"length-1 closed form b={b}", err, "< 1e-10", verdict(err, 1e-10))
                continue
            check_scan(rep, ops, device, mixer, b, l, "chunk_scan", seed=i)
        if ops.conv1d is None:
            rep.row("1 kernels", "causal_conv1d", "not importable", "", "SKIP")
        else:
            b, l = max(shapes, key=lambda s: s[1])
            for d in sorted({shape["overrides"].get("hidden_size", 512), 64, 384}):
                check_conv(rep, ops, device, d, b, l, f"width {d}")


# -- 2. whole model ----------------------------------------------------------------------------------------
def section_model(rep: Report, ops, device, shape: dict) -> None:
    if ops is None:
        rep.row("2 medsora-b", "fused vs PyTorch", "mamba_ssm not importable", "", "SKIP")
        return
    torch.manual_seed(0)
    m = create_model("medsora-b", **shape["overrides"]).to(device).eval()  # eval: dropout off
    randomise(m)
    b = 2
    x = torch.randn(b, shape["frames"] + shape["images"], shape["channels"], shape["size"], shape["size"], device=device)
    t = torch.tensor([10, 700], device=device)
    params = [p for p in m.parameters() if p.requires_grad]
    results = {}
    with no_tf32():
        for tag in ("fp32", "bf16"):
            for path, use in (("fused", ops), ("torch", None)):
                amp = torch.autocast(device.type, dtype=torch.bfloat16) if tag == "bf16" else contextlib.nullcontext()
                with mixer_path(use), amp:
                    out = m(x, t, num_images=shape["images"])
                grads = torch.autograd.grad(out.float().square().mean(), params)
                results[(tag, path)] = (out.float().detach(), torch.cat([g.flatten() for g in grads]))
            err_o = rel_l2(*[results[(tag, p)][0] for p in ("fused", "torch")])
            err_g = rel_l2(*[results[(tag, p)][1] for p in ("fused", "torch")])
            tol = TOL[tag]
            rep.row("2 medsora-b", f"output fused vs torch {tag}", err_o, f"< {tol:g}", verdict(err_o, tol))
            rep.row("2 medsora-b", f"all grads fused vs torch {tag}", err_g, f"< {tol:g}", verdict(err_g, tol))
    nonzero = float(results[("fp32", "torch")][0].abs().max())
    rep.row("2 medsora-b", "max |output| (must be > 0)", nonzero, "> 0", "PASS" if nonzero > 0 else "FAIL")


# -- 3./4. training steps through the trainer ----------------------------------------------------------------
class SyntheticLatents(torch.utils.data.Dataset):
    def __init__(self, n: int, frames: int, images: int, channels: int, size: int):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, frames + images, channels, size, size, generator=g)
        self.images = images

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"latents": self.x[i], "num_images": self.images}


def make_trainer(model: str, overrides: dict, micro: int, ckpt: bool, device: torch.device, shape: dict, out: Path):
    import medvid.training.trainer as T
    from medvid.config import from_dict
    from medvid.training.config import TrainConfig
    from medvid.training.distributed import DistInfo

    cfg = from_dict(TrainConfig, {
        "model": {"name": model, "overrides": overrides, "grad_checkpointing": ckpt},
        "data": {"source": "latents", "latent_dir": str(out), "num_images": shape["images"]},
        "optim": {"phases": [{"lr": 1e-4, "batch_size": micro}], "clip_from_epoch": 0},
        "mixed_precision": "bf16", "device": device.type, "tensorboard": False, "progress": False,
    })
    real = T.build_dataset
    T.build_dataset = lambda c: SyntheticLatents(micro * 64, shape["frames"], shape["images"], shape["channels"],
                                                 shape["size"])
    try:
        trainer = T.Trainer(cfg, out, DistInfo(device=device))
    finally:
        T.build_dataset = real
    idx = list(range(len(trainer.dataset)))
    batches = [idx[i : i + micro] for i in range(0, len(idx), micro)]
    return trainer, iter(trainer.loader(batches))


def count_syncs(device, fn) -> tuple[int, list[str]]:
    if device.type != "cuda":
        return -1, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    msgs = [str(w.message).splitlines()[0][:120] for w in caught if "synchroniz" in str(w.message).lower()]
    return len(msgs), msgs


def profile_step(device, fn, out: Path, top: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    events = prof.key_averages()
    if device.type == "cuda":
        key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    else:
        key = "self_cpu_time_total"
    (out / "gpu_check_profile.txt").write_text(events.table(sort_by=key, row_limit=top))
    rows = []
    for ev in sorted(events, key=lambda e: -getattr(e, key))[:top]:
        rows.append({"name": ev.key[:90], "self_ms": getattr(ev, key) / 1e3, "calls": ev.count})
    return rows


def section_training(rep: Report, ops, device, shape: dict, args, deadline: float, out: Path) -> None:
    timings = {}
    for micro in shape["micro"]:
        for ckpt in (False, True):
            for model, over in (("medsora-b", shape["overrides"]), ("stdit-b", shape["stdit"])):
                if time.perf_counter() > deadline:
                    rep.row("3 training", f"{model} micro={micro} ckpt={ckpt}", "time budget spent", "", "SKIP")
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    trainer, it = make_trainer(model, over, micro, ckpt, device, shape, Path(tmp))
                    step = None
                    try:
                        with mixer_path(ops):
                            step = lambda: trainer.train_step(it, micro, 1, micro)  # noqa: E731
                            for _ in range(args.warmup):
                                step()
                            sync(device)
                            if device.type == "cuda":
                                torch.cuda.reset_peak_memory_stats(device)
                            times = []
                            for _ in range(args.steps):
                                t0 = time.perf_counter()
                                terms = step()
                                sync(device)
                                times.append(time.perf_counter() - t0)
                            sec = sorted(times)[len(times) // 2]
                            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
                            timings[(model, micro, ckpt)] = sec
                            rep.row("3 training", f"{model} micro={micro} ckpt={ckpt} s/step", sec, "", "INFO",
                                    steps_per_s=1 / sec, clips_per_s=micro / sec, peak_gib=peak,
                                    loss=None if terms is None else terms["loss"])
                            rep.row("3 training", f"{model} micro={micro} ckpt={ckpt} clips/s | peak GiB",
                                    f"{micro / sec:.2f} | {peak:.2f}")
                            if model == "medsora-b" and micro == shape["micro"][0] and not ckpt:
                                n, msgs = count_syncs(device, step)
                                rep.row("4 syncs", "host syncs in one medsora-b step", n if n >= 0 else "n/a on CPU",
                                        "<= 1 (the step's one read-back)" if n >= 0 else "",
                                        ("PASS" if n <= 1 else "FAIL") if n >= 0 else "SKIP", messages=msgs)
                                top = profile_step(device, step, out)
                                for r in top[:8]:
                                    rep.row("4 profile", r["name"][:60], r["self_ms"], "ms self", "INFO", calls=r["calls"])
                    finally:  # free this configuration before the next one measures its peak memory
                        trainer.close()
                        del trainer, it, step
                        gc.collect()
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
    for micro in shape["micro"]:
        for ckpt in (False, True):
            a, b = timings.get(("medsora-b", micro, ckpt)), timings.get(("stdit-b", micro, ckpt))
            if a and b:
                ratio = a / b
                status = "INFO" if device.type != "cuda" else ("PASS" if ratio <= 1.5 else "FAIL")
                rep.row("3 training", f"medsora-b / stdit-b step time micro={micro} ckpt={ckpt}", ratio, "<= 1.5",
                        status)


# -- 5. sampling and attention ---------------------------------------------------------------------------------
def section_sampling(rep: Report, ops, device, shape: dict, deadline: float) -> None:
    from medvid.diffusion import GaussianDiffusion, sample

    if time.perf_counter() > deadline:
        rep.row("5 sampling", "DDIM", "time budget spent", "", "SKIP")
        return
    torch.manual_seed(0)
    m = create_model("medsora-b", **shape["overrides"]).to(device).eval()
    randomise(m)
    diffusion = GaussianDiffusion()
    b, steps = shape["sample_batch"], shape["ddim_steps"]
    lat = (b, shape["frames"], shape["channels"], shape["size"], shape["size"])
    noise = torch.randn(lat, generator=torch.Generator().manual_seed(0)).to(device)
    results = {}
    with torch.no_grad(), mixer_path(ops):
        for tag in ("fp32", "bf16"):
            def fn(x, t, tag=tag):
                if tag == "bf16":
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        return m(x, t).float()
                return m(x, t)

            sample(fn, lat, diffusion, "ddim", 2, noise=noise, device=device)  # warm-up
            sync(device)
            t0 = time.perf_counter()
            z = sample(fn, lat, diffusion, "ddim", steps, noise=noise, device=device)
            sync(device)
            results[tag] = (time.perf_counter() - t0) / steps, z
            rep.row("5 sampling", f"DDIM {tag} s/step (batch {b}, {steps} steps)", results[tag][0])
    rep.row("5 sampling", "bf16 speed-up over fp32", results["fp32"][0] / results["bf16"][0])
    rep.row("5 sampling", "final latents rel. diff bf16 vs fp32", rel_l2(results["bf16"][1], results["fp32"][1]))
    section_attention(rep, device, shape)


def section_attention(rep: Report, device, shape: dict) -> None:
    """Which SDPA backends accept MedSora's local attention call (one head of width hidden_size, a mask)."""
    from medvid.models.layers import local_attention

    d = shape["overrides"].get("hidden_size", 512)
    n = shape["size"] ** 2 // 4  # tokens per frame after patch 2
    bsz = shape["micro"][0] * (shape["frames"] + shape["images"])
    q, k, v = (torch.randn(bsz, n, d, device=device, dtype=torch.bfloat16) for _ in range(3))
    ref = local_attention(q.double(), k.double(), v.double(), 8)
    if device.type != "cuda":
        rep.row("5 attention", "SDPA backend probe", "n/a on CPU", "", "SKIP")
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel([backend]):
                local_attention(q, k, v, 8)
                sync(device)
                t0 = time.perf_counter()
                for _ in range(10):
                    y = local_attention(q, k, v, 8)
                sync(device)
            ms = (time.perf_counter() - t0) / 10 * 1e3
            err = rel_l2(y, ref)
            rep.row("5 attention", f"local attention via {name} bf16 ms (rel err {err:.1e})", ms, "", "INFO")
        except RuntimeError as e:
            rep.row("5 attention", f"local attention via {name}", "not available: " + str(e).splitlines()[0][:60])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="folder for gpu_check.json")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="run every section at tiny shapes on the CPU, kernels replaced by PyTorch stand-ins "
                         "(tests the script; measures nothing about a GPU)")
    ap.add_argument("--budget", type=float, default=300.0,
                    help="seconds after which the training and sampling sections skip what is left")
    ap.add_argument("--warmup", type=int, default=3, help="training steps before timing (Triton autotuning)")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps (median reported)")
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine; nothing checked (exit 0). "
              "Run it on a CUDA machine, or with --cpu-smoke to test the script itself.")
        return 0
    if smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))
        args.warmup, args.steps = min(args.warmup, 1), min(args.steps, 2)
    device = torch.device("cpu") if smoke else torch.device("cuda", 0)
    deadline = time.perf_counter() + args.budget
    ops = reference_ops() if smoke else fused_ops(device)
    shape = paper_shape(smoke)
    meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if not smoke else "cpu (smoke)",
            "cuda": torch.version.cuda, "fused_scan": ops is not None and not smoke,
            "causal_conv1d": bool(ops is not None and ops.conv1d is not None and not smoke), "shape": shape}
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = None
    try:
        import mamba_ssm

        meta["mamba_ssm"] = getattr(mamba_ssm, "__version__", "?")
    except ImportError:
        meta["mamba_ssm"] = None
    out = Path(args.out)
    rep = Report(out, meta)
    print("gpu_check:", json.dumps({k: v for k, v in meta.items() if k != "shape"}), flush=True)
    t_start = time.perf_counter()
    for name, fn in (("kernels", lambda: section_kernels(rep, ops, device, shape)),
                     ("model", lambda: section_model(rep, ops, device, shape)),
                     ("training", lambda: section_training(rep, ops, device, shape, args, deadline, out)),
                     ("sampling", lambda: section_sampling(rep, ops, device, shape, deadline))):
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # one broken section must not hide the others' results
            import traceback

            traceback.print_exc()
            rep.row(name, "section crashed", f"{type(e).__name__}: {str(e)[:100]}", "", "FAIL")
        rep.data.setdefault("seconds", {})[name] = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rep.data["seconds"]["total"] = time.perf_counter() - t_start
    rep.data["failed"] = rep.failed
    rep.save()
    print()
    print(rep.table())
    print(f"\ngpu_check: {'FAIL' if rep.failed else 'all checked rows passed'}; "
          f"{rep.data['seconds']['total']:.0f} s; results in {out / 'gpu_check.json'}")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
