"""STDiT: the spatio-temporal attention video DiT that Latte and Endora use, as MedSora's baseline.

Each block: spatial self-attention within a frame, temporal self-attention across the video's frames
at each position, then an MLP, all three under adaLN-Zero (9 modulations), optional cross-attention
to text tokens. Same widths, depths, patch and call signature as MedSora. Joint-training images
attend only to themselves in the temporal branch (one-frame clips).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Conditioning, CrossAttention, Layout, modulate, sincos_1d
from .medsora import VideoBackbone, temporal_mix


class Attention(nn.Module):
    """Multi-head self-attention (timm/DiT layout: fused qkv with bias, output projection)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, D)."""
        b, l, d = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, l, d))


class STDiTBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, attn_dropout: float,
                 context_dim: int | None):
        super().__init__()
        d = hidden_size
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn_s = Attention(d, num_heads, attn_dropout)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn_t = Attention(d, num_heads, attn_dropout)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 9 * d))
        self.cross_attn = CrossAttention(d, context_dim, num_heads) if context_dim else None

    def forward(self, x: torch.Tensor, cond: Conditioning, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, F, N, D) -> (x, spatial feature (B, F, N, D))."""
        b, f, n, d = x.shape
        (shift_s, scale_s, gate_s, shift_t, scale_t, gate_t, shift_m, scale_m, gate_m) = (
            self.adaLN_modulation(cond.c)[:, None, None].chunk(9, dim=-1))  # each (B, 1, 1, D)
        h = modulate(self.norm1(x), shift_s, scale_s)
        x = x + gate_s * self.attn_s(h.reshape(b * f, n, d)).view(b, f, n, d)  # within each frame
        feat = x  # the spatial-attention branch's output in the residual stream
        x = x + gate_t * temporal_mix(self.attn_t, modulate(self.norm2(x), shift_t, scale_t), layout)
        x = x + gate_m * self.mlp(modulate(self.norm3(x), shift_m, scale_m))
        if self.cross_attn is not None and cond.context is not None:
            x = x + self.cross_attn(x.reshape(b, f * n, d), cond.context, cond.context_mask).view(b, f, n, d)
        return x, feat


class STDiT(VideoBackbone):
    """Spatio-temporal DiT baseline; ``headdim`` is the attention head width."""

    def __init__(self, input_size=16, in_channels=16, patch_size=2, hidden_size=512, depth=12, learn_sigma=True,
                 num_classes=0, class_dropout_prob=0.1, context_dim=None, headdim=64, mlp_ratio=4.0,
                 attn_dropout=0.0):
        super().__init__()
        self.config = dict(input_size=input_size, in_channels=in_channels, patch_size=patch_size,
                           hidden_size=hidden_size, depth=depth, learn_sigma=learn_sigma, num_classes=num_classes,
                           class_dropout_prob=class_dropout_prob, context_dim=context_dim, headdim=headdim,
                           mlp_ratio=mlp_ratio, attn_dropout=attn_dropout)
        self._init_common(input_size, in_channels, patch_size, hidden_size, depth, learn_sigma, num_classes,
                          class_dropout_prob, context_dim)
        if headdim < 1 or hidden_size % headdim:
            raise ValueError(f"headdim={headdim} must divide hidden_size={hidden_size}")
        self.headdim, self.mlp_ratio, self.attn_dropout = headdim, mlp_ratio, attn_dropout
        heads = hidden_size // headdim
        self.blocks = nn.ModuleList(
            STDiTBlock(hidden_size, heads, mlp_ratio, attn_dropout, context_dim) for _ in range(depth))
        self._init_weights()

    def _embed(self, x, t, y, layout):
        tok, c = super()._embed(x, t, y, layout)
        if layout.video_frames > 1:  # Latte's fixed temporal sin-cos table, video frames only
            pos_t = sincos_1d(self.hidden_size, torch.arange(layout.video_frames)).to(tok.device, tok.dtype)
            tok = torch.cat([tok[:, : layout.video_frames] + pos_t[None, :, None], tok[:, layout.video_frames:]], 1)
        return tok, c
