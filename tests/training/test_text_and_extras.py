"""Text-conditioned training and guided sampling, activation checkpointing, TensorBoard scalars."""

import json

import numpy as np
import pytest
import torch
from medvid_tinyrun import tiny_config

from medvid.sampling import sample_videos
from medvid.training import train
from medvid.training import trainer as trainer_mod
from medvid.utils.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """A tiny random UMT5 encoder with a word-level tokenizer trained here (nothing downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["blob 0 1 2 3 4 5 moving red", "a heart"],
                            trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    enc = UMT5EncoderModel(UMT5Config(vocab_size=len(fast), d_model=16, d_kv=8, d_ff=24, num_layers=1, num_heads=2,
                                      relative_attention_num_buckets=8))
    d = tmp_path_factory.mktemp("t5")
    enc.save_pretrained(d)
    fast.save_pretrained(d)
    return d


def test_text_conditioned_training_and_guided_sampling(tiny_data, t5_dir, tmp_path):
    cfg = tiny_config(tiny_data["latent_dir"], max_steps=2, **{
        "text": {"enabled": True, "encoder": "t5", "encoder_path": str(t5_dir), "max_length": 8, "dropout": 0.5}})
    train(cfg, tmp_path / "run")
    groups, state, _ = load_checkpoint(tmp_path / "run")
    assert state["model_config"]["context_dim"] == 16
    # Perturb the (zero-initialised) output heads so the condition visibly matters, then sample.
    from medvid.utils.checkpoint import save_checkpoint

    ema = {k: v + 0.05 * torch.randn_like(v) for k, v in groups["ema"].items()}
    _, _, config = load_checkpoint(tmp_path / "run")
    ck = save_checkpoint(tmp_path / "noisy", 1, {"ema": ema}, state, config)
    lat = lambda d: np.load(d / "video_0000.npz")["latents"]  # noqa: E731
    kw = dict(sampler="ddim", steps=3, caption="blob 3 moving")
    sample_videos(ck, 1, tmp_path / "g1", **kw)
    sample_videos(ck, 1, tmp_path / "g3", cfg_scale=3.0, **kw)
    sample_videos(ck, 1, tmp_path / "neg", cfg_scale=3.0, negative_prompt="a heart", **kw)
    assert not np.allclose(lat(tmp_path / "g1"), lat(tmp_path / "g3"), atol=1e-4)
    assert not np.allclose(lat(tmp_path / "g3"), lat(tmp_path / "neg"), atol=1e-4)


def test_activation_checkpointing_gives_the_same_training(tiny_data, tmp_path, monkeypatch):
    used = []
    real = trainer_mod.enable_grad_checkpointing
    monkeypatch.setattr(trainer_mod, "enable_grad_checkpointing", lambda m: used.append(1) or real(m))
    train(tiny_config(tiny_data["latent_dir"], max_steps=2), tmp_path / "plain")
    train(tiny_config(tiny_data["latent_dir"], max_steps=2, **{"model.grad_checkpointing": True}), tmp_path / "ckpt")
    assert used == [1]
    rows = [[json.loads(ln) for ln in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in ("plain", "ckpt")]
    for key in ("loss", "grad_norm"):
        assert [r[key] for r in rows[0]] == pytest.approx([r[key] for r in rows[1]], rel=1e-6)


def test_tensorboard_scalars_and_cpu_stays_fp32(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tiny_data["latent_dir"], max_steps=2, tensorboard=True, progress=True, mixed_precision="bf16")
    train(cfg, tmp_path)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/mse", "train/vb", "train/align", "train/lr", "train/grad_norm",
            "train/clips_per_s"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert all(v.dtype == torch.float32 for v in load_checkpoint(tmp_path)[0]["model"].values() if v.is_floating_point())
