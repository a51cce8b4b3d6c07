"""Offline stages in 1 vs 2 processes (``medvid.utils.sharding``), and 8-GPU time estimates.

1. Every stage that splits its work across torchrun ranks (curate, encode, flow-features, sample,
   generate --batch, caption, judge, evaluate's feature extraction) runs on a small synthetic
   input (tiny random networks, nothing downloaded) once as one process and once as two gloo
   processes started like torchrun (``spawn_local``). Timed inside each process from the stage
   call to its return (process start-up and imports excluded, the gloo set-up and rank 0's merge
   included); speed-up = one process / the slower of the two ranks. Per-item time = one process's
   time / items. On a shared CPU two processes also share the cores (the load average is
   recorded), so the speed-up here is a floor, not what separate GPUs give.
2. Estimates (not measurements) for 8 GPUs, from per-item times: captioning MedVideoCap-55K
   (55,803 clips) with a 7B vision-language model, and sampling 2,048 MedSora-L videos with 250
   DDIM steps (the FVD protocol). No GPU and no 7B model are used here: the caption time per clip
   is an assumption (``--caption-seconds``, default 3 s, "a few seconds a clip"), and the
   MedSora-L step is its FLOPs (counted here) at an assumed GPU throughput unless
   ``--medsora-l-step-seconds`` gives a measured one. Ranks
   share nothing until the merge, so the estimate is per-item time x items / 8 plus the merge
   (measured on the captioning index here, scaled to 55,803 rows).

    python benchmarks/sharding.py            # ~3-5 minutes on 2 cores
    python benchmarks/sharding.py --quick    # fewer items (CI)

Writes benchmarks/results/sharding.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medvid.utils.sharding import spawn_local  # noqa: E402

CAPTION_CLIPS = 55_803
FVD_VIDEOS = 2_048
DDIM_STEPS = 250


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def timed(fn, result: str, args: tuple, kwargs: dict) -> None:
    """Runs in each process: the stage call, timed; writes ``result.<rank>``."""
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    Path(f"{result}.{os.environ.get('RANK', '0')}").write_text(str(time.perf_counter() - t0))


def run(fn, nprocs: int, work: Path, args: tuple, kwargs: dict) -> float:
    result = work / f"t{nprocs}"
    spawn_local(timed, nprocs, fn, str(result), args, kwargs, threads=1)
    return max(float(Path(f"{result}.{r}").read_text()) for r in range(nprocs))


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------


def videos(root: Path, n: int, frames: int = 16, size: int = 48) -> Path:
    from medvid.data.synthetic import write_video

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        write_video(root / f"v{i:03d}.mp4", num_frames=frames, height=size, width=size,
                    color=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return root


def sampling_checkpoint(run: Path, text_dir: Path | None = None) -> Path:
    from medvid.models import create_model
    from medvid.utils.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ctx = {"context_dim": 32} if text_dir else {}
    model = create_model("medsora-s", depth=2, hidden_size=64, input_size=8, in_channels=4, d_state=16, headdim=32, **ctx)
    sd = model.state_dict()
    state = {"model_config": dict(model.config), "latent_shape": [2, 4, 8, 8], "learn_sigma": True,
             "diffusion": {"num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
             "vae": "tiny-random(seed=0)", "num_classes": 0}
    config = {"sample": {"steps": 250, "fps": 8.0}}
    if text_dir:
        config["text"] = {"enabled": True, "encoder": "t5", "encoder_path": str(text_dir), "caption_field": "caption",
                          "dropout": 0.1, "max_length": 16, "cache_dir": None}
    save_checkpoint(run, 1, {"model": sd, "ema": sd}, state=state, config=config)
    return run


def stages(tmp: Path, n: int) -> dict:
    """name -> (items, setup() -> (fn, args, kwargs) for a fresh output, prepared once)."""
    from medvid.curation.curate import CurateConfig, curate
    from medvid.data import prepare
    from medvid.flow.cache import compute_flow_features
    from medvid.latents import tiny_vae
    from medvid.latents.encode import encode
    from medvid.metrics.evaluate import evaluate
    from medvid.sampling import sample_videos
    from medvid.t2v.generate import GenerateConfig, generate
    from medvid.vlm.caption import CaptionConfig, caption
    from medvid.vlm.judge import JudgeConfig, judge

    src = videos(tmp / "src", n)
    prepare(src, tmp / "prep", val_fraction=0.0, progress=False)
    vae = tiny_vae(seed=0, num_blocks=3)
    vlm = _load("bench_vlm", ROOT / "tests" / "vlm" / "conftest.py").build_tiny_qwen2vl(tmp / "vlm")
    t2v = _load("bench_t2v", ROOT / "tests" / "t2v" / "conftest.py")
    t5 = tmp / "t5"
    tok = t2v.make_tokenizer()
    t2v.make_t5(len(tok)).save_pretrained(t5)
    tok.save_pretrained(t5)
    plain, text = sampling_checkpoint(tmp / "run"), sampling_checkpoint(tmp / "run-text", t5)
    prompts = tmp / "prompts.json"
    prompts.write_text(json.dumps([f"echocardiogram apical four chamber view {i}" for i in range(n)]))
    for i in range(n):
        np.savez(tmp / "src" / f"v{i:03d}.npz", frames=np.random.default_rng(i).integers(0, 255, (16, 32, 32, 3), np.uint8))
    evalset = tmp / "npz"
    evalset.mkdir()
    for p in (tmp / "src").glob("*.npz"):
        shutil.move(p, evalset / p.name)

    def fresh(name: str) -> Path:
        out = tmp / "out" / f"{name}-{time.perf_counter_ns()}"
        out.parent.mkdir(exist_ok=True)
        return out

    def manifest_copy() -> Path:
        d = fresh("cap")
        shutil.copytree(tmp / "prep", d)
        return d / "manifest.jsonl"

    vkw = dict(device="cpu", image_size=64, batch_size=1)
    curate_cfg = CurateConfig(min_side=32, min_seconds=0.1, min_frames=4, blur_min_variance=0.0, text_engine="opencv",
                              val_fraction=0.0, disable=["static", "jump", "text"])
    return {
        "curate": (n, lambda: (curate, (src, fresh("curate"), curate_cfg), {"progress": False})),
        "encode": (n, lambda: (encode, (tmp / "prep", vae, fresh("enc")),
                               dict(num_frames=8, frame_stride=1, resolution=32, num_images=2, batch_size=1,
                                    shard_size=4, progress=False))),
        "flow-features": (n, lambda: (compute_flow_features, (tmp / "prep", fresh("flow")),
                                      dict(num_frames=8, frame_stride=1, resolution=32, progress=False))),
        "sample": (n, lambda: (sample_videos, (plain, n, fresh("sample")),
                               dict(steps=10, batch_size=1, device="cpu"))),
        "generate --batch": (n, lambda: (generate, (GenerateConfig(model="medsora", checkpoint=str(text),
                                                                   batch=str(prompts), out=str(fresh("gen")), steps=10,
                                                                   device="cpu"),), {"progress": False})),
        "caption": (n, lambda: (caption, (manifest_copy(), CaptionConfig(model=str(vlm), max_new_tokens_brief=8,
                                                                         max_new_tokens_detailed=8, **vkw)),
                                {"progress": False})),
        "judge": (n, lambda: (judge, (JudgeConfig(videos=str(src), model=str(vlm), out=str(fresh("judge") / "j.json"),
                                                  max_new_tokens=8, **vkw),), {"progress": False})),
        "evaluate (features)": (n, lambda: (evaluate, (evalset, evalset, ["fd_effnet_frame", "fd_effnet_clip"], None),
                                            dict(cache_dir=None, bootstrap=0, effnet_resolution=64, batch_size=16))),
    }


def medsora_l_step() -> tuple[float, float, int]:
    """(seconds on this CPU, FLOPs, aten ops) of one MedSora-L forward at the paper's latent shape
    (4 video latents, 16 ch, 16x16), batch 1. FLOPs: torch's FlopCounterMode (matmuls, convs); ops:
    every aten call, each at least one GPU kernel launch on the pure-PyTorch path."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    from medvid.models import create_model

    class Ops(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Ops.n += 1
            return func(*args, **(kwargs or {}))

    model = create_model("medsora-l").eval()
    x = torch.randn(1, 4, 16, 16, 16)
    t = torch.tensor([500])
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, Ops():
        t0 = time.perf_counter()
        model(x, t)
        return time.perf_counter() - t0, float(counter.get_total_flops()), Ops.n


def merge_seconds(tmp: Path, rows: int = 5000) -> float:
    """Rank 0's caption merge: apply ``rows`` part rows to a manifest of ``rows`` records and write it."""
    from medvid.utils.sharding import RowLog, parts_folder
    from medvid.vlm.caption import _apply_parts
    from medvid.curation.manifest import read_manifest
    from medvid.data.manifest import write_jsonl
    from medvid.utils.sharding import read_parts

    m = tmp / "merge" / "manifest.jsonl"
    recs = [{"path": f"clips/c{i}.mp4", "id": f"c{i}"} for i in range(rows)]
    write_jsonl(m, recs)
    for r in range(8):
        RowLog(parts_folder(m), r).append([{"i": i, "id": f"c{i}", "record": {**recs[i], "brief_caption": "b" * 80,
                                            "detailed_caption": "d" * 600}} for i in range(r, rows, 8)])
    t0 = time.perf_counter()
    final = read_manifest(m)
    _apply_parts(final, read_parts(parts_folder(m)), m)
    write_jsonl(m, final)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--items", type=int, default=None, help="items per stage (default 8, --quick 4)")
    ap.add_argument("--caption-seconds", type=float, default=3.0,
                    help="assumed seconds per clip of a 7B VLM on one GPU (brief + detailed caption)")
    ap.add_argument("--medsora-l-step-seconds", type=float, default=None,
                    help="one MedSora-L denoising step on the GPU, if measured (default: estimated from its FLOPs)")
    ap.add_argument("--gpu-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100 SXM: 989)")
    ap.add_argument("--gpu-utilization", type=float, default=0.1,
                    help="assumed fraction of peak MedSora-L's matmuls reach")
    ap.add_argument("--launch-us", type=float, default=10.0, help="assumed microseconds per kernel launch")
    ap.add_argument("--sample-batch", type=int, default=16, help="videos sampled at once per GPU")
    ap.add_argument("--only", default=None, help="comma-separated stage names")
    args = ap.parse_args()
    n = args.items or (4 if args.quick else 8)
    tmp = Path(tempfile.mkdtemp(prefix="medvid-shard-bench-"))
    rows, results = [], {}
    try:
        plan = stages(tmp, n)
        for name, (items, setup) in plan.items():
            if args.only and name not in args.only.split(","):
                continue
            try:
                fn, a, kw = setup()
                t1 = run(fn, 1, tmp, a, kw)
                fn, a, kw = setup()
                t2 = run(fn, 2, tmp, a, kw)
            except Exception as e:  # noqa: BLE001 - one stage failing still reports the others
                results[name] = {"error": f"{type(e).__name__}: {e}"}
                print(f"{name}: failed: {e}")
                continue
            results[name] = {"items": items, "one_process_s": round(t1, 3), "two_processes_s": round(t2, 3),
                             "speedup": round(t1 / t2, 2), "per_item_s": round(t1 / items, 4)}
            print(f"{name:22s} 1 proc {t1:7.2f}s  2 procs {t2:7.2f}s  speed-up {t1 / t2:4.2f}x  ({t1 / items:.3f} s/item)")

        cpu_step, flops, ops = medsora_l_step()
        step = args.medsora_l_step_seconds
        step_source = "given"
        if step is None:  # per video and step, in a batch of B: the slower of compute and kernel launches
            b = args.sample_batch
            step = max(b * flops / (args.gpu_tflops * 1e12 * args.gpu_utilization), ops * args.launch_us * 1e-6) / b
            step_source = (f"max({flops / 1e9:.1f} GFLOP x {b} at an assumed {args.gpu_utilization:.0%} of "
                           f"{args.gpu_tflops:g} TFLOP/s, {ops} ops x {args.launch_us:g} us) / {b} videos per batch")
        merge = merge_seconds(tmp) * CAPTION_CLIPS / 5000
        cap_1 = CAPTION_CLIPS * args.caption_seconds
        smp_1 = FVD_VIDEOS * DDIM_STEPS * step
        estimates = {
            "caption_55803_clips": {"seconds_per_clip": args.caption_seconds, "seconds_per_clip_source": "assumed",
                                    "one_gpu_hours": round(cap_1 / 3600, 2),
                                    "eight_gpus_hours": round((cap_1 / 8 + merge) / 3600, 2),
                                    "merge_seconds": round(merge, 2)},
            "sample_2048_medsora_l_ddim250": {"seconds_per_step": round(step, 5), "seconds_per_step_source": step_source,
                                              "gflop_per_step": round(flops / 1e9, 2), "ops_per_step": ops,
                                              "cpu_seconds_per_step": round(cpu_step, 2),
                                              "one_gpu_hours": round(smp_1 / 3600, 2),
                                              "eight_gpus_hours": round(smp_1 / 8 / 3600, 2)},
        }
        print("\nESTIMATES (per-item time x items / 8 + rank 0's merge; not measured on GPUs):")
        c, s = estimates["caption_55803_clips"], estimates["sample_2048_medsora_l_ddim250"]
        print(f"  caption {CAPTION_CLIPS} clips at {c['seconds_per_clip']} s/clip (assumed): "
              f"1 GPU {c['one_gpu_hours']} h -> 8 GPUs {c['eight_gpus_hours']} h (merge {c['merge_seconds']} s)")
        print(f"  sample {FVD_VIDEOS} MedSora-L videos x {DDIM_STEPS} DDIM steps at {s['seconds_per_step']} s/step "
              f"({step_source}): 1 device {s['one_gpu_hours']} h -> 8 devices {s['eight_gpus_hours']} h")
        out = ROOT / "benchmarks" / "results" / "sharding.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                               "torch": torch.__version__, "load_average": os.getloadavg()}, "items": n, "stages": results,
                                   "estimates": estimates}, indent=1))
        print(f"\nwrote {out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
