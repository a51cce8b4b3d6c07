"""Layers: local attention vs dense banded attention, sin-cos tables vs MAE's numpy formula."""

import math

import numpy as np
import pytest
import torch

from medvid.models.layers import LocalAttention, TimestepEmbedder, apply_rotary, local_attention, sincos_2d


def _dense_band(q, k, v, window, back, fwd):
    n = q.shape[1]
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    band = (j >= i - window * back) & (j <= i + window * fwd)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(s.masked_fill(~band, -math.inf), dim=-1) @ v


@pytest.mark.parametrize("n,window,back,fwd", [(64, 8, 1, 1), (37, 8, 1, 1), (5, 8, 1, 1), (30, 4, 2, 1), (16, 3, 0, 2)])
def test_local_attention_equals_dense_band(n, window, back, fwd):
    q, k, v = (torch.randn(3, n, 16, dtype=torch.float64) for _ in range(3))
    out = local_attention(q, k, v, window, back, fwd)
    ref = _dense_band(q, k, v, window, back, fwd)
    assert out.shape == ref.shape and (out - ref).abs().max() < 1e-12
    # the band matters: full attention differs
    assert (out - _dense_band(q, k, v, n, 1, 1)).abs().max() > 1e-3 or n <= window


def test_local_attention_module_rotary_and_shapes():
    att = LocalAttention(32, window_size=8).double()
    assert sum(p.numel() for p in att.parameters()) == 3 * 32 * 32  # q/k/v, no bias, no output projection
    x = torch.randn(2, 64, 32, dtype=torch.float64)
    q, k, v = att.qkv(x).chunk(3, -1)
    # rotary scores depend on relative position only: rotating by a shifted position keeps q.k
    from medvid.models.layers import rotary_tables

    cos, sin = rotary_tables(70, 32, "cpu", torch.float64)
    a = (apply_rotary(q[:, 3:4], cos[3:4], sin[3:4]) * apply_rotary(k[:, 5:6], cos[5:6], sin[5:6])).sum()
    b = (apply_rotary(q[:, 3:4], cos[9:10], sin[9:10]) * apply_rotary(k[:, 5:6], cos[11:12], sin[11:12])).sum()
    assert torch.allclose(a, b)
    cos, sin = rotary_tables(64, 32, "cpu", torch.float64)
    ref = _dense_band(apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v, 8, 1, 1)
    assert torch.allclose(att(x), ref, atol=1e-12)


def _mae_2d(embed_dim, grid_size):
    """MAE's get_2d_sincos_pos_embed (numpy), written out."""
    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32)), 0)
    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


def test_sincos_matches_mae():
    assert np.allclose(sincos_2d(64, 8, 8).numpy(), _mae_2d(64, 8), atol=1e-6)


def test_timestep_embedding_formula():
    t = torch.tensor([0.0, 10.0, 999.0])
    emb = TimestepEmbedder.timestep_embedding(t, 8)
    freqs = torch.tensor([10000 ** (-i / 4) for i in range(4)])
    assert torch.allclose(emb, torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], 1), atol=1e-5)
