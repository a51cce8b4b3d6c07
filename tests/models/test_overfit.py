"""A tiny MedSora learns one latent clip: the noise-prediction loss falls at least 10x."""

import math

import torch

from medvid.models import create_model


def test_tiny_medsora_overfits_one_clip():
    torch.manual_seed(0)
    model = create_model("medsora-s", depth=2, hidden_size=64, input_size=8, in_channels=4, d_state=16, headdim=32,
                         learn_sigma=False, attn_dropout=0.0)
    x0 = torch.randn(1, 4, 4, 8, 8)  # 3 video latent frames + 1 image latent
    eps = torch.randn(2, 4, 4, 8, 8)
    t = torch.tensor([100, 600])
    abar = torch.cos(t.float() / 1000 * math.pi / 2)[:, None, None, None, None] ** 2
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps  # fixed noisy inputs; target: the noise (DDPM eps-loss)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(300):
        loss = torch.mean((model(x_t, t, num_images=1) - eps) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 12:
            break
    assert losses[0] > 0.8  # adaLN-Zero: starts from predicting zeros
    assert min(losses) < losses[0] / 10, (losses[0], min(losses), len(losses))
    print(f"loss {losses[0]:.3f} -> {min(losses):.4f} in {len(losses)} steps")
