"""`medvid generate --model wan` on a tiny random Wan2.1 pipeline."""

import json

import numpy as np
import pytest
import torch

from medvid.t2v import generate as G
from medvid.t2v import wan as W
from medvid.utils.weights import MissingWeightsError

class Interrupted(Exception):
    pass


TINY = dict(height=32, width=32, num_frames=5, steps=2, max_sequence_length=16, fps=4)


@pytest.fixture(scope="module")
def lora_dir(wan_dir, tmp_path_factory):
    """A LoRA with random (non-zero) weights, saved the way train-wan exports it."""
    from diffusers import WanTransformer3DModel

    t = WanTransformer3DModel.from_pretrained(wan_dir, subfolder="transformer")
    cfg = W.add_lora(t, rank=4, alpha=4)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in t.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    d = tmp_path_factory.mktemp("lora") / "lora"
    W.save_lora(d, W.lora_state_dict(t), cfg)
    return d


def test_lora_generation_equals_plain_diffusers(wan_dir, lora_dir, tmp_path):
    from diffusers import WanPipeline

    cfg = G.GenerateConfig(model="wan", checkpoint=str(wan_dir), lora=str(lora_dir), prompt="the heart",
                           out=str(tmp_path), **TINY)
    pipe, where = G.load_wan_for_generation(cfg, torch.device("cpu"))
    spec = G.prompt_specs(cfg)[0]
    ours = G.wan_video(pipe, spec, W.WAN_NEGATIVE_PROMPT, G.wan_settings(cfg))
    assert ours.shape == (5, 32, 32, 3) and ours.dtype == np.uint8

    ref_pipe = WanPipeline.from_pretrained(wan_dir)
    ref_pipe.load_lora_weights(lora_dir)
    ref = ref_pipe("the heart", negative_prompt=W.WAN_NEGATIVE_PROMPT, height=32, width=32, num_frames=5,
                   num_inference_steps=2, guidance_scale=5.0, generator=torch.Generator().manual_seed(0),
                   output_type="np", max_sequence_length=16).frames[0]
    assert np.abs(ours.astype(int) - W.frames_to_uint8(ref).astype(int)).max() <= 1
    base = G.wan_video(WanPipeline.from_pretrained(wan_dir), spec, W.WAN_NEGATIVE_PROMPT, G.wan_settings(cfg))
    assert np.abs(base.astype(int) - ours.astype(int)).max() > 2  # the LoRA matters


def test_batch_resumes_without_regenerating(wan_dir, tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([
        "echocardiogram apical four chamber view",
        {"prompt": "colonoscopy of the sigmoid colon", "seed": 11, "name": "colon", "negative_prompt": "blurry"},
        "ultrasound of the liver",
    ]))
    out = tmp_path / "videos"
    calls, failed = [], []
    real = G.wan_video

    def flaky(pipe, spec, negative, s, on_step=None):
        calls.append(spec.name)
        if len(calls) == 2 and not failed:
            failed.append(spec.name)
            raise Interrupted  # the run dies during the second video (killed, out of memory...)
        return real(pipe, spec, negative, s, on_step)

    monkeypatch.setattr(G, "wan_video", flaky)
    cfg = G.GenerateConfig(model="wan", checkpoint=str(wan_dir), batch=str(prompts), out=str(out), seed=5, **TINY)
    with pytest.raises(Interrupted):
        G.generate(cfg, progress=False)
    first = "0000-echocardiogram-apical-four-chamber-view"
    assert sorted(p.name for p in out.iterdir()) == [f"{first}.json", f"{first}.mp4"]
    mtime = (out / f"{first}.mp4").stat().st_mtime_ns

    calls.clear()
    result = G.generate(cfg, progress=False)
    assert calls == ["colon", "0002-ultrasound-of-the-liver"]
    assert [p.name for p in result["skipped"]] == [f"{first}.mp4"] and len(result["written"]) == 2
    assert (out / f"{first}.mp4").stat().st_mtime_ns == mtime

    side = json.loads((out / "colon.json").read_text())
    assert side["prompt"] == "colonoscopy of the sigmoid colon" and side["seed"] == 11
    assert side["negative_prompt"] == "blurry" and side["model"] == "wan"
    assert side["settings"]["height"] == 32 and side["settings"]["steps"] == 2 and side["frames"] == 5
    default = json.loads((out / f"{first}.json").read_text())
    assert default["negative_prompt"] == W.WAN_NEGATIVE_PROMPT and default["seed"] == 5  # MedGen's default, base seed

    from medvid.data.readers import open_video

    with open_video(out / "colon.mp4") as r:
        assert (r.num_frames, r.height, r.width) == (5, 32, 32)
    calls.clear()
    assert G.generate(cfg, progress=False)["written"] == [] and calls == []


def test_step_progress_model_reuse_and_stop(wan_dir, tmp_path, monkeypatch):
    """on_step sees every denoising step; a kept models dict loads the pipeline once; raising in
    on_step stops the video before anything is written."""
    loads, steps = [], []
    real = G.load_wan_for_generation
    monkeypatch.setattr(G, "load_wan_for_generation", lambda cfg, device: loads.append(1) or real(cfg, device))
    models: dict = {}
    for seed in (1, 2):
        cfg = G.GenerateConfig(model="wan", checkpoint=str(wan_dir), prompt="the heart", name=f"h{seed}", seed=seed,
                               out=str(tmp_path), **TINY)
        G.generate(cfg, progress=False, on_step=lambda k, n: steps.append((k, n)), models=models)
    assert len(loads) == 1 and steps == [(1, 2), (2, 2)] * 2

    def stop(k, n):
        raise Interrupted

    cfg = G.GenerateConfig(model="wan", checkpoint=str(wan_dir), prompt="the heart", name="stopped", out=str(tmp_path), **TINY)
    with pytest.raises(Interrupted):
        G.generate(cfg, progress=False, on_step=stop, models=models)
    assert not list(tmp_path.glob("stopped*")) and len(loads) == 1


def test_train_wan_run_folder_as_checkpoint(wan_dir, lora_dir, tmp_path):
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(lora_dir, run / "lora")
    (run / "config.yaml").write_text(yaml.safe_dump({"model_path": str(wan_dir), "mode": "lora"}))
    where = G.resolve_wan_checkpoint(run, None)
    assert where["base"] == wan_dir and where["lora"] == run / "lora"
    assert G.resolve_wan_checkpoint(wan_dir, run)["lora"] == run / "lora"
    with pytest.raises(ValueError, match="--lora"):
        G.resolve_wan_checkpoint(wan_dir, tmp_path)


def test_cli_and_errors(wan_dir, tmp_path, capsys):
    from medvid.cli import main

    out = tmp_path / "cli"
    argv = ["generate", "--model", "wan", "--checkpoint", str(wan_dir), "--prompt", "the heart", "--out", str(out),
            "--height", "32", "--width", "32", "--num-frames", "5", "--steps", "1", "--max-sequence-length", "16",
            "--name", "heart", "--seed", "3"]
    assert main(argv) == 0
    assert json.loads((out / "heart.json").read_text())["seed"] == 3 and (out / "heart.mp4").is_file()

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(["ok", {"prompt": ""}]))
    assert main(["generate", "--model", "wan", "--checkpoint", str(wan_dir), "--batch", str(bad), "--out", str(out)]) == 2
    assert "entry 1" in capsys.readouterr().err
    assert main(["generate", "--model", "wan", "--checkpoint", str(tmp_path / "none"), "--prompt", "x", "--out", str(out)]) == 2
    assert "Wan2.1" in capsys.readouterr().err

    with pytest.raises(MissingWeightsError):
        W.require_wan_folder(tmp_path / "none")
    with pytest.raises(ValueError, match="model_index.json"):
        W.require_wan_folder(tmp_path)
    with pytest.raises(ValueError, match="exactly one"):
        G.GenerateConfig(model="wan", checkpoint="x")
    with pytest.raises(ValueError, match="--lora applies to --model wan"):
        G.GenerateConfig(model="medsora", checkpoint="x", prompt="a", lora="l")
    with pytest.raises(ValueError, match="--steps"):
        G.GenerateConfig(model="wan", checkpoint="x", prompt="a", steps=0)
