"""Tiny, randomly initialised text encoders and a tiny Wan2.1 pipeline, built offline.

The tokenizer is a word-level vocabulary trained here with the `tokenizers` library and wrapped
as a transformers fast tokenizer, so nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch

CORPUS = [
    "laparoscopic cholecystectomy the grasper retracts the gallbladder fundus",
    "echocardiogram apical four chamber view of a beating heart",
    "colonoscopy of the sigmoid colon with a small polyp",
    "ultrasound of the liver with a cyst",
    "distorted blurry low quality watermark text overlay static image worst jpeg artifacts",
    "deformed extra limbs bad anatomy",
]


def make_tokenizer(bos: bool = False):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"] + (["<s>"] if bos else [])
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=specials))
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 3), ("</s>", 1)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>"
        )
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def make_t5(vocab_size: int, d_model: int = 32):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    cfg = UMT5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8,
    )
    return UMT5EncoderModel(cfg).eval()


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-t5")
    tok = make_tokenizer()
    make_t5(len(tok)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    from transformers import CLIPTextConfig, CLIPTextModel

    d = tmp_path_factory.mktemp("tiny-clip")
    tok = make_tokenizer(bos=True)
    torch.manual_seed(0)
    cfg = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=32, bos_token_id=3, eos_token_id=1, pad_token_id=0,
    )
    CLIPTextModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def make_wan_pipeline():
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    tok = make_tokenizer()
    text_encoder = make_t5(len(tok))
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    return WanPipeline(
        tokenizer=tok, text_encoder=text_encoder, vae=vae, transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )


@pytest.fixture(scope="session")
def wan_dir(tmp_path_factory):
    """A tiny Wan2.1 pipeline saved in the diffusers folder layout (like Wan2.1-T2V-1.3B-Diffusers)."""
    d = tmp_path_factory.mktemp("tiny-wan")
    make_wan_pipeline().save_pretrained(d)
    return d


def text_config(encoder_path, **kw):
    """The trainer's TextConfig for a tiny local encoder (max_length 16 keeps the tests fast)."""
    from medvid.training.config import TextConfig

    return TextConfig(**{"enabled": True, "encoder": "t5", "encoder_path": str(encoder_path), "max_length": 16, **kw})


def make_wan_i2v_pipeline():
    """A tiny Wan2.1 image-to-video pipeline: 36-channel DiT with image attention, tiny random CLIP
    vision tower (the real one, open-clip ViT-H, cannot be had offline)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    tok = make_tokenizer()
    text_encoder = make_t5(len(tok))
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    torch.manual_seed(0)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                                     num_attention_heads=2, image_size=32, patch_size=8, projection_dim=8))
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, image_dim=8, added_kv_proj_dim=24,
    )
    return WanImageToVideoPipeline(tokenizer=tok, text_encoder=text_encoder, vae=vae, transformer=transformer,
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), image_encoder=image_encoder,
                                   image_processor=processor)


@pytest.fixture(scope="session")
def wan_i2v_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-wan-i2v")
    make_wan_i2v_pipeline().save_pretrained(d)
    return d
