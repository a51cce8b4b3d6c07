from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from medvid.config import ConfigError, apply_overrides, from_dict, load_config, save_yaml, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Run:
    name: str = "x"
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    path: Optional[str] = None
    flag: bool = False
    optim: Optim = field(default_factory=Optim)


def test_round_trip_and_overrides(tmp_path):
    cfg = Run(steps=3, optim=Optim(lr=0.5))
    save_yaml(cfg, tmp_path / "c.yaml")
    back = load_config(Run, tmp_path / "c.yaml", ["--optim.lr", "1e-4", "--flag", "true", "--mode=b"])
    assert back.steps == 3 and back.optim.lr == 1e-4 and back.flag is True and back.mode == "b"
    assert to_dict(back)["optim"]["betas"] == [0.9, 0.999]
    assert apply_overrides({"a": {"b": 1}}, {"a.c": 2}) == {"a": {"b": 1, "c": 2}}
    phases = {"p": [{"lr": 1, "bs": 2}, {"lr": 3}]}
    assert apply_overrides(phases, ["--p.1.lr", "0.5"]) == {"p": [{"lr": 1, "bs": 2}, {"lr": 0.5}]}
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides(phases, ["--p.2.lr", "0.5"])


def test_unknown_and_wrong_keys_fail_loudly():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stpes'\].*steps"):
        from_dict(Run, {"stpes": 3})
    with pytest.raises(ConfigError, match="integer"):
        from_dict(Run, {"steps": "many"})
    with pytest.raises(ConfigError, match="not one of"):
        from_dict(Run, {"mode": "c"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Run, "/nonexistent/cfg.yaml")
    with pytest.raises(ConfigError, match="no value"):
        apply_overrides({}, ["--steps"])
