"""Text-to-video costs: tiny configurations measured on this machine, Wan2.1-1.3B estimated.

Measured (CPU, tiny random Wan2.1 pipeline: 2-layer transformer with 2 heads of 12, tiny Wan VAE,
2-layer UMT5 with a word-level tokenizer built here; 32x32 px, 9 frames):
  * seconds per LoRA training step (median after warm-up; VAE encode + T5 + forward/backward + AdamW),
  * seconds per generated video through ``medvid generate`` (4 steps, CFG), including mp4 writing,
  * seconds per MedSora text-conditioned sample (tiny MedSora, DDIM 10 steps, CFG),
  * peak resident memory of the process (ru_maxrss; includes the Python/torch import baseline).

Estimated (stated as an estimate): Wan2.1-T2V-1.3B at 480x832x81 on one 80 GB GPU. The 1.3B
transformer is built on the meta device with its published config; parameter counts are exact,
forward FLOPs come from torch.utils.flop_counter on meta tensors; memory adds weights, LoRA
optimiser state, the T5-XXL encoder, and checkpointed activations (block inputs + one block's
internals); time assumes 40 % of the GPU's bf16 peak.

    python benchmarks/t2v.py [--train-steps 8]
Writes benchmarks/results/t2v.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

WAN_1_3B = dict(  # Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
UMT5_XXL_ENCODER_PARAMS = 5.68e9  # google/umt5-xxl encoder (Wan's text encoder), bf16 on the GPU
WAN_VAE_PARAMS = 127e6


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["echocardiogram apical four chamber view of a beating heart",
              "laparoscopic cholecystectomy the grasper retracts the gallbladder fundus",
              "distorted blurry low quality watermark text overlay static image"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_wan(folder: Path) -> None:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    te = UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                     relative_attention_num_buckets=8))
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    tr = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                               out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
                               cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    WanPipeline(tokenizer=tok, text_encoder=te, vae=vae, transformer=tr,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0)).save_pretrained(folder)


def bench_wan_train(work: Path, wan: Path, steps: int) -> dict:
    from medvid.config import from_dict
    from medvid.t2v.wan_train import WanTrainConfig, train_wan
    from medvid.utils.logging import get_logger
    from medvid.utils.video import write_mp4

    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(2):
        frames = np.stack([np.stack([(xx * 8 + t * 9) % 256, (yy * 8) % 256, np.full_like(xx, 90 * i)], -1)
                           for t in range(9)]).astype(np.uint8)
        write_mp4(frames, work / f"clip{i}.mp4")
    (work / "metadata.csv").write_text("video,prompt\nclip0.mp4,echocardiogram of a beating heart\n"
                                       "clip1.mp4,laparoscopic cholecystectomy\n")
    times: list[float] = []

    class Timer:  # the training log line carries each step's wall time
        def write(self, msg):
            if "s/step" in msg:
                times.append(float(msg.rsplit(" ", 1)[-1].replace("s/step", "")))

    import logging

    h = logging.StreamHandler(Timer())
    get_logger().addHandler(h)
    cfg = from_dict(WanTrainConfig, {
        "model_path": str(wan), "max_sequence_length": 16, "max_steps": steps, "log_every": 1, "save_every": steps,
        "data": {"path": str(work / "metadata.csv"), "height": 32, "width": 32, "num_frames": 9, "num_workers": 0},
        "lora": {"rank": 4, "alpha": 4}, "batch_size": 2})
    t0, c0 = time.perf_counter(), time.process_time()
    summary = train_wan(cfg, work / "run")
    cpu = time.process_time() - c0
    get_logger().removeHandler(h)
    steady = times[2:] or times
    return {"steps": steps, "batch_size": 2, "frames": 9, "size": "32x32",
            "seconds_per_step_median_after_warmup": round(statistics.median(steady), 4),
            "first_step_seconds": round(times[0], 3) if times else None,
            "wall_seconds_total": round(time.perf_counter() - t0, 2),
            "cpu_seconds_total (all threads, incl. model load)": round(cpu, 2),
            "loss_first_last": [round(summary["losses"][0], 4), round(summary["losses"][-1], 4)],
            "trainable_parameters": summary["trainable_parameters"], "parameters": summary["parameters"]}


def bench_wan_generate(work: Path, wan: Path, lora: Path) -> dict:
    from medvid.t2v.generate import GenerateConfig, generate

    prompts = work / "prompts.json"
    prompts.write_text(json.dumps([f"echocardiogram of a beating heart {i}" for i in range(4)]))
    c0 = time.process_time()
    generate(GenerateConfig(model="wan", checkpoint=str(wan), lora=str(lora), batch=str(prompts), out=str(work / "gen"),
                            height=32, width=32, num_frames=9, steps=4, max_sequence_length=16), progress=False)
    cpu = time.process_time() - c0
    secs = [json.loads(p.read_text())["seconds"] for p in sorted((work / "gen").glob("*.json"))]
    return {"cpu_seconds_total (4 videos, incl. pipeline load)": round(cpu, 2),"videos": len(secs), "steps": 4, "guidance": 5.0, "size": "32x32x9",
            "seconds_per_video_median": round(statistics.median(secs[1:]), 4), "first_video_seconds": secs[0]}


def bench_medsora(work: Path) -> dict:
    from types import SimpleNamespace

    from medvid.diffusion import GaussianDiffusion
    from medvid.models import create_model
    from medvid.t2v.generate import medsora_latents
    from medvid.t2v.text import build_text_conditioner
    from transformers import UMT5Config, UMT5EncoderModel

    tok = tiny_tokenizer()
    UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                relative_attention_num_buckets=8)).save_pretrained(work / "t5")
    tok.save_pretrained(work / "t5")
    text = build_text_conditioner(SimpleNamespace(encoder="t5", encoder_path=str(work / "t5"), dropout=0.1,
                                                  max_length=16, cache_dir=None))
    model = create_model("medsora-s", depth=2, hidden_size=64, input_size=8, in_channels=4, d_state=16, headdim=32,
                         context_dim=text.context_dim).eval()
    m = {"model": model, "text": text, "diffusion": GaussianDiffusion(), "latent_shape": (4, 4, 8, 8)}
    secs = []
    for i in range(4):
        t0 = time.perf_counter()
        medsora_latents(m, "echocardiogram of a beating heart", "blurry", i, {"sampler": "ddim", "steps": 10, "guidance": 4.0})
        secs.append(time.perf_counter() - t0)
    return {"latent_shape": [4, 4, 8, 8], "sampler": "ddim-10", "guidance": 4.0,
            "seconds_per_sample_median": round(statistics.median(secs[1:]), 4), "first_sample_seconds": round(secs[0], 3)}


def estimate_1_3b() -> dict:
    """Wan2.1-1.3B LoRA training / generation at 480x832x81 on one 80 GB GPU (estimate)."""
    from diffusers import WanTransformer3DModel
    from torch.utils.flop_counter import FlopCounterMode

    from medvid.t2v.wan import add_lora

    with torch.device("meta"):
        tr = WanTransformer3DModel(**WAN_1_3B)
    base = sum(p.numel() for p in tr.parameters())
    add_lora(tr, rank=32, alpha=32)
    lora = sum(p.numel() for p in tr.parameters() if p.requires_grad)
    f, h, w = (81 - 1) // 4 + 1, 480 // 8, 832 // 8  # latent frames and size
    tokens = f * (h // 2) * (w // 2)
    x = torch.empty(1, 16, f, h, w, device="meta")  # FLOPs do not depend on the dtype
    ctx = torch.empty(1, 512, 4096, device="meta")
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        tr(hidden_states=x, timestep=torch.tensor([500.0], device="meta"), encoder_hidden_states=ctx, return_dict=False)
    fwd = fc.get_total_flops()
    gib = 2**30
    dim, ffn, layers = 12 * 128, WAN_1_3B["ffn_dim"], WAN_1_3B["num_layers"]
    # Checkpointed activations: every block's input (bf16) + one block's internals recomputed in
    # backward (~16 dim-wide and 3 ffn-wide tensors per token; SDPA keeps no L x L matrix).
    act_inputs = layers * tokens * dim * 2
    act_block = tokens * (16 * dim + 3 * ffn) * 2
    mem = {
        "transformer_bf16": base * 2, "lora_fp32_weights_grads_adam": lora * 4 * 4,
        "t5_xxl_encoder_bf16": UMT5_XXL_ENCODER_PARAMS * 2, "vae_fp32": WAN_VAE_PARAMS * 4,
        "checkpointed_block_inputs": act_inputs, "one_block_recomputed": act_block,
        "vae_encode_workspace_and_cuda_context (allowance)": 6 * gib,
    }
    total = sum(mem.values())
    no_ckpt = layers * act_block + base * 2 + UMT5_XXL_ENCODER_PARAMS * 2
    train_flops = 4 * fwd  # forward + backward (2x) + recomputation (1x)
    out = {
        "note": "ESTIMATE from parameter counts, counted FLOPs and activation sizes; not measured on a GPU",
        "transformer_parameters": base, "lora_parameters_rank32": lora, "tokens_480x832x81": tokens,
        "forward_tflops": round(fwd / 1e12, 1),
        "memory_gib": {k: round(v / gib, 2) for k, v in mem.items()},
        "train_memory_total_gib_batch1_with_checkpointing": round(total / gib, 1),
        "train_memory_without_checkpointing_gib (activations x30 blocks)": round(no_ckpt / gib, 1),
        "max_batch_per_80gb_estimate": int((80 * gib - (total - act_inputs - act_block)) // (act_inputs + act_block)),
    }
    for gpu, peak in (("A100", 312e12), ("H100", 989e12)):
        eff = 0.4 * peak
        out[f"seconds_per_train_step_{gpu} (batch 1, 40% of bf16 peak, + ~1 s VAE/T5)"] = round(train_flops / eff + 1.0, 1)
        out[f"seconds_per_video_{gpu} (50 steps x 2 CFG passes)"] = round(100 * fwd / eff, 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-steps", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from medvid.utils.logging import setup_logging

    setup_logging()
    import os

    results: dict = {"machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                                 "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]}}
    work = Path(tempfile.mkdtemp(prefix="medvid-t2v-bench-"))
    try:
        tiny_wan(work / "wan")
        results["rss_gib_after_imports_and_model_build"] = round(rss_gib(), 3)
        results["wan_lora_train_tiny"] = bench_wan_train(work, work / "wan", args.train_steps)
        results["wan_generate_tiny"] = bench_wan_generate(work, work / "wan", work / "run" / "lora")
        results["medsora_text_sample_tiny"] = bench_medsora(work)
        results["peak_rss_gib"] = round(rss_gib(), 3)
        results["wan2.1_1.3b_on_80gb_estimate"] = estimate_1_3b()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(__file__).resolve().parent / "results" / "t2v.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
