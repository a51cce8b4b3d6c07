"""Frame consistency (FC): mean CLIP image-embedding cosine similarity within a video.

Two variants give different numbers and are named apart:

* ``fc_consecutive``: mean over i >= 1 of cos(f_i, f_{i-1}) (what MedSora reports, in percent);
* ``fc_all_pairs``: mean of the off-diagonal entries of the cosine-similarity matrix
  (LOVEU-TGVE, with CLIP ViT-L/14).

Values here are in [-1, 1]; multiply by 100 to compare with MedSora's percentages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fc_consecutive", "fc_all_pairs"]


def _unit(emb) -> torch.Tensor:
    e = torch.as_tensor(emb, dtype=torch.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"frame consistency needs (T >= 2, D) embeddings, got {tuple(e.shape)}")
    return F.normalize(e, dim=-1)


def fc_consecutive(emb) -> float:
    e = _unit(emb)
    return float((e[1:] * e[:-1]).sum(-1).mean())


def fc_all_pairs(emb) -> float:
    e = _unit(emb)
    sim = e @ e.T  # (T, T)
    t = sim.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (t * (t - 1)))
