"""Wan fine-tuning with and without the precompute cache (`medvid wan-cache`).

Measured (CPU, this machine; each variant in its own process so its peak memory is its own): a
tiny random Wan2.1 pipeline whose parts keep the real model's proportions roughly (text encoder
several times the DiT, as UMT5-XXL's 5.7B is to the 1.3B DiT), LoRA training on 4 clips of
17 frames at 64x64:
  * seconds per step (median after warm-up) and CPU seconds per step (process time, all threads),
  * peak resident memory (ru_maxrss) minus that of a process that only imports the libraries,
  * the same for the cache stage itself (a one-off cost).

Estimated (stated as such): Wan2.1-T2V-1.3B and 14B at 480x832x81, batch 1, bf16, on one GPU.
Parameter counts are exact (models built on the meta device from the published configs); forward
FLOPs are counted with torch.utils.flop_counter on meta tensors for the DiT and the VAE encoder;
the text encoder costs 2 x parameters x 512 tokens. Without the cache a step also holds UMT5-XXL
(bf16) and the VAE (fp32) with its encode workspace, and spends the VAE encode and UMT5 forward.

    python benchmarks/wan_cache.py [--steps 6]
Writes benchmarks/results/wan_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WAN = {  # transformer/config.json of the -Diffusers releases
    "1.3B": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
    "14B": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
}
UMT5_XXL_ENCODER_PARAMS = 5.68e9
GPUS = (("A100", 312e12), ("H100", 989e12))  # dense bf16 peak FLOP/s

CHILD = r"""
import json, logging, resource, statistics, sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(2)
from medvid.config import from_dict
from medvid.utils.logging import get_logger, setup_logging
setup_logging()
mode, work, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
class Timer:
    def write(self, msg):
        if "s/step" in msg:
            times.append(float(msg.rsplit(" ", 1)[-1].replace("s/step", "")))
    def flush(self):
        pass
get_logger().addHandler(logging.StreamHandler(Timer()))
from medvid.t2v.wan_train import WanTrainConfig, train_wan
cfg = {{"model_path": work + "/wan", "max_sequence_length": 32, "max_steps": steps, "log_every": 1, "save_every": steps,
        "tensorboard": False, "data": {{"path": work + "/metadata.csv", "buckets": [[64, 64, 17]], "num_workers": 0}},
        "lora": {{"rank": 8, "alpha": 8}}, "batch_size": 1, "gradient_checkpointing": False}}
c0, t0 = time.process_time(), time.perf_counter()
if mode == "imports":
    from medvid.t2v import wan, wan_cache  # noqa: F401
    import diffusers, transformers  # noqa: F401
    out = {{}}
elif mode == "cache":
    from medvid.t2v.wan_cache import build_cache
    out = build_cache(from_dict(WanTrainConfig, cfg), work + "/cache", dtype="float32", progress=False)
    out = {{"clips": out["encoded"], "seconds": out["seconds"]}}
else:
    if mode == "cached":
        cfg["data"]["cache"] = work + "/cache"
    s = train_wan(from_dict(WanTrainConfig, cfg), work + "/run-" + mode)
    out = {{"median_step_s": statistics.median(times[2:] or times), "first_step_s": times[0],
            "loss_first_last": [s["losses"][0], s["losses"][-1]]}}
out.update(cpu_s=time.process_time() - c0, wall_s=time.perf_counter() - t0,
           peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("RESULT " + json.dumps(out))
"""


def tiny_pipeline(folder: Path) -> dict:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    words = ("echocardiogram apical four chamber view of a beating heart laparoscopic cholecystectomy grasper "
             "retracts gallbladder fundus colonoscopy sigmoid colon polyp ultrasound liver cyst").split()
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    te = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=256, d_kv=32, d_ff=1024, num_layers=6,
                                     num_heads=8, relative_attention_num_buckets=32))
    vae = AutoencoderKLWan(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                           temperal_downsample=[False, True, True])
    tr = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=16,
                               out_channels=16, text_dim=256, freq_dim=256, ffn_dim=384, num_layers=4,
                               cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64)
    WanPipeline(tokenizer=tokenizer, text_encoder=te, vae=vae, transformer=tr,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0)).save_pretrained(folder)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"transformer": count(tr), "text_encoder": count(te), "vae": count(vae)}


def clips(work: Path, n: int = 4) -> None:
    from medvid.utils.video import write_mp4

    yy, xx = np.mgrid[0:64, 0:64]
    rows = []
    for i in range(n):
        frames = np.stack([np.stack([(xx * 4 + t * 7 * (i + 1)) % 256, (yy * 4) % 256, np.full_like(xx, 60 * i)], -1)
                           for t in range(17)]).astype(np.uint8)
        write_mp4(frames, work / f"clip{i}.mp4")
        rows.append(f"clip{i}.mp4,echocardiogram apical four chamber view of a beating heart {i}\n")
    (work / "metadata.csv").write_text("video,prompt\n" + "".join(rows))


def child(mode: str, work: Path, steps: int) -> dict:
    code = CHILD.format(root=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, mode, str(work), str(steps)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[7:])


def estimate() -> dict:
    """1.3B / 14B per-step cost with and without the cache (meta-device parameter and FLOP counts)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from torch.utils.flop_counter import FlopCounterMode

    gib = 2**30
    with torch.device("meta"):
        vae = AutoencoderKLWan()
    vae_params = sum(p.numel() for p in vae.parameters())
    f, h, w = (81 - 1) // 4 + 1, 480 // 8, 832 // 8
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        vae.encode(torch.empty(1, 3, 81, 480, 832, device="meta"))
    vae_flops = fc.get_total_flops()
    t5_flops = 2 * UMT5_XXL_ENCODER_PARAMS * 512
    out: dict = {"note": "ESTIMATE from parameter and FLOP counts, not measured on a GPU; 40 % of bf16 peak assumed",
                 "vae_parameters": vae_params, "vae_encode_tflops_480x832x81": round(vae_flops / 1e12, 1),
                 "umt5_xxl_forward_tflops_512_tokens": round(t5_flops / 1e12, 1)}
    for name, c in WAN.items():
        with torch.device("meta"):
            tr = WanTransformer3DModel(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
                                       cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, **c)
        n = sum(p.numel() for p in tr.parameters())
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            tr(hidden_states=torch.empty(1, 16, f, h, w, device="meta"), timestep=torch.tensor([500.0], device="meta"),
               encoder_hidden_states=torch.empty(1, 512, 4096, device="meta"), return_dict=False)
        fwd = fc.get_total_flops()
        train = 4 * fwd  # forward + backward (2x) + checkpoint recomputation (1x)
        dim, layers = c["num_attention_heads"] * c["attention_head_dim"], c["num_layers"]
        tokens = f * (h // 2) * (w // 2)
        acts = (layers * tokens * dim + tokens * (16 * dim + 3 * c["ffn_dim"])) * 2  # checkpointed, bf16
        # LoRA rank 32 on q, k, v, o of both attentions and both FFN layers: fp32 weights, grads, Adam m and v
        lora = 32 * (8 * 2 * dim + 2 * (dim + c["ffn_dim"])) * layers
        dit_mem = n * 2 + acts + lora * 16
        enc_mem = UMT5_XXL_ENCODER_PARAMS * 2 + vae_params * 4 + 6 * gib  # + VAE encode workspace allowance
        rec = {"parameters": n, "lora_parameters_rank32": lora, "dit_forward_tflops": round(fwd / 1e12, 1),
               "memory_gib_with_cache": round(dit_mem / gib, 1),
               "memory_gib_without_cache": round((dit_mem + enc_mem) / gib, 1)}
        for gpu, peak in GPUS:
            eff = 0.4 * peak
            rec[f"step_s_{gpu}_with_cache"] = round(train / eff, 2)
            rec[f"step_s_{gpu}_without_cache"] = round((train + vae_flops + t5_flops) / eff, 2)
        rec["encoder_share_of_step_flops"] = round((vae_flops + t5_flops) / (train + vae_flops + t5_flops), 3)
        out[f"wan2.1_{name}_480x832x81"] = rec
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    res: dict = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "load_average_at_start": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory(prefix="medvid-wan-cache-bench-") as d:
        work = Path(d)
        res["tiny_parameters"] = tiny_pipeline(work / "wan")
        clips(work)
        base = child("imports", work, args.steps)
        res["cache_stage"] = child("cache", work, args.steps)
        direct = child("direct", work, args.steps)
        cached = child("cached", work, args.steps)
    for r in (res["cache_stage"], direct, cached):
        r["peak_rss_over_imports_mib"] = round(r["peak_rss_mib"] - base["peak_rss_mib"], 1)
    res["imports_only_peak_rss_mib"] = round(base["peak_rss_mib"], 1)
    res["train_without_cache"], res["train_with_cache"] = direct, cached
    res["ratios_with_over_without"] = {
        "median_step_s": round(cached["median_step_s"] / direct["median_step_s"], 3),
        "cpu_s_total": round(cached["cpu_s"] / direct["cpu_s"], 3),
        "peak_rss_over_imports": round(cached["peak_rss_over_imports_mib"] / direct["peak_rss_over_imports_mib"], 3),
    }
    res["estimate"] = estimate()
    out = ROOT / "benchmarks" / "results" / "wan_cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"{'tiny LoRA training (CPU)':32s} {'step s (median)':>16s} {'CPU s total':>12s} {'peak RSS MiB*':>14s}")
    for name, r in (("without cache", direct), ("with cache", cached)):
        print(f"{name:32s} {r['median_step_s']:16.3f} {r['cpu_s']:12.1f} {r['peak_rss_over_imports_mib']:14.1f}")
    print(f"{'ratio with / without':32s} {res['ratios_with_over_without']['median_step_s']:16.3f} "
          f"{res['ratios_with_over_without']['cpu_s_total']:12.3f} {res['ratios_with_over_without']['peak_rss_over_imports']:14.3f}")
    print("* over a process that only imports the libraries")
    print(f"\n{'estimate, batch 1, bf16':32s} {'GiB w/o':>8s} {'GiB with':>9s} {'H100 s w/o':>11s} {'H100 s with':>12s}")
    for name in WAN:
        r = res["estimate"][f"wan2.1_{name}_480x832x81"]
        print(f"{'Wan2.1-' + name + ' 480x832x81':32s} {r['memory_gib_without_cache']:8.1f} {r['memory_gib_with_cache']:9.1f} "
              f"{r['step_s_H100_without_cache']:11.2f} {r['step_s_H100_with_cache']:12.2f}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
