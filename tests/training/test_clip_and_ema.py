"""Gradient clipping really fires, and the EMA follows its formula (with and without warm-up)."""

import json

import pytest
import torch
from medvid_tinyrun import tiny_config

from medvid.training import train
from medvid.training.ema import EMA
from medvid.utils.checkpoint import load_checkpoint


def adam_first_moment_norm(run, step):
    """||m_1|| / (1 - beta1): after the first Adam step, m_1 = (1 - beta1) * g, the gradient the optimiser saw."""
    groups, _, cfg = load_checkpoint(run / f"step-{step:08d}")
    beta1 = cfg["optim"]["betas"][0]
    m = [s["exp_avg"] for s in groups["optimizer"]["state"].values()]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in m]))) / (1 - beta1)


@pytest.mark.parametrize("clip_from_epoch", [0, 99])
def test_gradient_clipping_fires(tiny_data, tmp_path, clip_from_epoch):
    clip = 1e-3  # far below the tiny model's gradient norms (~0.5), so clipping must act
    cfg = tiny_config(tiny_data["latent_dir"], max_steps=1, ckpt_every=1,
                      **{"optim.grad_clip": clip, "optim.clip_from_epoch": clip_from_epoch})
    train(cfg, tmp_path)
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    seen = adam_first_moment_norm(tmp_path, 1)
    assert row["grad_norm"] > 100 * clip  # the norm before clipping, as logged
    if clip_from_epoch == 0:
        assert seen == pytest.approx(clip, rel=1e-4)  # the optimiser saw the clipped gradient
    else:
        assert seen == pytest.approx(row["grad_norm"], rel=1e-4)  # clipping not yet on: the raw gradient


def test_ema_in_a_run_follows_the_formula(tiny_data, tmp_path):
    """e_n = d_n e_{n-1} + (1 - d_n) theta_n, d_n = min(decay, (1 + n) / (10 + n)) with n updates done before."""
    decay = 0.9
    train(tiny_config(tiny_data["latent_dir"], max_steps=2, ckpt_every=1, **{"optim.ema_decay": decay}), tmp_path)
    g1, s1, _ = load_checkpoint(tmp_path / "step-00000001")
    g2, s2, _ = load_checkpoint(tmp_path / "step-00000002")
    assert (s1["ema_updates"], s2["ema_updates"]) == (1, 2)
    d1 = min(decay, (1 + 1) / (10 + 1))  # 2/11 < 0.9: warm-up governs
    for k, e2 in g2["ema"].items():
        if k in dict(g2["model"]) and e2.is_floating_point():
            expected = d1 * g1["ema"][k] + (1 - d1) * g2["model"][k]
            torch.testing.assert_close(e2, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_update_matches_the_recurrence(warmup):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.95, warmup=warmup)
    ref = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        d = min(0.95, (1 + n) / (10 + n)) if warmup else 0.95
        assert ema.current_decay() == pytest.approx(d)
        ema.update(model)
        ref = {k: d * ref[k] + (1 - d) * v.detach().double() for k, v in model.state_dict().items()}
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v.double(), ref[k], rtol=1e-5, atol=1e-6)
    assert ema.num_updates == 30
