"""Caption-conditioned tiny MedSora: text conditioner -> cross-attention -> CFG sampling."""

import json

import pytest
import torch

from medvid.t2v.text import build_text_conditioner

from .conftest import text_config

LATENT = (2, 4, 8, 8)  # (F, C, h, w)


def tiny_medsora(context_dim):
    from medvid.models import create_model

    torch.manual_seed(0)
    model = create_model("medsora-s", depth=2, hidden_size=64, input_size=8, in_channels=4, d_state=16, headdim=32,
                         context_dim=context_dim)
    # Zero-initialised output layers (adaLN-zero) would make every caption give the same output at
    # init; give all weights random values so the test sees the conditioning path.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def parts(t5_dir):
    text = build_text_conditioner(text_config(t5_dir))
    return text, tiny_medsora(text.context_dim)


def test_different_captions_give_different_outputs(parts):
    text, model = parts
    x, t = torch.randn(1, *LATENT), torch.tensor([500])
    outs = []
    for cap in ["echocardiogram apical four chamber view", "colonoscopy of the sigmoid colon"]:
        ctx, mask = text([cap], train=False)
        with torch.no_grad():
            outs.append(model(x, t, context=ctx, context_mask=mask))
    assert (outs[0] - outs[1]).abs().max() > 1e-3
    ctx, mask = text(["echocardiogram apical four chamber view"], train=False)
    with torch.no_grad():
        again = model(x, t, context=ctx, context_mask=mask)
    torch.testing.assert_close(again, outs[0])


def test_guidance_scale_one_is_the_conditional_model(parts):
    from medvid.diffusion import GaussianDiffusion, guided, sample
    from medvid.t2v.generate import medsora_latents

    text, model = parts
    diffusion = GaussianDiffusion(num_timesteps=1000, learn_sigma=True)
    ctx, mask = text(["ultrasound of the liver"], train=False)
    nctx, nmask = text.negative("blurry low quality", 1)
    cond = lambda x, t: model(x, t, context=ctx, context_mask=mask)  # noqa: E731
    uncond = lambda x, t: model(x, t, context=nctx, context_mask=nmask)  # noqa: E731
    x, t = torch.randn(1, *LATENT), torch.tensor([700])
    with torch.no_grad():
        torch.testing.assert_close(guided(cond, uncond, 1.0)(x, t), cond(x, t), rtol=1e-5, atol=1e-5)
        assert (guided(cond, uncond, 4.0)(x, t) - cond(x, t)).abs().max() > 1e-3

    m = {"model": model, "text": text, "diffusion": diffusion, "latent_shape": LATENT}
    s = {"sampler": "ddim", "steps": 4, "guidance": 1.0}
    z1 = medsora_latents(m, "ultrasound of the liver", "blurry low quality", 9, s)
    # The same sampling run with the unconditional branch evaluated and weighted by 1.
    noise = torch.randn((1, *LATENT), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = sample(guided(cond, uncond, 1.0), noise.shape, diffusion, sampler="ddim", steps=4, noise=noise)
    torch.testing.assert_close(z1, ref, rtol=1e-4, atol=1e-4)
    z4 = medsora_latents(m, "ultrasound of the liver", "blurry low quality", 9, {**s, "guidance": 4.0})
    assert (z4 - z1).abs().max() > 1e-3
    z4_null = medsora_latents(m, "ultrasound of the liver", None, 9, {**s, "guidance": 4.0})
    assert (z4 - z4_null).abs().max() > 1e-4  # the negative prompt replaces the null branch


def test_caption_dropout_feeds_the_model_the_null_embedding(t5_dir, parts):
    _, model = parts
    text = build_text_conditioner(text_config(t5_dir, dropout=1.0))
    ctx, mask = text(["colonoscopy of the sigmoid colon"], train=True)
    null_ctx, null_mask = text.null(1)
    x, t = torch.randn(1, *LATENT), torch.tensor([300])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, context=ctx, context_mask=mask),
                                   model(x, t, context=null_ctx, context_mask=null_mask))


def test_generate_medsora_from_a_text_checkpoint(t5_dir, parts, tmp_path):
    """A checkpoint laid out as `medvid train` writes it (model + EMA, model config, VAE, text config)."""
    from medvid.t2v.generate import GenerateConfig, generate
    from medvid.utils.checkpoint import save_checkpoint

    _, model = parts
    sd = model.state_dict()
    state = {"model_config": dict(model.config), "latent_shape": list(LATENT), "learn_sigma": True,
             "diffusion": {"num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
             "vae": "tiny-random(seed=0)", "num_classes": 0}
    config = {"text": {"enabled": True, "encoder": "t5", "encoder_path": str(t5_dir), "caption_field": "caption",
                       "dropout": 0.1, "max_length": 16, "cache_dir": None},
              "sample": {"steps": 250, "fps": 8.0}}
    save_checkpoint(tmp_path / "run", 10, {"model": sd, "ema": sd}, state=state, config=config)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps(["echocardiogram apical four chamber view",
                                   {"prompt": "ultrasound of the liver", "negative_prompt": "blurry", "name": "liver"}]))
    out = tmp_path / "videos"
    result = generate(GenerateConfig(model="medsora", checkpoint=str(tmp_path / "run"), batch=str(prompts),
                                     out=str(out), steps=3, guidance=3.0), progress=False)
    assert len(result["written"]) == 2
    side = json.loads((out / "liver.json").read_text())
    assert side["model"] == "medsora" and side["negative_prompt"] == "blurry"
    assert side["settings"]["guidance"] == 3.0 and side["settings"]["steps"] == 3 and side["frames"] >= 2
    assert generate(GenerateConfig(model="medsora", checkpoint=str(tmp_path / "run"), batch=str(prompts),
                                   out=str(out), steps=3, guidance=3.0), progress=False)["written"] == []
    with pytest.raises(ValueError, match="--height"):
        generate(GenerateConfig(model="medsora", checkpoint=str(tmp_path / "run"), prompt="x", out=str(tmp_path / "o"),
                                height=64), progress=False)

    # --frames 1: one latent frame sampled as a joint-training image and decoded alone -> a PNG
    import numpy as np
    from PIL import Image

    still = generate(GenerateConfig(model="medsora", checkpoint=str(tmp_path / "run"), prompt="ultrasound of the liver",
                                    name="liver", out=str(tmp_path / "img"), steps=3, num_frames=1), progress=False)
    assert [p.name for p in still["written"]] == ["liver.png"]
    img = np.asarray(Image.open(still["written"][0]))
    side = json.loads((tmp_path / "img" / "liver.json").read_text())
    assert img.ndim == 3 and img.shape[2] == 3 and side["frames"] == 1 and side["settings"]["num_images"] == 1
    assert img.shape[:2] == (side["height"], side["width"]) and img.std() > 0
    with pytest.raises(ValueError, match="--frames"):
        generate(GenerateConfig(model="medsora", checkpoint=str(tmp_path / "run"), prompt="x", out=str(tmp_path / "o"),
                                num_frames=5), progress=False)
    config["text"]["enabled"] = False
    save_checkpoint(tmp_path / "plain", 1, {"model": sd, "ema": sd}, state=state, config=config)
    with pytest.raises(ValueError, match="without text"):
        generate(GenerateConfig(model="medsora", checkpoint=str(tmp_path / "plain"), prompt="x", out=str(tmp_path / "o")),
                 progress=False)
