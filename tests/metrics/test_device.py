"""`medvid evaluate --device`: the Frechet metrics' networks and batches go to the chosen device."""

import pytest
import torch

from medvid.metrics import evaluate as E
from medvid.nets.vision import _normalize


def test_batches_reach_the_evaluation_device():
    ev = E._Evaluator(None, None, None, 4, 0, 0, device=torch.device("meta"))  # meta stands in for a GPU
    seen = ev.on_device(lambda x: x.device)(torch.zeros(2, 3, dtype=torch.uint8))
    assert seen.type == "meta"
    cpu = E._Evaluator(None, None, None, 4, 0, 0)
    fn = lambda x: x  # noqa: E731
    assert cpu.on_device(fn) is fn


def test_normalisation_constants_follow_the_input():
    x = torch.zeros(1, 3, 2, 2, device="meta")
    assert _normalize(x, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)).device.type == "meta"


def test_missing_gpu_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "fake").mkdir()
    with pytest.raises(ValueError, match="CUDA is not available"):
        E.evaluate(None, tmp_path / "fake", "fc", device="cuda")
