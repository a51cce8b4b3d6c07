"""Wan2.1 fine-tuning on a tiny random Wan transformer + VAE + T5 (tests/t2v/conftest.py)."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medvid.config import ConfigError, from_dict
from medvid.t2v import wan as W
from medvid.t2v.wan_data import load_clip, read_captioned_videos
from medvid.t2v.wan_train import WanTrainConfig, train_wan
from medvid.utils.checkpoint import load_checkpoint
from medvid.utils.video import write_mp4

CAPTIONS = ["echocardiogram apical four chamber view", "ultrasound of the liver with a cyst"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two 9-frame 32x32 mp4 clips (moving gradients) and a metadata.csv with video,prompt."""
    d = tmp_path_factory.mktemp("clips")
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(2):
        frames = np.stack([np.stack([(xx * 8 + t * 10 * (i + 1)) % 256, (yy * 8) % 256, np.full_like(xx, 80 + 90 * i)], -1)
                           for t in range(9)]).astype(np.uint8)
        write_mp4(frames, d / f"clip{i}.mp4")
    (d / "metadata.csv").write_text("video,prompt\n" + "".join(f"clip{i}.mp4,{c}\n" for i, c in enumerate(CAPTIONS)))
    return d


def make_cfg(wan_dir, clips, **kw):
    data = {"model_path": str(wan_dir), "max_sequence_length": 16, "log_every": 100, "save_every": 100,
            "data": {"path": str(clips / "metadata.csv"), "buckets": [[32, 32, 5]], "num_workers": 0},
            "lora": {"rank": 4, "alpha": 4}, "optim": {"lr": 2e-3}, "batch_size": 2}
    for k, v in kw.items():
        if isinstance(v, dict):
            data.setdefault(k, {}).update(v)
        else:
            data[k] = v
    return from_dict(WanTrainConfig, data)


def fixed_batch_loss(pipe, clips, draws=6):
    """Mean flow-matching loss over fixed clips, noise and noise levels."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    video = torch.stack([load_clip(str(clips / f"clip{i}.mp4"), 5, 32, 32) for i in range(2)])
    latents = W.encode_video(pipe.vae, video)
    embeds = W.encode_prompts(pipe, CAPTIONS, 16)
    sched = FlowMatchEulerDiscreteScheduler(shift=5.0)
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return float(torch.stack([W.flow_matching_loss(pipe.transformer, latents, embeds, sched, g) for _ in range(draws)]).mean())


def generate_frames(pipe):
    out = pipe(CAPTIONS[0], negative_prompt="blurry", height=32, width=32, num_frames=5, num_inference_steps=2,
               guidance_scale=4.0, generator=torch.Generator().manual_seed(0), output_type="np", max_sequence_length=16)
    return out.frames[0]


def test_lora_run_lowers_loss_changes_only_lora_and_loads_in_diffusers(wan_dir, clips, tmp_path, monkeypatch):
    captured = {}
    real_load = W.load_wan_pipeline

    def spy(*a, **k):
        captured["pipe"] = real_load(*a, **k)
        return captured["pipe"]

    monkeypatch.setattr(W, "load_wan_pipeline", spy)
    base = W.load_wan_pipeline(wan_dir)
    base_state = {k: v.clone() for k, v in base.transformer.state_dict().items()}
    loss_before = fixed_batch_loss(base, clips)

    summary = train_wan(make_cfg(wan_dir, clips, max_steps=10, optim={"lr": 2e-2}), tmp_path / "run")
    assert summary["step"] == 10 and len(summary["losses"]) == 10

    # Only LoRA parameters were trained, and the frozen base weights are bit-identical.
    trained = captured["pipe"].transformer
    trainable = [n for n, p in trained.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert len(trainable) == 2 * 10 * 2  # 2 blocks x (q,k,v,o in 2 attentions + ffn.0, ffn.2) x (A, B)
    for name, p in trained.named_parameters():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            assert torch.equal(p.detach(), base_state[key]), name
    groups, state, config = load_checkpoint(tmp_path / "run")
    assert set(groups["trainable"]) == set(trainable) and config["mode"] == "lora"
    assert all(groups["trainable"][n].abs().sum() > 0 for n in trainable if "lora_B" in n)  # B left its zero init

    # The exported LoRA is what diffusers' own loader reads; it reproduces the trained model.
    lora_file = tmp_path / "run" / "lora" / W.LORA_WEIGHT_NAME
    sd = load_file(str(lora_file))
    assert all(k.startswith("transformer.blocks.") and ".lora_" in k for k in sd)
    from diffusers import WanPipeline

    fresh = WanPipeline.from_pretrained(wan_dir)
    fresh.set_progress_bar_config(disable=True)
    fresh.load_lora_weights(tmp_path / "run" / "lora")
    loss_after = fixed_batch_loss(fresh, clips)
    assert loss_after < 0.85 * loss_before, (loss_before, loss_after)
    trained.eval()
    captured["pipe"].set_progress_bar_config(disable=True)
    np.testing.assert_allclose(generate_frames(fresh), generate_frames(captured["pipe"]), atol=1e-5)
    # ...and differs from the base model's output.
    assert np.abs(generate_frames(base) - generate_frames(fresh)).max() > 1e-3


def test_resume_continues_exactly(wan_dir, clips, tmp_path):
    cfg = make_cfg(wan_dir, clips, max_steps=4, save_every=2, ema_decay=0.5, grad_accum=2, batch_size=1)
    straight = train_wan(cfg, tmp_path / "a")
    train_wan(make_cfg(wan_dir, clips, max_steps=2, save_every=2, ema_decay=0.5, grad_accum=2, batch_size=1), tmp_path / "b")
    resumed = train_wan(cfg, tmp_path / "b", resume="auto")
    assert resumed["step"] == 4
    np.testing.assert_allclose(resumed["losses"], straight["losses"], rtol=1e-5)
    ga, _, _ = load_checkpoint(tmp_path / "a")
    gb, sb, _ = load_checkpoint(tmp_path / "b")
    assert sb["position"] == 8  # 4 steps x 2 micro-batches x 1 clip
    for group in ("trainable", "ema"):
        for k, v in ga[group].items():
            torch.testing.assert_close(gb[group][k], v, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "b" / "lora-ema" / W.LORA_WEIGHT_NAME).is_file()
    with pytest.raises(ValueError, match="lora"):
        train_wan(make_cfg(wan_dir, clips, max_steps=5, lora={"rank": 2}), tmp_path / "b", resume="auto")


def test_full_finetune_exports_a_diffusers_transformer(wan_dir, clips, tmp_path):
    from diffusers import WanTransformer3DModel

    summary = train_wan(make_cfg(wan_dir, clips, mode="full", epochs=2, gradient_checkpointing=False,
                                 optim={"lr": 1e-3}), tmp_path / "full")
    assert summary["trainable_parameters"] == summary["parameters"]
    assert summary["step"] == 2  # 2 epochs x 2 clips / batch 2
    base = WanTransformer3DModel.from_pretrained(wan_dir, subfolder="transformer")
    tuned = WanTransformer3DModel.from_pretrained(tmp_path / "full" / "transformer")
    changed = [n for (n, a), b in zip(base.state_dict().items(), tuned.state_dict().values()) if not torch.equal(a, b)]
    assert len(changed) > 0.8 * len(base.state_dict())

    # `medvid generate --checkpoint RUN` picks up the fine-tuned transformer.
    from medvid.t2v.generate import GenerateConfig, load_wan_for_generation

    pipe, where = load_wan_for_generation(
        GenerateConfig(model="wan", checkpoint=str(tmp_path / "full"), prompt="x"), torch.device("cpu"))
    assert where["transformer"] == tmp_path / "full" / "transformer" and where["lora"] is None
    for k, v in tuned.state_dict().items():
        assert torch.equal(pipe.transformer.state_dict()[k], v), k


def test_bad_data_and_config_errors(wan_dir, clips, tmp_path):
    (tmp_path / "bad.csv").write_text("file,text\nclip0.mp4,a\n")
    with pytest.raises(ValueError, match="video,prompt"):
        read_captioned_videos(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("video,prompt\nclip0.mp4,\n")
    with pytest.raises(ValueError, match="line 2"):
        read_captioned_videos(tmp_path / "empty.csv")
    with pytest.raises(ValueError, match="no such file"):
        read_captioned_videos(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(WanTrainConfig, {"lora": {"rnk": 3}})
    with pytest.raises(ConfigError, match="epochs"):
        from_dict(WanTrainConfig, {"epochs": 0})
    with pytest.raises(ConfigError, match="batch_size"):
        from_dict(WanTrainConfig, {"batch_size": 0})
    with pytest.raises(ConfigError, match="4k \\+ 1"):
        make_cfg(wan_dir, clips, data={"buckets": [[32, 32, 6]]})
    from medvid.utils.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="Wan2.1"):
        train_wan(make_cfg(tmp_path / "no-wan", clips), tmp_path / "y")
    with pytest.raises(ValueError, match="targets"):
        train_wan(make_cfg(wan_dir, clips, lora={"targets": ["nonexistent"]}), tmp_path / "z")


def test_manifest_caption_fields(clips, tmp_path):
    import json

    rows = [
        {"path": str(clips / "clip0.mp4"), "id": "a", "num_frames": 9, "fps": 8, "height": 32, "width": 32,
         "split": "train", "brief_caption": "a heart", "detailed_caption": "an apical four chamber view"},
        {"path": str(clips / "clip1.mp4"), "id": "b", "num_frames": 9, "fps": 8, "height": 32, "width": 32,
         "split": "val", "brief_caption": "a liver"},
    ]
    m = tmp_path / "manifest.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_captioned_videos(tmp_path, "detailed_caption")  # a folder holding manifest.jsonl
    assert [(i.path, i.caption) for i in items] == [(str(clips / "clip0.mp4"), "an apical four chamber view")]
    assert [i.caption for i in read_captioned_videos(m, "brief_caption", split="val")] == ["a liver"]
    with pytest.raises(ValueError, match="'b' has no 'detailed_caption'"):
        read_captioned_videos(m, "detailed_caption", split="val")
    clip = load_clip(str(clips / "clip0.mp4"), 17, 16, 24, generator=torch.Generator().manual_seed(0))
    assert clip.shape == (17, 3, 16, 24) and clip.min() >= -1 and clip.max() <= 1
    torch.testing.assert_close(clip[-1], clip[-9])  # 9-frame video: the last frame repeats


def test_bf16_lora_keeps_fp32_adapters_over_a_bf16_base(wan_dir, clips, tmp_path, monkeypatch):
    captured = {}
    real_load = W.load_wan_pipeline
    def spy(*a, **k):
        pipe = real_load(*a, **k)
        captured.setdefault("pipe", pipe)
        return pipe

    monkeypatch.setattr(W, "load_wan_pipeline", spy)
    summary = train_wan(make_cfg(wan_dir, clips, max_steps=1, precision="bf16", batch_size=1), tmp_path / "bf16")
    assert np.isfinite(summary["losses"][0])
    t = captured["pipe"].transformer
    dtypes = {("lora_" in n, p.dtype) for n, p in t.named_parameters() if "norm" not in n and "scale_shift" not in n
              and "time_embedder" not in n}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}
    assert captured["pipe"].vae.dtype == torch.float32  # Wan's VAE stays fp32
    # A following fp32 run in the same process is not blocked by accelerate's global state.
    assert train_wan(make_cfg(wan_dir, clips, max_steps=1, batch_size=1), tmp_path / "fp32")["step"] == 1


def test_ema_and_warmup_follow_what_accelerate_prepare_returns(wan_dir, clips, tmp_path, monkeypatch):
    """``accelerate.prepare`` may move the transformer (to the GPU) and return another optimiser (FSDP
    rebuilds it over the sharded parameters). Simulated on the CPU: prepare shifts the trainable weights
    (what a copy taken before it would miss, as a CPU copy misses the GPU weights) and returns a fresh
    optimiser. The EMA must start from the prepared weights and the warm-up must drive the returned optimiser."""
    from accelerate import Accelerator

    real_prepare, seen = Accelerator.prepare, {}

    def prepare(self, *objs):
        out = list(real_prepare(self, *objs))
        model = out[0]
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        with torch.no_grad():
            for _, p in trainable:
                p.add_(0.25)
        seen["prepared"] = {n: p.detach().clone() for n, p in trainable}
        out[1] = seen["optimizer"] = torch.optim.AdamW([p for _, p in trainable], lr=2e-3)
        return tuple(out)

    monkeypatch.setattr(Accelerator, "prepare", prepare)
    train_wan(make_cfg(wan_dir, clips, max_steps=1, ema_decay=0.5, optim={"lr": 2e-3, "warmup_steps": 4}),
              tmp_path / "run")
    # After one optimiser step the warm-up stands at (1 + 1) / 4 of the rate, on the optimiser that was stepped.
    assert seen["optimizer"].param_groups[0]["lr"] == pytest.approx(2e-3 * 2 / 4)
    groups, _, _ = load_checkpoint(tmp_path / "run")
    # ema_1 = d ema_0 + (1 - d) p_1 with d = 1/2, so ema_0 = 2 ema_1 - p_1: the weights prepare returned.
    assert set(groups["ema"]) == set(seen["prepared"])
    for n, p0 in seen["prepared"].items():
        torch.testing.assert_close(2 * groups["ema"][n] - groups["trainable"][n], p0, rtol=0, atol=1e-5)
