import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, shift

from medvid.flow import DISFlow, RAFTFlow
from medvid.flow.estimators import frames_to_uint8
from medvid.utils.weights import MissingWeightsError


def _moving_texture(dx: float, dy: float, n: int = 3, size: int = 64) -> np.ndarray:
    """uint8 (n, 3, H, W): a smooth random texture translated by (dx, dy) pixels per frame."""
    rng = np.random.default_rng(0)
    base = gaussian_filter(rng.random((size + 16, size + 16)), 2.0)
    base = (base - base.min()) / (base.max() - base.min()) * 255
    frames = [shift(base, (dy * i, dx * i), order=3, mode="reflect")[8:-8, 8:-8] for i in range(n)]
    grey = np.clip(np.stack(frames), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, None], 3, axis=1)


def test_dis_recovers_a_known_translation():
    frames = _moving_texture(2.0, -1.0)
    flow = DISFlow()(frames)
    assert flow.shape == (2, 2, 64, 64) and flow.dtype == torch.float32
    inner = flow[:, :, 12:-12, 12:-12]
    np.testing.assert_allclose(inner[:, 0].median().item(), 2.0, atol=0.2)
    np.testing.assert_allclose(inner[:, 1].median().item(), -1.0, atol=0.2)


def test_float_frames_in_minus_one_one_equal_uint8():
    frames = _moving_texture(1.0, 1.0)
    as_float = torch.from_numpy(frames).float() / 127.5 - 1.0
    assert np.array_equal(frames_to_uint8(as_float), frames.transpose(0, 2, 3, 1))
    torch.testing.assert_close(DISFlow()(as_float), DISFlow()(frames))


def test_out_of_range_or_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        frames_to_uint8(torch.rand(3, 3, 8, 8) * 255)
    with pytest.raises(ValueError, match="at least 2 frames"):
        frames_to_uint8(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"\(T\+1, 3, H, W\)"):
        frames_to_uint8(np.zeros((2, 8, 8, 3), np.uint8))


class _StandInRaft(torch.nn.Module):
    """Records what RAFT would receive; predicts a flow equal to the first image's red channel."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, img1, img2, num_flow_updates: int = 12):
        self.seen.append((img1.clone(), img2.clone(), num_flow_updates))
        return [torch.zeros_like(img1[:, :2]), torch.cat([img1[:, :1], img2[:, :1]], 1)]


def test_raft_input_scaling_padding_and_cropping():
    """torchvision's RAFT takes (x/255 - 0.5)/0.5 (its Raft_Large_Weights.transforms()), sides % 8."""
    frames = np.random.default_rng(1).integers(0, 256, (4, 3, 13, 21), dtype=np.uint8)
    stand_in = _StandInRaft()
    flow = RAFTFlow(model=stand_in, iters=5, batch_size=2)(frames)
    assert flow.shape == (3, 2, 13, 21)
    img1 = torch.cat([s[0] for s in stand_in.seen])
    assert img1.shape[-2:] == (16, 24) and all(s[2] == 5 for s in stand_in.seen)
    expected = torch.from_numpy(frames[:-1].astype(np.float32)) / 127.5 - 1.0
    # pad 3 rows (1 top, 2 bottom) and 3 columns (1 left, 2 right); the crop undoes it exactly
    torch.testing.assert_close(img1[:, :, 1:14, 1:22], expected)
    torch.testing.assert_close(flow[:, 0], expected[:, 0])
    torch.testing.assert_close(flow[:, 1], torch.from_numpy(frames[1:, 0].astype(np.float32)) / 127.5 - 1.0)
    # float input in [-1, 1] reaches RAFT unchanged (up to the uint8 round trip)
    stand_in.seen.clear()
    RAFTFlow(model=stand_in)(torch.from_numpy(frames).float() / 127.5 - 1.0)
    torch.testing.assert_close(stand_in.seen[0][0][:, :, 1:14, 1:22], expected, atol=1e-6, rtol=0)


def test_raft_needs_weights_and_torchvision(tmp_path):
    with pytest.raises(MissingWeightsError, match="RAFT"):
        RAFTFlow(weights=None)
    fake = tmp_path / "raft.pth"
    torch.save({}, fake)
    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(ImportError, match="torchvision"):
            RAFTFlow(weights=fake)
    else:  # torchvision present: an empty state dict must fail loudly, not load nothing
        with pytest.raises(ValueError, match="missing keys"):
            RAFTFlow(weights=fake)
