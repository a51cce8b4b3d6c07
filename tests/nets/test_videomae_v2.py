"""The original VideoMAE-v2 checkpoint layout, converted to transformers' VideoMAE, computes what
the original fine-tuning ViT computes (a reference forward written here from that code's
structure: tubelet Conv3d, sinusoid positions, pre-norm blocks with q/v bias, fc_norm(mean))."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from medvid.nets.videomae_v2 import convert_videomae_v2_state_dict
from medvid.nets.vision import VideoMAENet

D, HEADS, DEPTH, MLP, P, TUB, IMG, T = 16, 2, 2, 24, 8, 2, 16, 4


def random_v2_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    sd = {"patch_embed.proj.weight": r(D, 3, TUB, P, P), "patch_embed.proj.bias": r(D)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(D), b + "norm1.bias": r(D), b + "attn.qkv.weight": r(3 * D, D),
                   b + "attn.q_bias": r(D), b + "attn.v_bias": r(D), b + "attn.proj.weight": r(D, D),
                   b + "attn.proj.bias": r(D), b + "norm2.weight": 1 + r(D), b + "norm2.bias": r(D),
                   b + "mlp.fc1.weight": r(MLP, D), b + "mlp.fc1.bias": r(MLP), b + "mlp.fc2.weight": r(D, MLP),
                   b + "mlp.fc2.bias": r(D)})
    sd.update({"fc_norm.weight": 1 + r(D), "fc_norm.bias": r(D), "head.weight": r(5, D), "head.bias": r(5)})
    return sd


def sinusoid(n, d):
    pos = np.arange(n)[:, None] / np.power(10000, 2 * (np.arange(d) // 2) / d)[None]
    pos[:, 0::2], pos[:, 1::2] = np.sin(pos[:, 0::2]), np.cos(pos[:, 1::2])
    return torch.tensor(pos, dtype=torch.float32)[None]


def reference_forward_features(sd, x):
    """x: (B, 3, T, H, W) in [0, 1] -> fc_norm(mean of tokens)."""
    h = F.conv3d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=(TUB, P, P))
    h = h.flatten(2).transpose(1, 2)  # (B, N, D)
    h = h + sinusoid(h.shape[1], D)
    for i in range(DEPTH):
        b = f"blocks.{i}."
        y = F.layer_norm(h, (D,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-6)
        bias = torch.cat([sd[b + "attn.q_bias"], torch.zeros(D), sd[b + "attn.v_bias"]])
        q, k, v = F.linear(y, sd[b + "attn.qkv.weight"], bias).view(*y.shape[:2], 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) / math.sqrt(D // HEADS)).softmax(-1) @ v  # (B, heads, N, d)
        h = h + F.linear(a.transpose(1, 2).reshape(y.shape), sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        y = F.layer_norm(h, (D,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])), sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
        h = h + y
    return F.layer_norm(h.mean(1), (D,), sd["fc_norm.weight"], sd["fc_norm.bias"], eps=1e-6)


def test_converted_checkpoint_matches_reference_forward(tmp_path):
    sd = random_v2_state()
    torch.save({"module": sd}, tmp_path / "vit_v2.pth")
    net = VideoMAENet(tmp_path / "vit_v2.pth")  # the released .pth layout, loaded through the CD-FVD loader
    net.model.config.image_size = IMG
    net.resolution = IMG
    assert net.model.config.num_attention_heads == 16  # ViT-g default; this tiny test needs 2 heads
    cfg, hf = convert_videomae_v2_state_dict(sd, num_heads=HEADS, image_size=IMG, num_frames=T)
    from transformers import VideoMAEForVideoClassification

    model = VideoMAEForVideoClassification(cfg).eval()
    model.load_state_dict(hf, strict=True)
    net.model = model
    clips = torch.randint(0, 256, (2, T, IMG, IMG, 3), dtype=torch.uint8)
    x = clips.permute(0, 4, 1, 2, 3).float() / 255  # (B, 3, T, H, W)
    with torch.no_grad():
        torch.testing.assert_close(net(clips), reference_forward_features(sd, x), atol=1e-5, rtol=1e-4)
