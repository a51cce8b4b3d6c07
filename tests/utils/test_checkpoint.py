import errno
import json
import os

import pytest
import torch

from medvid.utils import checkpoint as ck


def _state():
    m = torch.nn.Linear(3, 4)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.randn(2, 3)).sum().backward()
    opt.step()
    return m, opt


def test_round_trip_restores_model_optimizer_and_rng(tmp_path):
    m, opt = _state()
    torch.manual_seed(123)
    path = ck.save_checkpoint(
        tmp_path, 7, {"model": m.state_dict(), "optimizer": opt.state_dict(), "rng": ck.rng_state()},
        state={"epoch": 2, "position": [1, 2], "loss": float("nan")}, config={"lr": 1e-3},
    )
    expected_next = torch.rand(3)
    assert path.name == "step-00000007"
    groups, state, config = ck.load_checkpoint(tmp_path)
    assert state["epoch"] == 2 and state["step"] == 7 and state["loss"] != state["loss"]
    assert config == {"lr": 1e-3}
    for k, v in m.state_dict().items():
        assert torch.equal(groups["model"][k], v)
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 4).parameters())
    opt2.load_state_dict(groups["optimizer"])
    s1, s2 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and torch.equal(s1["step"], s2["step"])
    ck.set_rng_state(groups["rng"])
    assert torch.equal(torch.rand(3), expected_next)


def test_no_pickle_in_checkpoint_files(tmp_path):
    m, opt = _state()
    path = ck.save_checkpoint(tmp_path, 1, {"model": m.state_dict(), "optimizer": opt.state_dict()})
    names = sorted(p.name for p in path.iterdir())
    assert names == ["model.safetensors", "optimizer.safetensors", "state.json"]
    json.loads((path / "state.json").read_text())


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    m, _ = _state()
    ck.save_checkpoint(tmp_path, 1, {"model": m.state_dict()})

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck, "save_file", disk_full)
    with pytest.raises(ck.CheckpointError, match="disk is full.*step-00000001 is intact"):
        ck.save_checkpoint(tmp_path, 2, {"model": m.state_dict()})
    assert ck.latest_checkpoint(tmp_path).name == "step-00000001"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_half_written_folder_is_ignored(tmp_path):
    m, _ = _state()
    ck.save_checkpoint(tmp_path, 1, {"model": m.state_dict()})
    (tmp_path / "step-00000009").mkdir()  # a crash before state.json was written
    (tmp_path / "latest").write_text("step-00000009")
    assert ck.latest_checkpoint(tmp_path).name == "step-00000001"


def test_keep_last_prunes_old(tmp_path):
    m, _ = _state()
    for s in range(4):
        ck.save_checkpoint(tmp_path, s, {"model": m.state_dict()}, keep_last=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]


def test_damaged_weights_error_names_file(tmp_path):
    m, _ = _state()
    path = ck.save_checkpoint(tmp_path, 1, {"model": m.state_dict()})
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ck.CheckpointError, match="model.safetensors"):
        ck.load_checkpoint(path)
    with pytest.raises(ck.CheckpointError, match="not a checkpoint folder"):
        ck.load_checkpoint(tmp_path / "nothing")
