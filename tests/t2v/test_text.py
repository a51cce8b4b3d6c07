import pytest
import torch

from medvid.t2v.text import TextConditioner, build_text_conditioner
from medvid.utils.weights import MissingWeightsError

from .conftest import text_config


def test_t5_matches_diffusers_wan_prompt_encoding(t5_dir):
    """Our T5 path equals WanPipeline's own prompt encoding (same tokenizer, zero-padded tail)."""
    from diffusers import WanPipeline
    from transformers import AutoTokenizer, UMT5EncoderModel

    cond = build_text_conditioner(text_config(t5_dir))
    caps = ["the grasper retracts the gallbladder fundus", "echocardiogram of a beating heart"]
    ctx, mask = cond(caps, train=False)
    assert ctx.shape == (2, 16, 32) and mask.shape == (2, 16) and mask.dtype == torch.bool
    assert cond.context_dim == 32
    pipe = WanPipeline(tokenizer=AutoTokenizer.from_pretrained(t5_dir),
                       text_encoder=UMT5EncoderModel.from_pretrained(t5_dir),
                       vae=None, scheduler=None, transformer=None)
    ref = pipe._get_t5_prompt_embeds(caps, max_sequence_length=16, device=torch.device("cpu"))
    torch.testing.assert_close(ctx, ref.float(), rtol=1e-5, atol=1e-5)
    assert mask.sum(1).tolist() == [7, 6]  # words + </s>


def test_clip_encoder_and_context_dim(clip_dir):
    cond = build_text_conditioner(text_config(clip_dir, encoder="clip"))
    assert cond.context_dim == 24
    ctx, mask = cond(["ultrasound of the liver"], train=False)
    assert ctx.shape == (1, 16, 24)
    assert mask[0].sum() == 6  # <s> 4 words </s>
    assert torch.all(ctx[0, ~mask[0]] == 0)


def test_caption_dropout_gives_null_embedding(t5_dir):
    cond = build_text_conditioner(text_config(t5_dir, dropout=1.0))
    caps = ["ultrasound of the liver", "colonoscopy of the sigmoid colon"]
    null_ctx, null_mask = cond.null(2)
    empty_ctx, empty_mask = cond.encode(["", ""])
    torch.testing.assert_close(null_ctx, empty_ctx)  # null = encoding of ""
    assert torch.equal(null_mask, empty_mask) and null_mask.sum(1).tolist() == [1, 1]
    ctx, mask = cond(caps, train=True)
    torch.testing.assert_close(ctx, null_ctx)
    assert torch.equal(mask, null_mask)
    # Not at sampling time, and not with dropout 0.
    ctx_eval, _ = cond(caps, train=False)
    assert not torch.allclose(ctx_eval, null_ctx)
    cond.dropout = 0.0
    torch.testing.assert_close(cond(caps, train=True)[0], ctx_eval)


def test_caption_dropout_rate(t5_dir):
    cond = build_text_conditioner(text_config(t5_dir, dropout=0.3))
    caps = ["ultrasound of the liver"] * 400
    ctx, _ = cond(caps, train=True, generator=torch.Generator().manual_seed(1))
    null_ctx, _ = cond.null(1)
    dropped = (ctx - null_ctx).abs().flatten(1).amax(1) == 0
    assert 0.22 < dropped.float().mean().item() < 0.38


def test_negative_prompt(t5_dir):
    cond = build_text_conditioner(text_config(t5_dir))
    neg, neg_mask = cond.negative("blurry low quality watermark", 3)
    ref, ref_mask = cond.encode(["blurry low quality watermark"])
    assert neg.shape[0] == 3
    torch.testing.assert_close(neg[2:], ref)
    torch.testing.assert_close(cond.negative(None, 2)[0], cond.null(2)[0])
    with pytest.raises(ValueError, match="negative prompts"):
        cond.negative(["a", "b"], 3)


def test_text_embedding_cache(t5_dir, tmp_path, monkeypatch):
    cond = build_text_conditioner(text_config(t5_dir, cache_dir=str(tmp_path / "cache")))
    caps = ["ultrasound of the liver", "the heart", "ultrasound of the liver"]
    ctx, mask = cond(caps, train=False)
    files = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(files) == 2
    fresh = build_text_conditioner(text_config(t5_dir, cache_dir=str(tmp_path / "cache")))
    calls = []
    real = fresh._run_encoder
    monkeypatch.setattr(fresh, "_run_encoder", lambda c: calls.append(list(c)) or real(c))
    ctx2, mask2 = fresh(caps, train=False)
    assert calls == []  # every caption came from the cache
    torch.testing.assert_close(ctx2, ctx)
    assert torch.equal(mask2, mask)
    fresh(["a new caption"], train=False)
    assert calls == [["a new caption"]]
    # A different max_length is a different fingerprint, so the cache is not reused.
    other = build_text_conditioner(text_config(t5_dir, cache_dir=str(tmp_path / "cache"), max_length=8))
    assert other.cache.key("the heart") != fresh.cache.key("the heart")


def test_missing_and_wrong_folders(t5_dir, clip_dir, tmp_path):
    with pytest.raises(MissingWeightsError, match="encoder_path"):
        build_text_conditioner(text_config(tmp_path / "nope"))
    with pytest.raises(MissingWeightsError):
        build_text_conditioner(text_config(None))
    with pytest.raises(ValueError, match="model_type"):
        build_text_conditioner(text_config(clip_dir, encoder="t5"))
    with pytest.raises(ValueError, match="model_type"):
        build_text_conditioner(text_config(t5_dir, encoder="clip"))
    with pytest.raises(ValueError, match="text.encoder"):
        build_text_conditioner(text_config(t5_dir, encoder="bert"))
    with pytest.raises(ValueError, match="max_length"):
        build_text_conditioner(text_config(clip_dir, encoder="clip", max_length=64))  # the tiny CLIP has 32 positions
    with pytest.raises(ValueError, match="config.json"):
        build_text_conditioner(text_config(tmp_path))
    assert isinstance(build_text_conditioner(text_config(t5_dir)), TextConditioner)
