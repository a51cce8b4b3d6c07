import numpy as np
import pytest

from medvid.curation.reader import sample_frames, uniform_indices
from medvid.utils.video import write_mp4
from medvid.utils.weights import MissingWeightsError
from medvid.vlm.model import VisionLanguageModel


def test_eight_uniform_frames_from_a_file(tmp_path):
    # frame i is a flat image of grey level 8*i: the sampled frames tell which indices were read
    frames = np.repeat(np.repeat(np.repeat((np.arange(30) * 8).astype(np.uint8)[:, None, None], 16, 1), 16, 2)[..., None], 3, -1)
    write_mp4(frames, tmp_path / "ramp.mp4", fps=10, crf=0)
    got = sample_frames(tmp_path / "ramp.mp4", 8)
    expected = np.linspace(0, 29, 8).round().astype(int)  # numpy's own spacing, first and last included
    assert got.shape == (8, 16, 16, 3)
    assert np.allclose(got[:, 8, 8, 0].astype(float) / 8, expected, atol=0.5)
    assert list(uniform_indices(3, 8)) == [0, 0, 1, 1, 1, 1, 2, 2]


def test_tiny_model_generates_for_a_batch(tiny_vlm):
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (8, 40, 56, 3), dtype=np.uint8) for _ in range(2))
    batched = tiny_vlm.generate([(a, "describe the video"), (b, "a much longer prompt about the heart echo")],
                                max_new_tokens=6)
    assert len(batched) == 2 and all(isinstance(t, str) for t in batched)
    # left padding and the attention mask make a batched reply equal the reply alone
    alone = tiny_vlm.generate([(b, "a much longer prompt about the heart echo")], max_new_tokens=6)
    assert batched[1] == alone[0]
    assert tiny_vlm.generate([], max_new_tokens=4) == []


def test_loader_errors(tmp_path):
    with pytest.raises(MissingWeightsError, match="local model folder"):
        VisionLanguageModel(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        VisionLanguageModel(tmp_path / "empty")


def test_device_defaults_to_auto_and_a_missing_gpu_is_named(tmp_path, monkeypatch):
    import argparse

    import torch

    from medvid.vlm.model import VisionLanguageModel, add_model_arguments

    p = argparse.ArgumentParser()
    add_model_arguments(p, 64)
    assert p.parse_args(["--model", "m"]).device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        VisionLanguageModel(tmp_path, device="cuda")
