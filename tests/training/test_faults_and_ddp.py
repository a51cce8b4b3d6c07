"""A process killed while saving, two gloo processes vs one, training from videos with alignment, CLI."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from medvid_tinyrun import tiny_config

from medvid.training import train
from medvid.utils.checkpoint import latest_checkpoint, load_checkpoint

HERE = Path(__file__).parent
# Dropout masks come from each process's own RNG, so 1 vs 2 processes differ there by design.
NO_DROPOUT = {"max_steps": 3, "model.overrides.attn_dropout": 0.0}
ROOT = HERE.parent.parent


def metrics(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_process_killed_while_saving_never_damages_the_last_checkpoint(tiny_data, tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(HERE)!r})
        import torch
        torch.set_num_threads({torch.get_num_threads()})  # as in this process: same float reductions
        import medvid.utils.checkpoint as ck
        from medvid_tinyrun import tiny_config
        from medvid.training import train
        real, n = ck.save_file, [0]
        def save_file(tensors, path, metadata=None):
            n[0] += 1
            if n[0] == 6:  # half-way through the 2nd checkpoint (4 files each)
                real(tensors, path, metadata=metadata)
                os.kill(os.getpid(), signal.SIGKILL)
            return real(tensors, path, metadata=metadata)
        ck.save_file = save_file
        train(tiny_config({str(tiny_data["latent_dir"])!r}, max_steps=5), {str(tmp_path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    assert any(p.name.startswith(".tmp-step-00000004") for p in tmp_path.iterdir())  # the torn save
    load_checkpoint(tmp_path)  # the last good one loads
    # Resuming finishes the run and matches an uninterrupted one bit for bit.
    train(tiny_config(tiny_data["latent_dir"], max_steps=5), tmp_path, resume="auto")
    train(tiny_config(tiny_data["latent_dir"], max_steps=5), tmp_path / "ref")
    assert metrics(tmp_path) == metrics(tmp_path / "ref")
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, latent_dir, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(tiny_config(latent_dir, **NO_DROPOUT), out)


def test_two_gloo_processes_match_one_process(tiny_data, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_data["latent_dir"]), str(tmp_path / "ddp")), nprocs=2)
    train(tiny_config(tiny_data["latent_dir"], **NO_DROPOUT), tmp_path / "single")
    a, b = metrics(tmp_path / "single"), metrics(tmp_path / "ddp")
    assert len(a) == len(b) == 3  # only rank 0 wrote metrics
    for key in ("loss", "mse", "vb", "grad_norm"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], rel=1e-5), key
    ga, _, _ = load_checkpoint(tmp_path / "single")
    gb, sb, _ = load_checkpoint(tmp_path / "ddp")
    assert sb["world_size"] == 2 and len(gb["rng"]["ranks"]) == 2
    for k in ga["model"]:
        torch.testing.assert_close(ga["model"][k], gb["model"][k], atol=1e-6, rtol=1e-5)
    assert (tmp_path / "ddp" / "log.txt").read_text().count("training done") == 1


def test_training_from_videos_with_flow_alignment(tiny_data, tmp_path):
    vae_dir = tiny_data["root"] / "vae"
    if not vae_dir.exists():
        tiny_data["vae"].save(vae_dir)
    cfg = tiny_config(tiny_data["latent_dir"], max_steps=2, **{
        "data": {"source": "videos", "manifest": str(tiny_data["manifest"]), "vae": str(vae_dir),
                 "num_frames": 8, "frame_stride": 1, "resolution": 32, "num_images": 2, "hflip": False},
        "align": {"enabled": True, "alpha": 0.1, "margin": 0.0, "flow": "dis", "repnet": "effnet-lite0"},
    })
    train(cfg, tmp_path)
    rows = metrics(tmp_path)
    assert len(rows) == 2 and all(r["align"] > 0 for r in rows)
    assert all(r["loss"] == pytest.approx(r["mse"] + r["vb"] + r["align"], rel=1e-6) for r in rows)
    _, state, _ = load_checkpoint(tmp_path)
    assert state["latent_shape"] == [2, 4, 8, 8] and state["vae"] == str(vae_dir)


def test_cli_overrides_and_errors(tiny_data, tmp_path, capsys):
    from medvid.cli import main
    from medvid.config import save_yaml

    cfg_file = tmp_path / "tiny.yaml"
    save_yaml(tiny_config(tiny_data["latent_dir"]), cfg_file)
    rc = main(["train", "--config", str(cfg_file), "--out", str(tmp_path / "run"), "--max_steps", "1",
               "--optim.ema_decay", "0.5", "--seed=3", "--optim.phases", "[{lr: 2.0e-4, batch_size: 2}]"])
    assert rc == 0
    _, _, saved = load_checkpoint(tmp_path / "run")
    assert saved["max_steps"] == 1 and saved["optim"]["ema_decay"] == 0.5 and saved["seed"] == 3
    assert saved["optim"]["phases"] == [{"until_epoch": None, "lr": 2e-4, "batch_size": 2}]
    rc = main(["train", "--config", str(cfg_file), "--out", str(tmp_path / "run2"), "--optim.ema_decai", "0.5"])
    assert rc == 2 and "ema_decai" in capsys.readouterr().err


def test_stand_in_features_stop_a_paper_recipe_run_or_are_recorded_loudly(tiny_data, tmp_path, capsys):
    import json

    from medvid.cli import main
    from medvid.config import save_yaml
    from medvid.report.report import find_run, write_report

    vae_dir = tiny_data["root"] / "vae"
    if not vae_dir.exists():
        tiny_data["vae"].save(vae_dir)
    over = {
        "data": {"source": "videos", "manifest": str(tiny_data["manifest"]), "vae": str(vae_dir),
                 "num_frames": 8, "frame_stride": 1, "resolution": 32, "num_images": 0, "hflip": False},
        "align": {"enabled": True, "alpha": 0.1, "margin": 0.0, "flow": "dis", "repnet": "effnet-lite0",
                  "require_flow": "raft", "require_repnet": "dino"},
    }
    cfg_file = tmp_path / "paper_like.yaml"
    save_yaml(tiny_config(tiny_data["latent_dir"], max_steps=1, **over), cfg_file)
    assert main(["train", "--config", str(cfg_file), "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "require_flow is 'raft'" in err and "--flow raft" in err and "allow_feature_mismatch" in err
    assert not list((tmp_path / "refused").glob("step-*"))

    run = tmp_path / "allowed"
    assert main(["train", "--config", str(cfg_file), "--out", str(run), "--align.allow_feature_mismatch", "true"]) == 0
    capsys.readouterr()
    _, state, saved = load_checkpoint(run)
    for recorded in (state["feature_mismatch"], saved["align"]["feature_mismatch"]):
        assert "'dis'" in recorded and "stand-in" in recorded and "allow_feature_mismatch=true" in recorded
    assert "feature_mismatch: " in (run / "config.yaml").read_text()
    assert "NOT THE RECIPE'S FEATURES" in (run / "log.txt").read_text()
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "samples.json").write_text(json.dumps({"checkpoint": str(run)}))
    assert "'dis'" in find_run(fake)["feature_mismatch"]
    page = write_report({"settings": {}}, tmp_path / "report.html", fake_dir=fake).read_text()
    assert "id='feature-mismatch'" in page and "NOT THE RECIPE" in page
