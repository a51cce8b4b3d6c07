"""Every subcommand fails cleanly on bad input: exit 2, one line on stderr that names the file, flag or
config key, no traceback; and the run folders involved are byte-identical afterwards."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medvid.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = {"depth": 1, "hidden_size": 32, "input_size": 8, "in_channels": 4, "d_state": 8, "headdim": 16,
              "patch_size": 2}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), and every folder (-> None)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def fake_run(out: Path, config: dict, ckpt_dir: Path | None = None) -> Path:
    """A run folder as a training command leaves it: config, two checkpoints, latest, metrics, log."""
    from medvid.utils.checkpoint import save_checkpoint
    import torch

    ckpt_dir = ckpt_dir or out
    for step in (2, 4):
        save_checkpoint(ckpt_dir, step, {"model": {"w": torch.full((2,), float(step))}}, {"step": step}, config)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    (out / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4}\n')
    (out / "log.txt").write_text("earlier run\n")
    return out


@pytest.fixture
def env(tmp_path):
    """Bad inputs of every kind, and three run folders (train, train-vae, train-wan) that must survive."""
    from medvid.config import from_dict, to_dict
    from medvid.t2v.wan_train import WanTrainConfig
    from medvid.training.config import TrainConfig

    t = tmp_path
    (t / "empty").mkdir()
    (t / "latents").mkdir()
    (t / "latin1.json").write_bytes(b'["caf\xe9 au lait"]')
    (t / "latin1.yaml").write_bytes(b"seed: 1  # caf\xe9\n")
    (t / "manifest.jsonl").write_text('{"path": "gone.mp4", "id": "a", "num_frames": 3, "fps": 8, "height": 8, "width": 8}\n')
    base = {"model": {"name": "medsora-s", "overrides": dict(TINY_MODEL)},
            "data": {"latent_dir": str(t / "latents")}, "max_steps": 2, "progress": False, "tensorboard": False}

    def config(name, **over):
        d = copy.deepcopy(base)
        for key, value in over.items():
            node = d
            parts = key.split(".")
            for k in parts[:-1]:
                node = node.setdefault(k, {})
            node[parts[-1]] = value
        (t / name).write_text(yaml.safe_dump(d))
        return str(t / name)

    good = config("good.yaml")
    run = t / "run"
    run.mkdir()
    fake_run(run, to_dict(from_dict(TrainConfig, yaml.safe_load(Path(good).read_text()))))
    vae_run = t / "vae_run"
    (vae_run / "checkpoints").mkdir(parents=True)
    vae_cfg = {"source": str(t / "manifest.jsonl"), "vae": "tiny", "batch_size": 1, "lr": 2e-7, "betas": [0.5, 0.9],
               "num_frames": 9, "frame_stride": 3, "resolution": 128, "num_images": 0, "ffl_weight": 0.1,
               "trainable": "compensation", "seed": 0, "steps": 10, "dropout": 0.2}
    fake_run(vae_run, vae_cfg, vae_run / "checkpoints")
    (vae_run / "config.yaml").unlink()
    wan_yaml = t / "wan.yaml"
    wan_yaml.write_text(yaml.safe_dump({"model_path": str(t / "empty"), "data": {"path": str(t / "manifest.jsonl")},
                                        "max_steps": 2}))
    wan_run = t / "wan_run"
    wan_run.mkdir()
    fake_run(wan_run, to_dict(from_dict(WanTrainConfig, yaml.safe_load(wan_yaml.read_text()))))
    (t / "wan_betas.yaml").write_text(yaml.safe_dump({"model_path": str(t / "empty"), "optim": {"betas": [0.9, 1.0]}}))
    (t / "wan_eps.yaml").write_text(yaml.safe_dump({"model_path": str(t / "empty"), "optim": {"eps": 0}}))
    return {"t": t, "config": config, "good": good, "run": run, "vae_run": vae_run, "wan": str(wan_yaml),
            "wan_run": wan_run}


# (what is wrong, argv with {t}/{good}/... placeholders, what the message must name)
CASES = [
    ("train into a run without --resume", ["train", "--config", "{good}", "--out", "{run}"], ["{run}", "--resume auto"]),
    ("train --resume with another lr", ["train", "--config", "{good}", "--out", "{run}", "--resume", "auto",
                                        "--optim.phases", "[{lr: 0.5, batch_size: 2}]"], ["optim.phases", "config.yaml"]),
    ("train --resume a step that is not there", ["train", "--config", "{good}", "--out", "{run}", "--resume", "3"],
     ["--resume 3", "[2, 4]"]),
    ("train betas past 1", ["train", "--config", "cfg:betas.yaml:optim.betas=[1.5, 0.9]", "--out", "{t}/new"],
     ["betas.yaml", "optim.betas"]),
    ("train negative weight decay", ["train", "--config", "cfg:wd.yaml:optim.weight_decay=-1", "--out", "{t}/new"],
     ["wd.yaml", "optim.weight_decay"]),
    ("train zero lr", ["train", "--config", "cfg:lr.yaml:optim.phases=[{lr: 0, batch_size: 2}]", "--out", "{t}/new"],
     ["lr.yaml", "lr must be > 0"]),
    ("train missing latent_dir", ["train", "--config", "cfg:nolat.yaml:data.latent_dir={t}/gone", "--out", "{t}/new"],
     ["nolat.yaml", "data.latent_dir", "{t}/gone"]),
    ("train headdim not dividing", ["train", "--config", "cfg:hd.yaml:model.overrides.headdim=12", "--out", "{t}/new"],
     ["hd.yaml", "headdim"]),
    ("train misspelt key", ["train", "--config", "{good}", "--out", "{t}/new", "--optim.ema_decai", "0.5"],
     ["ema_decai"]),
    ("train config not UTF-8", ["train", "--config", "{t}/latin1.yaml", "--out", "{t}/new"], ["latin1.yaml", "UTF-8"]),
    ("train config missing", ["train", "--config", "{t}/gone.yaml", "--out", "{t}/new"], ["gone.yaml"]),
    ("train-vae into a run without --resume", ["train-vae", "{t}/manifest.jsonl", "--out", "{vae_run}", "--vae", "tiny",
                                              "--num-frames", "9"], ["{vae_run}", "--resume"]),
    ("train-vae --resume with other frames", ["train-vae", "{t}/manifest.jsonl", "--out", "{vae_run}", "--vae", "tiny",
                                             "--num-frames", "17", "--resume", "auto"], ["num_frames"]),
    ("train-vae bad frame count", ["train-vae", "{t}/manifest.jsonl", "--out", "{t}/v", "--vae", "tiny", "--num-frames",
                                   "5"], ["--num-frames 5"]),
    ("train-vae missing manifest", ["train-vae", "{t}/gone", "--out", "{t}/v", "--vae", "tiny", "--trainable", "base"], ["{t}/gone"]),
    ("train-wan into a run without --resume", ["train-wan", "--config", "{wan}", "--out", "{wan_run}"],
     ["{wan_run}", "--resume"]),
    ("train-wan --resume with another rank", ["train-wan", "--config", "{wan}", "--out", "{wan_run}", "--resume", "auto",
                                             "--lora.rank", "4"], ["lora.rank"]),
    ("train-wan betas", ["train-wan", "--config", "{t}/wan_betas.yaml", "--out", "{t}/w"], ["wan_betas.yaml", "optim.betas"]),
    ("train-wan eps", ["train-wan", "--config", "{t}/wan_eps.yaml", "--out", "{t}/w"], ["wan_eps.yaml", "optim.eps"]),
    ("train-wan model_path missing", ["train-wan", "--config", "{wan}", "--out", "{t}/w", "--model_path", "{t}/gone"],
     ["wan.yaml", "model_path", "{t}/gone"]),
    ("train-wan config not UTF-8", ["train-wan", "--config", "{t}/latin1.yaml", "--out", "{t}/w"], ["latin1.yaml"]),
    ("sample from an empty folder", ["sample", "--checkpoint", "{t}/empty", "--num", "1", "--out", "{t}/s"], ["{t}/empty"]),
    ("sample from a missing folder", ["sample", "--checkpoint", "{t}/gone", "--num", "1", "--out", "{t}/s"], ["{t}/gone"]),
    ("evaluate an empty --fake", ["evaluate", "--fake", "{t}/empty", "--out", "{t}/ev"], ["--fake", "{t}/empty"]),
    ("evaluate a missing --fake", ["evaluate", "--fake", "{t}/gone", "--out", "{t}/ev"], ["{t}/gone"]),
    ("generate --batch not UTF-8", ["generate", "--model", "medsora", "--checkpoint", "{run}", "--batch",
                                    "{t}/latin1.json", "--out", "{t}/g"], ["latin1.json", "UTF-8"]),
    ("generate --batch missing", ["generate", "--model", "medsora", "--checkpoint", "{run}", "--batch", "{t}/gone.json",
                                  "--out", "{t}/g"], ["gone.json"]),
    ("prepare a missing source", ["prepare", "{t}/gone", "{t}/p"], ["{t}/gone"]),
    ("curate a missing source", ["curate", "{t}/gone", "{t}/c"], ["{t}/gone"]),
    ("curate an empty folder", ["curate", "{t}/empty", "{t}/c"], ["{t}/empty"]),
    ("curate a misspelt filter", ["curate", "{t}/empty", "{t}/c", "--set", "blurr=3"], ["blurr"]),
    ("flow-features, manifest video gone", ["flow-features", "{t}/manifest.jsonl", "--out", "{t}/ff"], ["gone.mp4"]),
    ("flow-features, no manifest", ["flow-features", "{t}/gone", "--out", "{t}/ff"], ["{t}/gone"]),
    ("encode, no manifest", ["encode", "{t}/gone", "--vae", "tiny", "--out", "{t}/e"], ["{t}/gone"]),
    ("vae-eval, VAE folder empty", ["vae-eval", "{t}/manifest.jsonl", "--vae", "{t}/empty", "--out", "{t}/ve"],
     ["{t}/empty"]),
    ("caption, no manifest", ["caption", "{t}/gone", "--model", "{t}/empty"], ["{t}/gone"]),
    ("judge, no videos", ["judge", "--videos", "{t}/empty", "--model", "{t}/empty"], ["--videos", "{t}/empty"]),
    ("export-lora, not a LoRA", ["export-lora", "{t}/empty", "--out", "{t}/el"], ["{t}/empty"]),
    ("wan-cache, config missing", ["wan-cache", "--config", "{t}/gone.yaml", "--out", "{t}/wc"], ["gone.yaml"]),
    ("serve, not a checkpoint", ["serve", "--checkpoint", "{t}/empty"], ["{t}/empty"]),
]


def expand(text: str, env) -> str:
    if text.startswith("cfg:"):  # cfg:NAME:key=yaml-value -> a config file with that one change
        _, name, change = text.split(":", 2)
        key, value = change.split("=", 1)
        return env["config"](name, **{key: yaml.safe_load(value.replace("{t}", str(env["t"])))})
    for k, v in env.items():
        if k != "config":
            text = text.replace("{" + k + "}", str(v))
    return text


@pytest.mark.parametrize("what,argv,named", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(what, argv, named, env, capsys):
    runs = {k: snapshot(env[k]) for k in ("run", "vae_run", "wan_run")}
    argv = [expand(a, env) for a in argv]
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and "it/s]" not in ln and "%|" not in ln]
    assert rc == 2, (what, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"medvid {argv[0]}: "), lines
    for name in named:
        assert expand(name, env) in lines[0], (what, lines[0])
    for k, before in runs.items():
        assert snapshot(env[k]) == before, f"{what}: {k} was changed"


def test_resume_may_change_run_length_only(env):
    """--resume with a longer run and other bookkeeping passes the guard; the run folder is untouched."""
    from medvid.config import from_dict, to_dict
    from medvid.training.cli import RUN_LENGTH_KEYS
    from medvid.training.config import TrainConfig
    from medvid.utils.runs import config_differences, guard_run_folder

    stored = yaml.safe_load((env["run"] / "config.yaml").read_text())
    longer = to_dict(from_dict(TrainConfig, {**stored, "max_steps": 50, "ckpt_every": 7, "log_every": 3,
                                             "progress": True, "sample": {"every": 5}}))
    before = snapshot(env["run"])
    assert guard_run_folder(env["run"], "auto", longer, run_length_keys=RUN_LENGTH_KEYS) == "auto"
    assert guard_run_folder(env["run"], "2", longer, run_length_keys=RUN_LENGTH_KEYS) == str(env["run"] / "step-00000002")
    assert snapshot(env["run"]) == before
    # A run from before a field existed (stored without it) resumes when the new field is at its default.
    older = yaml.safe_load((env["run"] / "step-00000004" / "config.yaml").read_text())
    del older["optim"]["warmup_steps"]
    (env["run"] / "step-00000004" / "config.yaml").write_text(yaml.safe_dump(older))
    assert guard_run_folder(env["run"], "auto", longer, run_length_keys=RUN_LENGTH_KEYS, config_class=TrainConfig)
    with pytest.raises(ValueError, match="optim.warmup_steps: None -> 0"):
        guard_run_folder(env["run"], "auto", longer, run_length_keys=RUN_LENGTH_KEYS)
    other = {**longer, "seed": 5, "optim": {**longer["optim"], "betas": [0.8, 0.99]}}
    assert config_differences(stored, other, RUN_LENGTH_KEYS) == [
        "optim.betas: [0.9, 0.999] -> [0.8, 0.99]", "seed: 0 -> 5"]


def test_a_fresh_folder_or_one_without_a_run_is_fine(env):
    from medvid.utils.runs import guard_run_folder

    assert guard_run_folder(env["t"] / "new", None, {}) is None
    (env["t"] / "notes").mkdir()
    (env["t"] / "notes" / "readme.md").write_text("mine")
    assert guard_run_folder(env["t"] / "notes", None, {}) is None  # non-empty, but holds no run
    failed = env["t"] / "failed"  # what a start that failed on bad input leaves behind
    (failed / "tb").mkdir(parents=True)
    (failed / "log.txt").write_text("ERROR data.latent_dir ...\n")
    assert guard_run_folder(failed, None, {}) is None


def test_real_entry_point_and_debug_traceback(env):
    """`python -m medvid` prints one line and exits 2; --debug or MEDVID_DEBUG=1 show the traceback."""
    bad = env["config"]("betas.yaml", **{"optim.betas": [1.5, 0.9]})
    argv = [sys.executable, "-m", "medvid", "train", "--config", bad, "--out", str(env["t"] / "new")]
    clean = {**os.environ, "PYTHONPATH": str(ROOT), "MEDVID_DEBUG": ""}
    p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=clean, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [f"medvid train: {bad}: optim.betas=[1.5, 0.9]: need two numbers in "
                                             "[0, 1), e.g. [0.9, 0.999]"]
    assert p.stdout == ""
    p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**clean, "MEDVID_DEBUG": "1"}, timeout=300)
    assert p.returncode != 0 and "Traceback" in p.stderr and "ConfigError" in p.stderr
    assert not (env["t"] / "new").exists()


def test_debug_flag_reraises(env):
    from medvid.config import ConfigError

    with pytest.raises(ConfigError, match="optim.betas"):
        main(["--debug", "train", "--config", env["config"]("b.yaml", **{"optim.betas": [1.5, 0.9]}),
              "--out", str(env["t"] / "new")])


def test_bugs_keep_their_traceback(monkeypatch, env):
    """Only bad input is turned into one line; an unexpected error is a bug and propagates."""
    import medvid.sampling.cli as sampling_cli

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(sampling_cli, "main", broken)
    with pytest.raises(KeyError):
        main(["sample", "--checkpoint", str(env["run"]), "--num", "1", "--out", str(env["t"] / "s")])
