import json

import numpy as np
import pytest
import torch

from medvid.latents import load_vae, tiny_vae
from medvid.latents.fcvae import CausalResidual3d, FrequencyCompensatedVAE, compensated_video_vae
from medvid.latents.train_vae import train_vae
from medvid.latents.vae_eval import evaluate_vae


def _randomise(model: FrequencyCompensatedVAE, scale: float = 0.05):
    for p in model.trainable_parameters():
        p.data.normal_(0, scale)


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_untrained_compensation_equals_the_base_exactly(frames):
    base, fc = tiny_vae(seed=0, num_blocks=3), compensated_video_vae(tiny_vae(seed=0, num_blocks=3))
    x = torch.rand(1, frames, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        zb, zf = base.encode(x), fc.encode(x)
        assert zb.shape[1] == 1 + (frames - 1) // 4
        assert torch.equal(zb, zf)
        assert torch.equal(base.decode(zb), fc.decode(zf))
    assert len(fc.vae.encoder_blocks) == 2 and len(fc.vae.decoder_blocks) == 4  # 2 downsamplings; mid + 3 up


def test_only_compensation_trains_and_it_changes_the_output():
    fc = compensated_video_vae(tiny_vae(seed=0, num_blocks=3))
    _randomise(fc.vae)
    fc.vae.train()
    x = torch.rand(1, 5, 3, 16, 16) * 2 - 1
    from medvid.latents.train_vae import reconstruct

    recon = reconstruct(fc.vae, x.transpose(1, 2))
    recon.abs().mean().backward()
    assert all(p.grad is None for p in fc.vae.base.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fc.vae.trainable_parameters())
    assert not fc.vae.base.training  # frozen base never enters training mode
    with torch.no_grad():
        fc.vae.eval()
        assert not torch.equal(fc.decode(fc.encode(x)), tiny_vae(seed=0, num_blocks=3).decode(fc.encode(x)))


def test_causal_3d_block_is_chunking_invariant():
    torch.manual_seed(1)
    blk = CausalResidual3d(4, 2, dropout=0.0)
    blk.conv.weight.data.normal_()
    blk.norm = torch.nn.Identity()  # GroupNorm statistics are per chunk by design; isolate the cache
    x = torch.randn(1, 4, 5, 6, 6)
    with torch.no_grad():
        full = blk(x)
        blk.cache = None
        parts = torch.cat([blk(x[:, :, :1]), blk(x[:, :, 1:3]), blk(x[:, :, 3:])], dim=2)
    torch.testing.assert_close(parts, full)
    # reference: a plain Conv3d on the sequence with its first frame repeated twice in front
    padded = torch.cat([x[:, :, :1], x[:, :, :1], x], dim=2)
    torch.testing.assert_close(full, x + torch.nn.functional.conv3d(torch.relu(padded), blk.conv.weight,
                                                                       blk.conv.bias, padding=(0, 1, 1)))


def test_one_folder_round_trip_through_load_vae(tmp_path):
    fc = compensated_video_vae(tiny_vae(seed=0, num_blocks=3))
    _randomise(fc.vae)
    fc.eval()
    fc.save(tmp_path / "vae")
    files = {p.name for p in (tmp_path / "vae").iterdir()}
    assert {"config.json", "diffusion_pytorch_model.safetensors", "compensation.safetensors", "medvid_vae.json"} <= files
    loaded = load_vae(tmp_path / "vae")
    assert isinstance(loaded.vae, FrequencyCompensatedVAE)
    x = torch.rand(1, 5, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(x)), fc.decode(fc.encode(x)))
        single = loaded.encode_images(x[:, :2])  # joint-training images: each encoded alone
    assert single.shape[:2] == (1, 2)
    (tmp_path / "vae" / "compensation.safetensors").unlink()
    with pytest.raises(ValueError, match="compensation.safetensors"):
        load_vae(tmp_path / "vae")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from medvid.utils.video import write_mp4

    root = tmp_path_factory.mktemp("vae_videos")
    rng = np.random.default_rng(0)
    rows = []
    for k, split in enumerate(("train", "train", "val")):
        base = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
        frames = np.stack([np.roll(base, (i, i), axis=(0, 1))[:24, :24] for i in range(8)])
        write_mp4(frames, root / f"v{k}.mp4", fps=8)
        rows.append({"path": f"v{k}.mp4", "id": f"v{k}", "num_frames": 8, "fps": 8.0, "height": 24, "width": 24,
                     "duration": 1.0, "split": split})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "manifest.jsonl"


KW = dict(vae="tiny:3", batch_size=1, lr=1e-3, num_frames=9, frame_stride=1, resolution=16, num_images=1,
          checkpoint_every=2, progress=False, log_every=1)


def test_train_vae_resumes_exactly_and_evaluates(manifest, tmp_path):
    straight = train_vae(manifest, tmp_path / "a", steps=4, **KW)
    assert straight["trainable_parameters"] > 0 and "LPIPS" in straight["perceptual"]
    train_vae(manifest, tmp_path / "b", steps=2, **KW)
    resumed = train_vae(manifest, tmp_path / "b", steps=4, **KW)
    assert resumed["resumed_from"] == 2
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "vae" / "compensation.safetensors"))
    b = load_file(str(tmp_path / "b" / "vae" / "compensation.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "conv2" in k or k.endswith("conv.weight"))

    res = evaluate_vae(manifest, tmp_path / "a" / "vae", tmp_path / "eval", num_clips=1, num_frames=9,
                       frame_stride=1, resolution=16, progress=False)
    assert (tmp_path / "eval" / "side_by_side.png").is_file()
    saved = json.loads((tmp_path / "eval" / "vae_eval.json").read_text())
    assert saved["clips"] == 1 and set(saved["mean"]) == {"base", "compensated"}
    assert res["delta"]["psnr"] != 0.0  # trained compensation changes reconstructions


def test_eval_of_untrained_compensation_has_zero_delta(manifest, tmp_path):
    fc = compensated_video_vae(tiny_vae(seed=0, num_blocks=3))
    fc.save(tmp_path / "vae")
    res = evaluate_vae(manifest, tmp_path / "vae", tmp_path / "eval", num_clips=1, num_frames=9, frame_stride=1,
                       resolution=16, progress=False)
    assert res["delta"] == {"psnr": 0.0, "ssim": 0.0}
    # a compensated folder is fine-tuned further (its own blocks), not wrapped twice
    again = train_vae(manifest, tmp_path / "c", steps=1, **{**KW, "vae": str(tmp_path / "vae"), "num_images": 0})
    assert again["trainable_parameters"] == sum(p.numel() for p in fc.vae.trainable_parameters())
    with pytest.raises(ValueError, match="1 \\+ 8k"):
        train_vae(manifest, tmp_path / "x", steps=1, **{**KW, "num_frames": 5})


def test_bf16_cosine_training_resumes_exactly_and_follows_the_schedule(manifest, tmp_path):
    from medvid.latents.train_vae import lr_factor

    kw = {**KW, "precision": "bf16", "lr_schedule": "cosine", "trainable": "base", "num_images": 0, "batch_size": 2}
    straight = train_vae(manifest, tmp_path / "a", steps=4, **kw)
    train_vae(manifest, tmp_path / "b", steps=2, **kw)
    resumed = train_vae(manifest, tmp_path / "b", steps=4, **kw)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    # 5 % warm-up (at least one step), cosine to 0 at the end
    f = [lr_factor("cosine", s, 100) for s in range(100)]
    assert f[0] == pytest.approx(0.2) and f[4] == pytest.approx(1.0) and f[-1] < 1e-3
    assert all(a >= b for a, b in zip(f[4:], f[5:]))
    assert lr_factor("constant", 50, 100) == 1.0
    with pytest.raises(ValueError, match="precision"):
        train_vae(manifest, tmp_path / "x", steps=1, **{**KW, "precision": "fp16"})
