"""MedSora: a video diffusion backbone of local attention, spiral spatial Mamba and temporal Mamba.

Per block (see docs and ../shared/reference/medsora.md), with adaLN-Zero over three branches:
  1. local attention within each frame (window 8, one window back and forward, exact window);
  2. spatial Mamba: one Mamba-2 input projection, regrouped into (frames x W) grids per row and
     (frames x H) grids per column; each grid is scanned along a spiral order and its reverse, the
     results put back in place and summed, and the two groupings fused by sigmoid gates;
  3. temporal Mamba: a plain Mamba-2 along the frame axis at each token position.
Joint-training images (the trailing ``num_images`` frames) are one-frame clips in every cross-frame
path: they never share a grid with the video or with each other, unlike the reference code.

Other choices, where the reference code is unclear or odd:
* spiral orders are gather indices of the actual spiral walk (the reference uses each cell's rank
  along the spiral as the gather index, i.e. the inverse permutation);
* rotary positions are the tokens' true raster positions in the frame (lucidrains' LocalAttention
  offsets query positions by one window inside its look-around buckets);
* q/k/v start from Xavier like every other Linear (the reference zero-initialises them);
* the spatial feature for flow alignment is the residual stream right after the spatial branch,
  as the reference's ``local_x``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .layers import (
    Conditioning,
    CrossAttention,
    FinalLayer,
    LabelEmbedder,
    Layout,
    LocalAttention,
    TimestepEmbedder,
    modulate,
    sincos_2d,
)
from .mamba2 import Mamba2, gather_rows, gather_rows_back
from .spiral import NUM_ORDERS, scan_indices


class GatedFusion(nn.Module):
    """y = sigmoid(W1 yw + b1) * yw + sigmoid(W2 yh + b2) * yh (MedSora's fusion of the two groupings)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate_F1 = nn.Linear(dim, dim)
        self.gate_F2 = nn.Linear(dim, dim)

    def forward(self, yw: torch.Tensor, yh: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate_F1(yw)) * yw + torch.sigmoid(self.gate_F2(yh)) * yh


class _Gather(torch.autograd.Function):
    """x.index_select(1, index) whose backward is a gather too: ``back`` is the inverse permutation and
    the ``fold`` copies of every row are summed (index_select's own backward zero-fills and scatters)."""

    @staticmethod
    def forward(ctx, x, index, back, fold):
        ctx.save_for_backward(back)
        ctx.fold = fold
        return gather_rows(x, index)

    @staticmethod
    def backward(ctx, g):
        (back,) = ctx.saved_tensors
        return gather_rows_back(g, back, ctx.fold), None, None, None


class SpiralMamba(nn.Module):
    """The spatial branch: one Mamba-2 whose input projection is shared by four spiral scans."""

    def __init__(self, dim: int, order: int, **mamba_kwargs):
        super().__init__()
        self.mixer = Mamba2(dim, **mamba_kwargs)
        if self.mixer.d_ssm != self.mixer.d_inner:
            raise ValueError("SpiralMamba: d_ssm must equal expand * d_model (no gated-MLP part)")
        self.gated_fusion = GatedFusion(dim)
        self.orders = (order % NUM_ORDERS, order % NUM_ORDERS + 1)  # a spiral and its reverse

    def _scan(self, xbcdt: torch.Tensor, z: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:
        """xbcdt (B, f*h*w, E), z (B, f*h*w, d_inner) in token order -> (B, 2, f*h*w, D): the rows and
        the columns grouping, each the out_proj of the sum of its two gated-normed scans."""
        b, m = xbcdt.shape[0], self.mixer
        out = []
        # One gather lists every scan's sequences (all four when the grid is square: equal lengths).
        xbc, dt = xbcdt.split([m.conv1d.in_channels, m.nheads], dim=-1)
        for gather, inverse, placed, s, length in scan_indices(f, h, w, self.orders, xbcdt.device):
            # The sequences of the S scans, (B*S*lines, length, .): dt gathered here, xBC inside the
            # convolution (which gathers its rows again in the backward instead of keeping a copy).
            dts = _Gather.apply(dt, gather, inverse, s).view(-1, length, m.nheads)
            y = m.ssm(xbc, dts, rows=(gather, inverse, s, length)).view(b, -1, m.d_inner)  # (B, S*f*h*w, d_inner)
            y = _Gather.apply(y, inverse, placed, 1).view(b, s // 2, 2, -1, m.d_inner)  # back in token order
            # out_proj is linear: each grouping's two directions are summed before projecting.
            out.append(m.gate_norm_out(y, z[:, None, None], dim=2))  # (B, S/2, f*h*w, D)
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)

    def forward(self, u: torch.Tensor, layout: Layout) -> torch.Tensor:
        """u: (B, F, N, D) -> (B, F, N, D)."""
        b, f, n, d = u.shape
        fv, ni, hh, ww = layout
        zxbcdt = self.mixer.in_proj(u)  # (B, F, N, E): projected once for all four scans
        z, xbcdt = zxbcdt.split([self.mixer.d_inner, zxbcdt.shape[-1] - self.mixer.d_inner], dim=-1)
        ys = []
        if fv:
            ys.append(self._scan(xbcdt[:, :fv].flatten(1, 2), z[:, :fv].flatten(1, 2), fv, hh, ww)
                      .view(b, 2, fv, n, -1))
        if ni:  # each image alone: (B*num_images, 1, H, W, .)
            y = self._scan(xbcdt[:, fv:].reshape(b * ni, n, -1), z[:, fv:].reshape(b * ni, n, -1), 1, hh, ww)
            ys.append(rearrange(y, "(b f) g n e -> b g f n e", b=b))
        y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=2)  # (B, 2, F, N, D)
        return self.gated_fusion(y[:, 0], y[:, 1])


def temporal_mix(mixer: nn.Module, x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Apply a sequence mixer along frames at each position; images are length-1 sequences.

    x: (B, F, N, D) -> (B, F, N, D). ``mixer`` maps (batch, length, D) -> same.
    """
    b, f, n, _ = x.shape
    fv = layout.video_frames
    parts = []
    if fv:
        v = mixer(rearrange(x[:, :fv], "b f n d -> (b n) f d"))  # (B*N, F_v, D)
        parts.append(rearrange(v, "(b n) f d -> b f n d", b=b))
    if layout.num_images:
        im = mixer(rearrange(x[:, fv:], "b f n d -> (b f n) 1 d"))  # (B*N_img*N, 1, D)
        parts.append(rearrange(im, "(b f n) 1 d -> b f n d", b=b, n=n))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class MedSoraBlock(nn.Module):
    def __init__(self, hidden_size: int, order: int, mamba_kwargs: dict, window_size: int, attn_dropout: float,
                 context_dim: int | None, num_heads: int):
        super().__init__()
        d = hidden_size
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 9 * d))
        self.attn = LocalAttention(d, window_size, 1, 1, attn_dropout)
        self.spatial_mamba = SpiralMamba(d, order, **mamba_kwargs)
        self.temporal_mamba = Mamba2(d, **mamba_kwargs)
        self.cross_attn = CrossAttention(d, context_dim, num_heads) if context_dim else None

    def forward(self, x: torch.Tensor, cond: Conditioning, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, F, N, D) -> (x, spatial feature (B, F, N, D))."""
        b, f, n, d = x.shape
        (shift_a, scale_a, gate_a, shift_s, scale_s, gate_s, shift_t, scale_t, gate_t) = (
            self.adaLN_modulation(cond.c)[:, None, None].chunk(9, dim=-1))  # each (B, 1, 1, D)
        h = modulate(self.norm1(x), shift_a, scale_a)
        h = self.attn(h.reshape(b * f, n, d)).view(b, f, n, d)  # per frame
        x = x + gate_a * h
        x = x + gate_s * self.spatial_mamba(modulate(self.norm2(x), shift_s, scale_s), layout)
        feat = x  # the residual stream after the spatial branch: what flow alignment supervises
        x = x + gate_t * temporal_mix(self.temporal_mamba, modulate(self.norm3(x), shift_t, scale_t), layout)
        if self.cross_attn is not None and cond.context is not None:
            x = x + self.cross_attn(x.reshape(b, f * n, d), cond.context, cond.context_mask).view(b, f, n, d)
        return x, feat


class VideoBackbone(nn.Module):
    """What MedSora and STDiT share: patch embedding, conditioning, input checks, final layer."""

    def _init_common(self, input_size, in_channels, patch_size, hidden_size, depth, learn_sigma, num_classes,
                     class_dropout_prob, context_dim):
        if input_size < 1 or patch_size < 1 or input_size % patch_size:
            raise ValueError(f"input_size ({input_size}) must be a positive multiple of patch_size ({patch_size})")
        if hidden_size < 4 or hidden_size % 4:
            raise ValueError(f"hidden_size must be a positive multiple of 4, got {hidden_size}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if context_dim is not None and context_dim < 1:
            raise ValueError(f"context_dim must be a positive int or None, got {context_dim}")
        self.input_size, self.in_channels, self.patch_size = input_size, in_channels, patch_size
        self.hidden_size, self.depth, self.learn_sigma = hidden_size, depth, learn_sigma
        self.num_classes, self.class_dropout_prob, self.context_dim = num_classes, class_dropout_prob, context_dim
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.x_embedder = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        g = input_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, g * g, hidden_size), requires_grad=False)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob) if num_classes > 0 else None
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)

    @torch.no_grad()
    def _init_weights(self):
        """DiT's initialisation; adaLN modulations and the output layer start at zero (adaLN-Zero)."""
        def basic(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(basic)
        g = self.input_size // self.patch_size
        self.pos_embed.copy_(sincos_2d(self.hidden_size, g, g)[None].to(self.pos_embed.device))
        w = self.x_embedder.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if block.cross_attn is not None:
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def _check(self, x, t, num_images, y, context, context_mask) -> tuple[Layout, torch.Tensor]:
        name = type(self).__name__
        if x.dim() != 5:
            raise ValueError(f"{name}: x must be latents (B, F, C, H, W), got shape {tuple(x.shape)}")
        b, f, c, hh, ww = x.shape
        if c != self.in_channels:
            raise ValueError(f"{name}: x has {c} channels (dim 2 of (B, F, C, H, W)) but the model was built with "
                             f"in_channels={self.in_channels}; rebuild with in_channels={c} or fix the layout")
        if f < 1:
            raise ValueError(f"{name}: x has no frames (F = 0)")
        p = self.patch_size
        if hh % p or ww % p:
            raise ValueError(f"{name}: spatial size {hh}x{ww} is not divisible by patch_size={p}; "
                             f"crop or pad the latents to a multiple of {p}")
        if not isinstance(num_images, int) or not 0 <= num_images <= f:
            raise ValueError(f"{name}: num_images must be an int in [0, F={f}], got {num_images!r}")
        if t.dim() == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"{name}: t must have shape (B,) = ({b},), got {tuple(t.shape)}")
        if y is not None:
            if self.y_embedder is None:
                raise ValueError(f"{name}: class labels y were given but the model has num_classes=0; "
                                 f"build it with num_classes=K")
            if y.shape != (b,) or y.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16):
                raise ValueError(f"{name}: y must be integer class ids of shape ({b},), got {tuple(y.shape)} {y.dtype}")
            if bool(((y < 0) | (y > self.num_classes)).any()):
                raise ValueError(f"{name}: class ids must be in [0, {self.num_classes}] ({self.num_classes} = the "
                                 f"null class for guidance), got {y.tolist()}")
        if context is not None:
            if self.context_dim is None:
                raise ValueError(f"{name}: context was given but the model has no cross-attention; "
                                 f"build it with context_dim=<text embedding width>")
            if context.dim() != 3 or context.shape[0] != b or context.shape[2] != self.context_dim:
                raise ValueError(f"{name}: context must be (B={b}, L, context_dim={self.context_dim}), "
                                 f"got {tuple(context.shape)}")
            if context_mask is not None and (context_mask.shape != context.shape[:2]
                                             or context_mask.dtype != torch.bool):
                raise ValueError(f"{name}: context_mask must be bool of shape {tuple(context.shape[:2])} "
                                 f"(True = keep), got {tuple(context_mask.shape)} {context_mask.dtype}")
        elif context_mask is not None:
            raise ValueError(f"{name}: context_mask was given without context")
        return Layout(f - num_images, num_images, hh // p, ww // p), t

    def _embed(self, x, t, y, layout):
        """x (B, F, C, H, W) -> tokens (B, F, N, D) and the adaLN condition c (B, D)."""
        b = x.shape[0]
        tok = self.x_embedder(rearrange(x, "b f c h w -> (b f) c h w"))  # (B*F, D, h, w)
        tok = rearrange(tok, "(b f) d h w -> b f (h w) d", b=b)
        if (layout.h, layout.w) == (self.input_size // self.patch_size,) * 2:
            pos = self.pos_embed
        else:  # another resolution: the same fixed sin-cos table, for this grid
            pos = sincos_2d(self.hidden_size, layout.h, layout.w)[None].to(tok.device, tok.dtype)
        tok = tok + pos[:, None]
        c = self.t_embedder(t)
        if self.y_embedder is not None:
            if y is None:  # unconditional: the null class
                y = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
            c = c + self.y_embedder(y)
        return tok, c

    def _unpatchify(self, out, layout):
        """(B, F, N, p*p*C_out) -> (B, F, C_out, H, W)."""
        p = self.patch_size
        return rearrange(out, "b f (h w) (p q c) -> b f c (h p) (w q)", h=layout.h, p=p, q=p)

    def forward(self, x, t, *, num_images=0, y=None, context=None, context_mask=None, return_features=False):
        """x: (B, F, C, H, W) latents, t: (B,) timesteps -> (B, F, C_out, H, W) [, per-block features]."""
        layout, t = self._check(x, t, num_images, y, context, context_mask)
        tok, c = self._embed(x, t, y, layout)
        cond = Conditioning(c, context, context_mask)
        feats = []
        for block in self.blocks:
            tok, feat = block(tok, cond, layout)
            if return_features:
                feats.append(feat)
        out = self._unpatchify(self.final_layer(tok, c), layout)
        return (out, feats) if return_features else out


class MedSora(VideoBackbone):
    """MedSora backbone. See the module docstring; presets in ``registry.py``."""

    def __init__(self, input_size=16, in_channels=16, patch_size=2, hidden_size=512, depth=12, learn_sigma=True,
                 num_classes=0, class_dropout_prob=0.1, context_dim=None, d_state=128, d_conv=4, expand=2,
                 headdim=64, chunk_size=256, window_size=8, attn_dropout=0.1):
        super().__init__()
        self.config = dict(input_size=input_size, in_channels=in_channels, patch_size=patch_size,
                           hidden_size=hidden_size, depth=depth, learn_sigma=learn_sigma, num_classes=num_classes,
                           class_dropout_prob=class_dropout_prob, context_dim=context_dim, d_state=d_state,
                           d_conv=d_conv, expand=expand, headdim=headdim, chunk_size=chunk_size,
                           window_size=window_size, attn_dropout=attn_dropout)
        self._init_common(input_size, in_channels, patch_size, hidden_size, depth, learn_sigma, num_classes,
                          class_dropout_prob, context_dim)
        if (expand * hidden_size) % headdim:
            raise ValueError(f"headdim={headdim} must divide expand*hidden_size={expand * hidden_size}")
        if d_state < 1 or d_conv < 1:
            raise ValueError(f"d_state and d_conv must be >= 1, got {d_state}, {d_conv}")
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.d_state, self.d_conv, self.expand, self.headdim = d_state, d_conv, expand, headdim
        self.chunk_size, self.window_size, self.attn_dropout = chunk_size, window_size, attn_dropout
        mk = dict(d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim, chunk_size=chunk_size)
        heads = max(1, hidden_size // 64) if hidden_size % 64 == 0 else 1
        self.blocks = nn.ModuleList(
            MedSoraBlock(hidden_size, 2 * i, mk, window_size, attn_dropout, context_dim, heads) for i in range(depth)
        )
        self._init_weights()
