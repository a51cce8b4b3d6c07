"""MedGen's released checkpoint layout, image-to-video and still images on tiny random Wan pipelines."""

import json

import numpy as np
import pytest
import torch

from medvid.t2v import generate as G

from .wan_layout import write_original_layout

TINY = dict(height=32, width=32, num_frames=5, steps=2, max_sequence_length=16, fps=4)


@pytest.fixture(scope="module")
def both_layouts(tmp_path_factory):
    """The same tiny weights as a diffusers folder and as Wan-AI's original release (sharded DiT,
    Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth, google/umt5-xxl/). Its VAE keeps Wan2.1's
    stage layout (two residual blocks, channel multipliers 1, 2, 4, 4) that diffusers' converter expects."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    from .conftest import make_wan_pipeline

    p = make_wan_pipeline()
    torch.manual_seed(1)
    vae = AutoencoderKLWan(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                    flow_shift=3.0)
    pipe = WanPipeline(tokenizer=p.tokenizer, text_encoder=p.text_encoder, vae=vae, transformer=p.transformer, scheduler=sched)
    root = tmp_path_factory.mktemp("layouts")
    pipe.save_pretrained(root / "diffusers")
    return root / "diffusers", write_original_layout(pipe, root / "original", shards=2)


def test_original_layout_generates_like_the_diffusers_folder(both_layouts, tmp_path):
    diffusers_dir, original = both_layouts
    out = {}
    for name, ck in (("diffusers", diffusers_dir), ("original", original)):
        cfg = G.GenerateConfig(model="wan", checkpoint=str(ck), prompt="the heart", out=str(tmp_path / name), **TINY)
        pipe, where = G.load_wan_for_generation(cfg, torch.device("cpu"))
        out[name] = G.wan_video(pipe, G.prompt_specs(cfg)[0], "blurry", G.wan_settings(cfg))
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    # The same weights through two loaders: equal up to float rounding, which may flip a uint8 level
    # here and there (seen on one CPU model: 1 value of 15360 off by one); a wrong mapping of any
    # weight changes the frames far more.
    diff = np.abs(out["original"].astype(np.int16) - out["diffusers"].astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    assert out["original"].std() > 0

    # through the CLI, the single-file variant (one DiT file instead of shards) too
    import shutil

    from safetensors.torch import load_file, save_file

    single = tmp_path / "single"
    shutil.copytree(original, single)
    index = single / "diffusion_pytorch_model.safetensors.index.json"
    sd = {}
    for f in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        sd.update(load_file(str(single / f)))
        (single / f).unlink()
    index.unlink()
    save_file(sd, str(single / "diffusion_pytorch_model.safetensors"))
    from medvid.cli import main

    assert main(["generate", "--model", "wan", "--checkpoint", str(single), "--prompt", "the heart", "--out",
                 str(tmp_path / "cli"), "--height", "32", "--width", "32", "--frames", "5", "--steps", "1",
                 "--max-sequence-length", "16", "--name", "heart"]) == 0
    assert (tmp_path / "cli" / "heart.mp4").is_file()

    (single / "Wan2.1_VAE.pth").unlink()
    with pytest.raises(ValueError, match="no VAE.*Wan2.1_VAE.pth"):
        G.load_wan_for_generation(G.GenerateConfig(model="wan", checkpoint=str(single), prompt="x"), torch.device("cpu"))


def test_still_image_and_prompt_length(wan_dir, tmp_path):
    from PIL import Image

    cfg = G.GenerateConfig(model="wan", checkpoint=str(wan_dir), prompt="ultrasound of the liver", name="liver",
                           out=str(tmp_path), **{**TINY, "num_frames": 1})
    res = G.generate(cfg, progress=False)
    assert [p.name for p in res["written"]] == ["liver.png"]
    img = np.asarray(Image.open(tmp_path / "liver.png"))
    assert img.shape == (32, 32, 3) and json.loads((tmp_path / "liver.json").read_text())["frames"] == 1
    assert G.generate(cfg, progress=False)["skipped"] == [tmp_path / "liver.png"]  # resumable like videos

    long = " ".join(["echocardiogram"] * 20)  # 21 tokens > 16
    with pytest.raises(ValueError, match="21 tokens, over the text encoder's 16"):
        G.generate(G.GenerateConfig(model="wan", checkpoint=str(wan_dir), prompt=long, out=str(tmp_path / "l"), **TINY),
                   progress=False)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([long, "the heart"]))
    steps = []
    res = G.generate(G.GenerateConfig(model="wan", checkpoint=str(wan_dir), batch=str(prompts), out=str(tmp_path / "b"),
                                      **TINY), progress=False, on_step=lambda i, n: steps.append((i, n)))
    assert len(res["written"]) == 1 and list(res["failed"]) == ["0000-echocardiogram-echocardiogram-echocardiogram-"
                                                                 "echocardiogram-echocardiogram-echocardiogram"]
    assert steps == [(1, 2), (2, 2)]  # the progress callback sees every denoising step
    with pytest.raises(ValueError, match="4k \\+ 1"):
        G.GenerateConfig(model="wan", checkpoint="x", prompt="a", num_frames=4)


def first_frame(path, w, h):
    from PIL import Image

    yy, xx = np.mgrid[0:h, 0:w]
    Image.fromarray(np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], -1).astype(np.uint8)).save(path)
    return path


def test_image_to_video_matches_diffusers_and_checks_the_image(wan_i2v_dir, wan_dir, tmp_path):
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    img = first_frame(tmp_path / "frame.png", 32, 32)
    cfg = G.GenerateConfig(model="wan", checkpoint=str(wan_i2v_dir), prompt="the heart", image=str(img),
                           out=str(tmp_path / "o"), **TINY)
    pipe, _ = G.load_wan_for_generation(cfg, torch.device("cpu"))
    ours = G.wan_video(pipe, G.prompt_specs(cfg)[0], "blurry", G.wan_settings(cfg))
    ref_pipe = WanImageToVideoPipeline.from_pretrained(wan_i2v_dir)
    ref_pipe.set_progress_bar_config(disable=True)
    ref = ref_pipe(image=Image.open(img).convert("RGB"), prompt="the heart", negative_prompt="blurry", height=32,
                   width=32, num_frames=5, num_inference_steps=2, guidance_scale=5.0,
                   generator=torch.Generator().manual_seed(0), output_type="np", max_sequence_length=16).frames[0]
    from medvid.t2v.wan import frames_to_uint8

    np.testing.assert_array_equal(ours, frames_to_uint8(ref))

    wide = first_frame(tmp_path / "wide.png", 64, 32)
    with pytest.raises(ValueError, match="wide.png is 64x32.*stretched.*Crop the image"):
        G.load_first_frame(str(wide), 32, 32)
    with pytest.raises(ValueError, match="less than half"):
        G.load_first_frame(str(first_frame(tmp_path / "tiny.png", 8, 8)), 32, 32)
    # Without --height/--width the size follows the image: 2:1 at the requested area (32x32 here)
    auto = G.GenerateConfig(model="wan", checkpoint=str(wan_i2v_dir), prompt="the heart", image=str(wide),
                            out=str(tmp_path / "a"), num_frames=5, steps=1, max_sequence_length=16)
    s = {**G.wan_settings(auto), "height": 32, "width": 32}
    assert G.wan_video(pipe, G.prompt_specs(auto)[0], None, s).shape == (5, 16, 48, 3)
    with pytest.raises(ValueError, match="text-to-video model"):
        G.load_wan_for_generation(G.GenerateConfig(model="wan", checkpoint=str(wan_dir), prompt="x", image=str(img)),
                                  torch.device("cpu"))
