import pytest
import torch

from medvid.losses import PerceptualLoss, focal_frequency_loss, vae_reconstruction_loss

ffl_pkg = pytest.importorskip("focal_frequency_loss")

SETTINGS = [
    {},
    {"alpha": 2.0},
    {"patch_factor": 2},
    {"ave_spectrum": True},
    {"log_matrix": True},
    {"batch_matrix": True},
    {"alpha": 0.5, "patch_factor": 4, "log_matrix": True, "loss_weight": 3.0},
]


@pytest.mark.parametrize("kw", SETTINGS)
def test_ffl_equals_the_official_package(kw):
    pred = torch.randn(3, 2, 8, 16, requires_grad=True)
    target = torch.randn(3, 2, 8, 16)
    ref = ffl_pkg.FocalFrequencyLoss(**kw)(pred, target)
    ours = focal_frequency_loss(pred, target, **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    g_ref, = torch.autograd.grad(ref, pred)
    g_ours, = torch.autograd.grad(ours, pred)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-8)


def test_ffl_given_matrix_identical_inputs_and_videos():
    pred, target = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    m = torch.rand(2, 1, 3, 8, 8)
    torch.testing.assert_close(focal_frequency_loss(pred, target, matrix=m),
                               ffl_pkg.FocalFrequencyLoss()(pred, target, matrix=m))
    assert focal_frequency_loss(pred, pred).item() == 0.0  # 0/0 weights become 0, not NaN
    video, vt = torch.randn(2, 5, 3, 8, 8), torch.randn(2, 5, 3, 8, 8)
    torch.testing.assert_close(focal_frequency_loss(video, vt),
                               ffl_pkg.FocalFrequencyLoss()(video.flatten(0, 1), vt.flatten(0, 1)))
    with pytest.raises(ValueError, match="patch_factor"):
        focal_frequency_loss(pred, target, patch_factor=3)


def test_perceptual_is_skipped_with_a_note_when_unavailable():
    perc = PerceptualLoss(backbone_weights=None)
    if perc.available:  # pragma: no cover - only where lpips and its weights exist
        pytest.skip("LPIPS is available here")
    assert "LPIPS skipped" in perc.note
    x, y = torch.rand(1, 2, 3, 8, 8), torch.rand(1, 2, 3, 8, 8)
    assert perc(x, y).item() == 0.0
    terms = vae_reconstruction_loss(x, y, perc)
    expected = (x - y).abs().mean() + 0.1 * ffl_pkg.FocalFrequencyLoss()(x.flatten(0, 1), y.flatten(0, 1))
    torch.testing.assert_close(terms["loss"], expected)
