"""Run folders are never overwritten by accident.

A training command pointed at a folder that already holds a run (``config.yaml``, ``step-*``
checkpoints, ``latest``, ``metrics.jsonl``...) refuses to start unless ``--resume`` is given: a
fresh run there would prune the old checkpoints, cut ``metrics.jsonl`` and overwrite
``config.yaml``, after which ``--resume auto`` would load the old weights with the new config.
A resume whose config differs from the stored one in anything but run-length and bookkeeping keys
(``max_steps``, ``epochs``, how often to log or save, ...) is refused with the differences listed.
Both checks run before anything in the folder is touched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import yaml

# Files whose presence marks a run folder (any training command's). A bare log.txt or tb/ is not one:
# a start that failed on bad input leaves only those, and fixing the input must not need --resume.
RUN_MARKERS = ("config.yaml", "latest", "metrics.jsonl", "history.json")
STEP_DIR = re.compile(r"^step-(\d{8,})$")


class RunFolderError(ValueError):
    """``--out`` holds a run that this command would damage, or ``--resume`` does not fit it."""


def holds_run(out: str | Path) -> bool:
    out = Path(out)
    if not out.is_dir():
        return False
    if any((out / m).exists() for m in RUN_MARKERS):
        return True
    return any(STEP_DIR.match(p.name) for folder in (out, out / "checkpoints") if folder.is_dir()
               for p in folder.iterdir())


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"optim.lr": 1e-4, ...}; lists stay values."""
    if not isinstance(d, dict):
        return {prefix: d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _norm(v: Any) -> Any:
    """Compare YAML round trips fairly: tuples are lists, ints are floats where a float is stored."""
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, list):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _norm(x) for k, x in v.items()}
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return v


def config_differences(stored: dict[str, Any], new: dict[str, Any], ignore: Iterable[str] = (),
                       only_new_keys: bool = False) -> list[str]:
    """``key: stored -> new`` for every key that differs, except ``ignore`` (dotted keys or prefixes);
    ``only_new_keys`` compares the keys of ``new`` only (a command that stores more than it checks)."""
    ignore = tuple(ignore)
    a, b = flatten(stored), flatten(new)
    diffs = []
    for key in sorted(set(b) if only_new_keys else set(a) | set(b)):
        if any(key == i or key.startswith(i + ".") for i in ignore):
            continue
        if _norm(a.get(key)) != _norm(b.get(key)):
            diffs.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return diffs


def read_stored_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RunFolderError(f"{path}: unreadable ({e}); resume from a step folder with --resume PATH or use a new --out")
    return data if isinstance(data, dict) else None


def resolve_step(ckpt_dir: str | Path, resume: str) -> Path:
    """``--resume 1200`` -> ``CKPT_DIR/step-00001200``, naming the steps there when it is absent."""
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / f"step-{int(resume):08d}"
    if not (path / "state.json").is_file():
        have = sorted(int(m.group(1)) for p in (ckpt_dir.iterdir() if ckpt_dir.is_dir() else [])
                      if (m := STEP_DIR.match(p.name)) and (p / "state.json").is_file())
        raise RunFolderError(f"--resume {resume}: {ckpt_dir} has no complete checkpoint of step {int(resume)}; "
                             f"steps there: {have or 'none'}; use --resume auto or one of them")
    return path


def guard_run_folder(
    out: str | Path,
    resume: str | None,
    new_config: dict[str, Any] | None,
    *,
    ckpt_dir: str | Path | None = None,
    run_length_keys: Iterable[str] = (),
    stored_config: dict[str, Any] | None = None,
    only_new_keys: bool = False,
    config_class: type | None = None,
) -> str | None:
    """Check ``--out``/``--resume`` before a training command touches anything; return the resume value
    to pass on (a step number becomes its checkpoint folder).

    * no ``--resume`` and ``out`` holds a run: refused (nothing is touched);
    * ``--resume`` given: ``new_config`` must equal the stored one (the checkpoint's ``config.yaml``,
      else ``out/config.yaml``) in every key but ``run_length_keys``. With ``config_class`` the stored
      config is read through it first, so a field added to the class since (at its default) is no
      difference.
    """
    from medvid.utils.checkpoint import latest_checkpoint

    out = Path(out)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else out
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out}: a file, not a folder; pick a folder path")
    if resume in (None, "", "none"):
        if holds_run(out):
            last = latest_checkpoint(ckpt_dir)
            raise RunFolderError(
                f"--out {out} already holds a run ({'latest checkpoint ' + last.name if last else 'no checkpoint yet'}); "
                "starting a new run there would overwrite it. Continue it with --resume auto (or --resume STEP), "
                "or pick a new --out"
            )
        return resume
    if str(resume).isdigit():
        ckpt = resolve_step(ckpt_dir, str(resume))
        resume = str(ckpt)
    elif resume == "auto":
        ckpt = latest_checkpoint(ckpt_dir)
    else:
        ckpt = Path(resume)
        if not ckpt.exists():
            raise RunFolderError(f"--resume {resume}: no such checkpoint folder; use --resume auto, a step number "
                                 "or a step-* folder")
    if new_config is not None:
        stored = stored_config
        source = None
        if stored is None and ckpt is not None:
            source = ckpt / "config.yaml"
            stored = read_stored_config(source)
        if stored is None and ckpt is None:
            source = out / "config.yaml"
            stored = read_stored_config(source)
        if stored is not None and config_class is not None:
            from medvid.config import from_dict, to_dict

            try:
                stored = to_dict(from_dict(config_class, stored, where=str(source or ckpt)))
            except ValueError:
                pass  # compare as stored; the differences will show what no longer fits
        if stored is not None:
            diffs = config_differences(stored, new_config, run_length_keys, only_new_keys)
            if diffs:
                shown = "; ".join(diffs[:12]) + (f"; ... {len(diffs) - 12} more" if len(diffs) > 12 else "")
                raise RunFolderError(
                    f"--resume {resume}: the config differs from the run's stored config ({source or ckpt}) in "
                    f"{len(diffs)} key(s): {shown}. Only run-length keys ({', '.join(run_length_keys)}) may change "
                    "on resume; resume with the stored config, or start a new run with a new --out"
                )
    return resume
