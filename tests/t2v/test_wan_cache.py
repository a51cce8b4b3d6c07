"""`medvid wan-cache` + training from it, validation videos, image-to-video LoRA training."""

import json

import numpy as np
import pytest
import torch

from medvid.t2v import wan as W
from medvid.t2v.wan_cache import build_cache
from medvid.t2v.wan_train import train_wan

from .test_wan_train import clips, make_cfg  # noqa: F401  (module fixture)


def no_encoders(monkeypatch):
    """Fail if anything loads the full pipeline (VAE + text encoder) during training."""
    def boom(*a, **k):
        raise AssertionError("training from the cache loaded the VAE / text encoder")

    monkeypatch.setattr(W, "load_wan_pipeline", boom)


def test_cache_is_resumable_and_training_from_it_matches_training_without(wan_dir, clips, tmp_path, monkeypatch):  # noqa: F811
    cfg = make_cfg(wan_dir, clips, max_steps=3, batch_size=1, save_every=3)
    first = build_cache(cfg, tmp_path / "cache", dtype="float32", shard_size=1, progress=False)
    assert (first["encoded"], first["total_clips"], first["skipped"]) == (2, 2, {})
    assert len(list((tmp_path / "cache").glob("shard-*.safetensors"))) == 2
    again = build_cache(cfg, tmp_path / "cache", dtype="float32", progress=False)
    assert (again["encoded"], again["already_done"]) == (0, 2)  # resumed: nothing re-encoded

    rows = [json.loads(line) for line in (tmp_path / "cache" / "index.jsonl").read_text().splitlines()]
    assert {r["bucket"] == [32, 32, 5] for r in rows} == {True} and all(r["text_len"] < 16 for r in rows)

    direct = train_wan(cfg, tmp_path / "direct")
    no_encoders(monkeypatch)
    cached = train_wan(make_cfg(wan_dir, clips, max_steps=3, batch_size=1, save_every=3,
                                data={"cache": str(tmp_path / "cache")}), tmp_path / "cached")
    assert cached["cached"] and not direct["cached"]
    # Epoch 0 (2 clips): the same crops and noise as encoding on the fly, so the same losses. (Later
    # epochs differ by design: the cache keeps epoch 0's crop of each clip.)
    np.testing.assert_allclose(cached["losses"][:2], direct["losses"][:2], rtol=1e-4)
    assert cached["step"] == 3

    with pytest.raises(ValueError, match="other settings.*buckets"):
        train_wan(make_cfg(wan_dir, clips, max_steps=1, data={"cache": str(tmp_path / "cache"),
                                                              "buckets": [[32, 32, 5], [16, 32, 5]]}), tmp_path / "x")
    with pytest.raises(ValueError, match="wan-cache"):
        train_wan(make_cfg(wan_dir, clips, max_steps=1, data={"cache": str(tmp_path / "none")}), tmp_path / "y")


def test_long_captions_and_short_clips_are_skipped_not_fatal(wan_dir, clips, tmp_path):  # noqa: F811
    long = " ".join(["echocardiogram"] * 20)
    (clips / "mixed.csv").write_text(f"video,prompt\nclip0.mp4,{long}\nclip1.mp4,the liver\n")
    cfg = make_cfg(wan_dir, clips, max_steps=1, batch_size=1, data={"path": str(clips / "mixed.csv")})
    s = build_cache(cfg, tmp_path / "c", dtype="float32", progress=False)
    assert s["encoded"] == 1 and "21 tokens, over the text encoder's 16" in s["skipped"][str(clips / "clip0.mp4")]
    summary = train_wan(cfg, tmp_path / "run")
    assert list(summary["skipped"]) == [str(clips / "clip0.mp4")] and summary["step"] == 1
    short = make_cfg(wan_dir, clips, max_steps=1, data={"buckets": [[32, 32, 17]]})
    with pytest.raises(ValueError, match="no clip fits.*shortest bucket needs 17"):
        train_wan(short, tmp_path / "short")


def test_validation_videos_use_ema_weights_and_reach_tensorboard(wan_dir, clips, tmp_path, monkeypatch):  # noqa: F811
    from diffusers import WanPipeline

    import medvid.t2v.wan_validate as V

    shown = {}
    real_tb = V.tb_video
    monkeypatch.setattr(V, "tb_video", lambda w, tag, f, step, fps=16.0: (shown.__setitem__((tag, step), f),
                                                                          real_tb(w, tag, f, step, fps)))
    val = {"every": 2, "prompts": [{"prompt": "the heart", "name": "heart", "seed": 4}], "steps": 2, "guidance": 4.0}
    cfg = make_cfg(wan_dir, clips, max_steps=3, batch_size=1, ema_decay=0.5, optim={"lr": 3e-2}, validation=val)
    train_wan(cfg, tmp_path / "run")
    assert sorted(shown) == [("validation/heart", 2), ("validation/heart", 3)]
    folder = tmp_path / "run" / "validation" / "step-00000003"
    side = json.loads((folder / "heart.json").read_text())
    assert (folder / "heart.mp4").is_file() and side["weights"] == "ema" and side["prompt"] == "the heart"

    def render(lora):
        p = WanPipeline.from_pretrained(wan_dir)
        p.set_progress_bar_config(disable=True)
        p.load_lora_weights(tmp_path / "run" / lora)
        return W.frames_to_uint8(p("the heart", negative_prompt=W.WAN_NEGATIVE_PROMPT, height=32, width=32, num_frames=5,
                                   num_inference_steps=2, guidance_scale=4.0, generator=torch.Generator().manual_seed(4),
                                   output_type="np", max_sequence_length=16).frames[0])

    got = shown[("validation/heart", 3)].astype(int)
    ema, raw = render("lora-ema").astype(int), render("lora").astype(int)
    assert np.abs(got - ema).max() <= 1  # rendered with the EMA weights...
    assert np.abs(got - ema).mean() < np.abs(got - raw).mean()  # ...not the raw ones

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(tmp_path / "run" / "tb"))
    ev.Reload()
    assert "validation/heart" in ev.Tags()["images"] and "train/loss" in ev.Tags()["scalars"]
    assert ev.Images("validation/heart")[0].encoded_image_string[:6] == b"GIF89a"

    # From a cache: the prompts were encoded by wan-cache; the text encoder is never loaded.
    build_cache(cfg, tmp_path / "cache", dtype="float32", progress=False)
    no_encoders(monkeypatch)
    shown.clear()
    train_wan(make_cfg(wan_dir, clips, max_steps=2, batch_size=1, validation=val, data={"cache": str(tmp_path / "cache")}),
              tmp_path / "cached")
    assert (tmp_path / "cached" / "validation" / "step-00000002" / "heart.mp4").is_file() and shown
    other = {**val, "prompts": ["a prompt the cache has not seen"]}
    with pytest.raises(ValueError, match="no embeddings for validation prompt"):
        train_wan(make_cfg(wan_dir, clips, max_steps=1, validation=other, data={"cache": str(tmp_path / "cache")}),
                  tmp_path / "z")


def test_image_to_video_lora_trains_with_first_frame_conditioning(wan_i2v_dir, clips, tmp_path, monkeypatch):  # noqa: F811
    seen = []
    real = W.flow_matching_loss

    def spy(transformer, latents, embeds, sched, gen, condition=None, image_embeds=None):
        seen.append((condition, image_embeds))
        return real(transformer, latents, embeds, sched, gen, condition, image_embeds)

    monkeypatch.setattr(W, "flow_matching_loss", spy)
    cfg = make_cfg(wan_i2v_dir, clips, max_steps=2, batch_size=1, save_every=2)
    summary = train_wan(cfg, tmp_path / "run")
    assert summary["image_to_video"] and np.isfinite(summary["losses"]).all()
    cond, img = seen[0]
    assert cond.shape == (1, 4 + 16, 2, 4, 4) and img.shape == (1, 17, 8)  # mask + first-frame latents; CLIP tokens
    assert torch.all(cond[:, :4, 0] == 1) and torch.all(cond[:, :4, 1:] == 0)  # the first latent frame is given

    # The condition is what WanImageToVideoPipeline.prepare_latents builds from the same frame.
    from diffusers import WanImageToVideoPipeline

    from medvid.t2v.wan_data import load_clip

    pipe = WanImageToVideoPipeline.from_pretrained(wan_i2v_dir)
    frame = load_clip(str(clips / "clip0.mp4"), 5, 32, 32)[0]  # (3, H, W) in [-1, 1]
    _, ref = pipe.prepare_latents(frame[None], 1, 16, 32, 32, 5, torch.float32, torch.device("cpu"),
                                  torch.Generator().manual_seed(0))
    torch.testing.assert_close(W.i2v_condition(pipe.vae, frame[None], 5), ref)

    # The exported LoRA loads into the image-to-video pipeline; a cache of an I2V model holds the conditions.
    pipe.load_lora_weights(tmp_path / "run" / "lora")
    s = build_cache(cfg, tmp_path / "cache", dtype="float32", progress=False)
    assert s["kind"] == "i2v"
    seen.clear()
    no_encoders(monkeypatch)
    cached = train_wan(make_cfg(wan_i2v_dir, clips, max_steps=2, batch_size=1, data={"cache": str(tmp_path / "cache")}),
                       tmp_path / "cached")
    np.testing.assert_allclose(cached["losses"], summary["losses"], rtol=1e-4)
