"""Named presets (data, not code) and ``create_model``.

MedSora sizes follow the paper (Table 1): width 512, patch 2, 16 latent channels on a 16x16 latent,
depth 6 / 12 / 24 / 48. The STDiT baseline uses the same widths, depths and patch.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .medsora import MedSora
from .stdit import STDiT

FAMILIES: dict[str, type[nn.Module]] = {"medsora": MedSora, "stdit": STDiT}

_SHAPE = {"input_size": 16, "in_channels": 16, "patch_size": 2, "hidden_size": 512}
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "medsora-s": {"family": "medsora", **_SHAPE, "depth": 6},
    "medsora-b": {"family": "medsora", **_SHAPE, "depth": 12},
    "medsora-l": {"family": "medsora", **_SHAPE, "depth": 24},
    "medsora-xl": {"family": "medsora", **_SHAPE, "depth": 48},
    "stdit-s": {"family": "stdit", **_SHAPE, "depth": 6},
    "stdit-b": {"family": "stdit", **_SHAPE, "depth": 12},
    "stdit-l": {"family": "stdit", **_SHAPE, "depth": 24},
}


def model_options(name: str) -> list[str]:
    """The override names ``create_model(name, ...)`` accepts."""
    cls = FAMILIES[_preset(name)["family"]]
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def _preset(name: str) -> dict[str, Any]:
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_PRESETS)}")
    return MODEL_PRESETS[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build preset ``name`` with ``overrides`` (e.g. depth=2, hidden_size=64 for a tiny model).

    The model keeps the resolved settings as attributes and in ``model.config`` (with "name"), so
    ``create_model_from_config(model.config)`` rebuilds it. To build without allocating memory,
    call inside ``with torch.device("meta"):``.
    """
    preset = _preset(name)
    allowed = model_options(name)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"create_model({name!r}): unknown option(s) {unknown}; {preset['family']} models accept "
                         f"{', '.join(allowed)}")
    kwargs = {k: v for k, v in preset.items() if k != "family"} | overrides
    model = FAMILIES[preset["family"]](**kwargs)
    model.config = {"name": name, **model.config}
    model.name = name
    return model


def create_model_from_config(cfg: dict[str, Any]) -> nn.Module:
    """Rebuild a model from ``model.config`` (as stored in checkpoints)."""
    if "name" not in cfg:
        raise ValueError(f"model config has no 'name' (one of {', '.join(MODEL_PRESETS)}): {cfg}")
    return create_model(cfg["name"], **{k: v for k, v in cfg.items() if k != "name"})
