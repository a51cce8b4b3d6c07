"""Exponential moving average of the model weights (sampling uses the EMA copy by default)."""

from __future__ import annotations

import copy

import torch


class EMA:
    """theta_ema <- d * theta_ema + (1 - d) * theta after every optimiser step (DiT: d = 0.9999).

    With ``warmup`` the decay is min(d, (1 + n) / (10 + n)) after n updates, so a short run's
    average follows the weights instead of staying at the initialisation (off in the paper's recipe).
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, warmup: bool = False):
        self.decay, self.warmup = decay, warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        ema_params = dict(self.model.named_parameters())
        pairs = [(ema_params[name], p.detach()) for name, p in model.named_parameters()]
        if pairs:  # one fused launch per dtype/device group: ema + (1-d)(p - ema) = d ema + (1-d) p
            torch._foreach_lerp_([e for e, _ in pairs], [p for _, p in pairs], 1.0 - d)
        ema_buffers = dict(self.model.named_buffers())
        bufs = [(ema_buffers[name], b) for name, b in model.named_buffers()]
        if bufs:
            torch._foreach_copy_([e for e, _ in bufs], [b for _, b in bufs])
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        self.model.load_state_dict(state)
        self.num_updates = num_updates
