"""Building blocks shared by MedSora and the STDiT baseline: embeddings, adaLN, attention layers."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Conditioning(NamedTuple):
    """Everything a block is conditioned on; new conditions go here, never into block signatures."""

    c: torch.Tensor  # (B, D) timestep (+ class) embedding, drives adaLN
    context: torch.Tensor | None = None  # (B, L, context_dim) text tokens
    context_mask: torch.Tensor | None = None  # (B, L) bool, True = keep


class Layout(NamedTuple):
    """How the F axis of a (B, F, N, D) token tensor splits into one video and single images."""

    video_frames: int  # leading frames that form the video
    num_images: int  # trailing independent images, each a one-frame clip
    h: int  # token grid height
    w: int  # token grid width


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN (DiT): x * (1 + scale) + shift, with shift/scale already broadcastable to x."""
    return torch.addcmul(shift, x, 1 + scale)


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """MAE's 1-D sin-cos table: pos (M,) -> (M, dim) = [sin(pos w), cos(pos w)], w_k = 10000^(-2k/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double()[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_2d(dim: int, gh: int, gw: int) -> torch.Tensor:
    """MAE/DiT 2-D sin-cos table for a gh x gw token grid, raster order: (gh*gw, dim).

    As in MAE's get_2d_sincos_pos_embed, the first half encodes the column, the second the row.
    """
    if dim % 4:
        raise ValueError(f"hidden_size must be a multiple of 4 for the 2-D sin-cos table, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols.reshape(-1)), sincos_1d(dim // 2, rows.reshape(-1))], dim=1)


class TimestepEmbedder(nn.Module):
    """DiT: sinusoidal frequency features (256) -> MLP -> hidden_size."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """DiT: class table with one extra row (id num_classes) = the null class for classifier-free guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)
        self.num_classes, self.dropout_prob = num_classes, dropout_prob

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout_prob
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


def rotary_tables(n: int, dim: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (n, dim) of rotary position embedding (RoFormer), rotate-half layout. Cached per size,
    device and dtype: every block of every step asks for the same tables (read-only)."""
    return _rotary_tables(n, dim, str(device), dtype)


@lru_cache(maxsize=64)
@torch.inference_mode(False)  # cached for training too: never an inference tensor, whoever asks first
def _rotary_tables(n, dim, device, dtype):
    inv_freq = 1.0 / 10000 ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)
    freqs = torch.arange(n, dtype=torch.float32, device=device)[:, None] * inv_freq[None]
    freqs = torch.cat([freqs, freqs], dim=-1)  # (n, dim)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def local_attention(q, k, v, window: int, look_backward: int = 1, look_forward: int = 1,
                    dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Exact-window, non-causal local attention (lucidrains' LocalAttention, exact_windowsize=True).

    Query i attends to keys j with i - window*look_backward <= j <= i + window*look_forward.
    Computed block-wise: queries in blocks of ``window`` look at their block and its neighbours,
    so the cost is linear in the sequence length. q, k, v: (B, N, d) -> (B, N, d).
    """
    b, n, d = q.shape
    nb = -(-n // window)  # number of blocks
    pad = nb * window - n
    lb, lf = look_backward, look_forward
    qb = F.pad(q, (0, 0, 0, pad)).view(b, nb, window, d)
    # keys/values padded by whole blocks on both sides, then the (lb + 1 + lf) neighbouring blocks
    kp = F.pad(k, (0, 0, lb * window, pad + lf * window)).view(b, nb + lb + lf, window, d)
    vp = F.pad(v, (0, 0, lb * window, pad + lf * window)).view(b, nb + lb + lf, window, d)
    kb = torch.cat([kp[:, i : i + nb] for i in range(lb + 1 + lf)], dim=2)  # (b, nb, K, d), K=(lb+1+lf)*window
    vb = torch.cat([vp[:, i : i + nb] for i in range(lb + 1 + lf)], dim=2)
    allowed = _band_mask(n, window, lb, lf, str(q.device))
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed, dropout_p=dropout_p if training else 0.0)
    return out.reshape(b, nb * window, d)[:, :n]


@lru_cache(maxsize=64)
@torch.inference_mode(False)
def _band_mask(n: int, window: int, lb: int, lf: int, device: str) -> torch.Tensor:
    """(nb, window, K) bool: which of a block's K neighbouring keys each of its queries may attend to."""
    nb = -(-n // window)
    qpos = torch.arange(nb * window, device=device).view(nb, window, 1)
    kpos = (torch.arange(nb, device=device)[:, None, None] - lb) * window + torch.arange(
        (lb + 1 + lf) * window, device=device
    ).view(1, 1, -1)  # (nb, 1, K)
    return (kpos >= 0) & (kpos < n) & (kpos >= qpos - window * lb) & (kpos <= qpos + window * lf)


class LocalAttention(nn.Module):
    """MedSora's per-frame attention: single head, rotary q/k, q/k/v without bias, no output projection."""

    def __init__(self, dim: int, window_size: int = 8, look_backward: int = 1, look_forward: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.window_size, self.look_backward, self.look_forward, self.dropout = (
            window_size, look_backward, look_forward, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D) tokens of one frame each -> (B, N, D)."""
        b, n, d = x.shape
        qk, v = self.qkv(x).split([2 * d, d], dim=-1)
        cos, sin = rotary_tables(n, d, x.device, x.dtype)
        q, k = apply_rotary(qk.view(b, n, 2, d), cos[:, None], sin[:, None]).unbind(2)  # q and k at once
        return local_attention(q, k, v, self.window_size, self.look_backward, self.look_forward,
                               self.dropout, self.training)


class CrossAttention(nn.Module):
    """Multi-head cross-attention from tokens to text tokens (PixArt-style, output projection zero-init)."""

    def __init__(self, dim: int, context_dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size {dim} must be divisible by the cross-attention heads {num_heads}")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, M, D), context: (B, L, C), mask: (B, L) bool True=keep -> residual update (B, M, D)."""
        b, m, d = x.shape
        h = self.num_heads
        q = self.q(self.norm(x)).view(b, m, h, d // h).transpose(1, 2)  # (B, h, M, d/h)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)  # (B, h, L, d/h)
        attn_mask = None
        if mask is not None:
            has_any = mask.any(dim=1)  # an all-padding prompt attends to nothing: its update is zero
            attn_mask = (mask | ~has_any[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.proj(out.transpose(1, 2).reshape(b, m, d))
        if mask is not None:
            out = out * has_any[:, None, None].to(out.dtype)
        return out


class FinalLayer(nn.Module):
    """DiT final layer: LayerNorm (no affine) + adaLN shift/scale + Linear to patch pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (B, F, N, D), c: (B, D) -> (B, F, N, p*p*out)."""
        shift, scale = self.adaLN_modulation(c)[:, None, None].chunk(2, dim=-1)  # (B, 1, 1, D) each
        return self.linear(modulate(self.norm_final(x), shift, scale))
