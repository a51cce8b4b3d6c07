"""The training loop on tiny real latents: phases, resume bit-identical, faults, accumulation."""

import json

import pytest
import torch
from medvid_tinyrun import tiny_config

from medvid.training import TrainingDivergedError, train
from medvid.training import trainer as trainer_mod
from medvid.utils.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint


def metrics(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run):
    groups, state, _ = load_checkpoint(run)
    return groups, state


@pytest.fixture(scope="module")
def full_run(tiny_data, tmp_path_factory):
    """The uninterrupted reference run: 3 epochs = 1 step (batch 4) + 2 x 3 steps (batch 2)."""
    out = tmp_path_factory.mktemp("full")
    train(tiny_config(tiny_data["latent_dir"]), out)
    return out


def test_phases_steps_and_files(full_run):
    rows = metrics(full_run)
    assert [r["step"] for r in rows] == list(range(1, 8))
    assert [r["epoch"] for r in rows] == [0, 1, 1, 1, 2, 2, 2]
    assert [r["lr"] for r in rows] == [1e-3] + [3e-4] * 6  # the phased schedule
    assert all(set(r) >= {"loss", "mse", "vb", "grad_norm"} for r in rows)
    assert all(r["loss"] == pytest.approx(r["mse"] + r["vb"]) for r in rows)
    # Clipping from epoch 1: the clipped norm is reported pre-clip, the update uses <= 1.
    assert [p.name for p in list_checkpoints(full_run)] == ["step-00000002", "step-00000004", "step-00000006", "step-00000007"]
    assert (full_run / "log.txt").read_text().count("step 7 epoch 2") == 1
    groups, state = weights(full_run)
    assert set(groups) == {"model", "ema", "optimizer", "rng"}
    assert state["step"] == 7 and state["epoch"] == 3 and state["batch_index"] == 0  # past the last epoch
    assert state["model_config"]["name"] == "medsora-s" and state["latent_shape"] == [2, 4, 8, 8]
    assert state["vae"]["source"] == "tiny-random(seed=0)"
    _, _, cfg = load_checkpoint(full_run)
    assert cfg["optim"]["phases"][0]["batch_size"] == 4  # the resolved config rides along


def test_stop_and_resume_is_bit_identical(tiny_data, full_run, tmp_path):
    cfg = tiny_config(tiny_data["latent_dir"], **{"max_steps": 3})
    train(cfg, tmp_path)  # stops mid-epoch 1
    assert latest_checkpoint(tmp_path).name == "step-00000003"
    train(tiny_config(tiny_data["latent_dir"]), tmp_path, resume="auto")
    assert metrics(tmp_path) == metrics(full_run)  # same losses, grad norms, lr, bit for bit
    a, sa = weights(full_run)
    b, sb = weights(tmp_path)
    for group in ("model", "ema"):
        for k in a[group]:
            assert torch.equal(a[group][k], b[group][k]), (group, k)
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for i, st in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][i][k]) for k, v in st.items())
    assert sa["ema_updates"] == sb["ema_updates"] == 7
    # Each run logs to its own log.txt only (runs in one process do not leak into each other's logs).
    assert (full_run / "log.txt").read_text().count("training done") == 1
    assert (tmp_path / "log.txt").read_text().count("training done") == 2 and "resumed from" in (tmp_path / "log.txt").read_text()


def test_nonfinite_losses_are_skipped_then_stop_the_run(tiny_data, tmp_path, monkeypatch):
    real_build = trainer_mod.build_model
    calls = {"n": 0}
    bad = set()

    def build(cfg, context_dim=None):
        model = real_build(cfg, context_dim)
        forward = model.forward

        def poisoned(*a, **k):
            calls["n"] += 1
            out = forward(*a, **k)
            return out * float("nan") if calls["n"] in bad else out

        model.forward = poisoned
        return model

    monkeypatch.setattr(trainer_mod, "build_model", build)
    bad.update({2})  # one NaN step: skipped, reported, training goes on
    train(tiny_config(tiny_data["latent_dir"], max_steps=3, ckpt_every=100), tmp_path / "a")
    rows = metrics(tmp_path / "a")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] == r["loss"] for r in rows)
    assert "non-finite loss" in (tmp_path / "a" / "log.txt").read_text()
    # From the 3rd forward on, every loss is NaN: the run stops after max_nan_skips, checkpoint intact.
    calls["n"] = 0
    bad.clear()
    bad.update(range(3, 100))
    with pytest.raises(TrainingDivergedError, match="3 consecutive steps.*step-00000002"):
        train(tiny_config(tiny_data["latent_dir"], ckpt_every=2, **{"optim.max_nan_skips": 3}), tmp_path / "b")
    groups, state = weights(tmp_path / "b")
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in groups["model"].values())


def test_disk_full_while_saving_keeps_the_old_checkpoint(tiny_data, tmp_path, monkeypatch):
    import medvid.utils.checkpoint as ckpt

    real_save = ckpt.save_file
    count = {"n": 0}

    def save_file(tensors, path, metadata=None):
        count["n"] += 1
        if count["n"] > 4:  # the 2nd checkpoint (4 groups each)
            raise OSError(28, "No space left on device")
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", save_file)
    with pytest.raises(CheckpointError, match="disk is full.*step-00000002 is intact"):
        train(tiny_config(tiny_data["latent_dir"]), tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    load_checkpoint(tmp_path)


def test_gradient_accumulation_matches_the_full_batch(tiny_data, tmp_path):
    common = {"max_steps": 2, "model.overrides.attn_dropout": 0.0}  # dropout masks depend on the batch split
    train(tiny_config(tiny_data["latent_dir"], **common), tmp_path / "full")
    train(tiny_config(tiny_data["latent_dir"], **common, **{"optim.micro_batch_size": 1}), tmp_path / "accum")
    ra, rb = metrics(tmp_path / "full"), metrics(tmp_path / "accum")
    # Same (x0, t, noise) triples and a loss divided by the accumulation steps: same loss and grad norm.
    for key in ("loss", "mse", "vb", "grad_norm"):
        assert [r[key] for r in ra] == pytest.approx([r[key] for r in rb], rel=1e-5), key
    a, _ = weights(tmp_path / "full")
    b, _ = weights(tmp_path / "accum")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=1e-6, rtol=1e-5)


def test_bad_batch_layout_is_a_clear_error(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="micro batch"):
        train(tiny_config(tiny_data["latent_dir"], **{"optim.micro_batch_size": 3}), tmp_path)
    with pytest.raises(ValueError, match="fewer than the batch size"):
        train(tiny_config(tiny_data["latent_dir"], **{"optim.phases": [{"lr": 1e-3, "batch_size": 64}]}), tmp_path)
