"""Dataclass configs and their YAML form.

Configs are dataclasses (typed, documented, validated in ``__post_init__``); YAML only serialises
them. ``from_dict`` rejects unknown keys with the list of known ones, so a misspelt key in a config
file or on the command line fails loudly instead of being ignored (a defect of the reference
launch scripts). Dotted overrides (``--optim.lr 1e-4``) address nested fields.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medvid.utils.text import read_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the config class."""


def to_dict(cfg: Any) -> Any:
    """Dataclass (nested) -> plain dict of YAML/JSON-safe values."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where, _nested=True)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        for a in non_none:
            try:
                return _coerce(a, value, where)
            except (ConfigError, TypeError, ValueError):
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        out = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        except ValueError as e:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from e
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from e
    if tp is str:
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config", _nested: bool = False) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError naming the known ones.

    A value rejected by a ``__post_init__`` (its message names the key, e.g. ``optim.betas``) becomes a
    ConfigError that also names ``where`` (the YAML file)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; known keys of {cls.__name__}: {sorted(fields)}"
        )
    try:
        kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError) and str(e).startswith(where):
            raise
        if _nested and not isinstance(e, TypeError):
            raise  # the outermost from_dict names the file
        raise ConfigError(f"{where}: {e}") from e


def parse_value(text: str) -> Any:
    """A command-line value as YAML would read it (numbers, booleans, lists, null)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | list[str]) -> dict[str, Any]:
    """Apply dotted-key overrides to a nested dict (a copy is returned).

    ``overrides`` is a mapping ``{"optim.lr": 1e-4}`` or a flag list ``["--optim.lr", "1e-4"]``.
    """
    if isinstance(overrides, list):
        pairs: dict[str, Any] = {}
        it = iter(overrides)
        for flag in it:
            if not flag.startswith("--"):
                raise ConfigError(f"override {flag!r}: expected --key value")
            key = flag[2:]
            if "=" in key:
                key, raw = key.split("=", 1)
            else:
                raw = next(it, None)
                if raw is None:
                    raise ConfigError(f"override --{key} has no value")
            pairs[key.replace("-", "_")] = parse_value(raw)
        overrides = pairs
    out = json.loads(json.dumps(data, default=str))
    for key, value in overrides.items():
        node: Any = out
        parts = key.split(".")
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):  # ``--optim.phases.0.lr``: an index into a list
                if not p.isdigit() or int(p) >= len(node):
                    raise ConfigError(f"override --{key}: {p!r} is not an index of a {len(node)}-item list")
                if last:
                    node[int(p)] = value
                else:
                    node = node[int(p)]
                continue
            if last:
                node[p] = value
            else:
                if not isinstance(node.get(p), (dict, list)):
                    node[p] = {}
                node = node[p]
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def save_yaml(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def load_config(cls: type[T], path: str | Path | None = None, overrides: Any = None) -> T:
    """YAML file (optional) + overrides -> validated dataclass."""
    data = load_yaml(path) if path else {}
    if overrides:
        data = apply_overrides(data, overrides)
    return from_dict(cls, data, where=str(path) if path else "config")
