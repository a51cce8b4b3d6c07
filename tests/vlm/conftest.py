"""A tiny randomly initialised Qwen2-VL saved to a local folder, built offline.

The tokenizer is a word-level ``tokenizers`` model over a small vocabulary plus Qwen2-VL's special
tokens, so the processor expands image placeholders exactly as for the real model; the output
text is gibberish, which is what the parser must survive.
"""

import numpy as np
import pytest
import torch

from medvid.utils.video import write_mp4

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
WORDS = ("system user assistant the video shows a heart echo ultrasound probe valve text_alignment "
         "medical_plausibility visual_quality score reason 1 2 3 4 5 : , . { } \" brief detailed").split()
CHAT = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
        "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
        "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_qwen2vl(folder):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers import Qwen2VLImageProcessorPil

    vocab = {w: i for i, w in enumerate(dict.fromkeys(["[UNK]", *SPECIALS, *WORDS]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([AddedToken(s, special=True) for s in SPECIALS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="<|endoftext|>",
                                   eos_token="<|im_end|>")
    fast.chat_template = CHAT
    images = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                      temporal_patch_size=2)
    ids = fast.convert_tokens_to_ids
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         eos_token_id=ids("<|im_end|>"), pad_token_id=fast.pad_token_id),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    images.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT)
    return folder


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="session")
def tiny_vlm(tiny_vlm_dir):
    from medvid.vlm.model import VisionLanguageModel

    return VisionLanguageModel(tiny_vlm_dir, image_size=64)


def make_clip(path, seed=0, t=10, h=48, w=64):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8)
    write_mp4(frames, path, fps=8)
    return path
