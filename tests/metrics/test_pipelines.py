"""FVD / FID / IS end to end with tiny TorchScript detectors vs a direct computation that calls
the same detector by hand and applies the written-out scipy formula."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from medvid.metrics.evaluate import evaluate
from medvid.metrics.fid_is import inception_score


def direct_fd(a, b):
    """Fréchet distance with covariance / N (StyleGAN-V), scipy sqrtm, written out here."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False, bias=True), np.cov(b, rowvar=False, bias=True)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def load_frames(folder, names):
    out = []
    for n in names:
        f = np.load(folder / n)["frames"]
        out.append(np.repeat(f[..., None], 3, -1) if f.ndim == 3 else f)
    return out


def test_fvd_matches_direct_computation(video_dirs, tiny_i3d, tmp_path):
    real, fake = video_dirs
    res = evaluate(real, fake, ["fvd"], tmp_path / "out", i3d=tiny_i3d, cache_dir=None, bootstrap=20, report=False)
    det = torch.jit.load(str(tiny_i3d))
    # real: the 16-frame videos (the 10-frame one is dropped); fake: the first 16 frames of each
    r = np.stack(load_frames(real, [f"r{i}.npz" for i in range(4)]))
    f = np.stack([v[:16] for v in load_frames(fake, [f"video_{i:04d}.npz" for i in range(4)])])
    with torch.no_grad():
        fr = det(torch.from_numpy(r).permute(0, 4, 1, 2, 3).contiguous(), rescale=True, resize=True, return_features=True)
        ff = det(torch.from_numpy(f).permute(0, 4, 1, 2, 3).contiguous(), rescale=True, resize=True, return_features=True)
    got = res["metrics"]["fvd"]
    assert got["value"] == pytest.approx(direct_fd(fr.double().numpy(), ff.double().numpy()), rel=1e-5, abs=1e-6)
    assert got["value"] > 0
    assert (got["num_real"], got["num_fake"]) == (4, 4)
    assert res["real"]["dropped_short"] == 1
    assert got["ci"][0] <= got["ci"][1]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]["fvd"]["value"] == got["value"]


def test_fid_and_is_match_direct_computation(video_dirs, tiny_inception):
    real, fake = video_dirs
    res = evaluate(real, fake, ["fid", "is"], None, inception=tiny_inception, cache_dir=None, bootstrap=0)
    det = torch.jit.load(str(tiny_inception))
    from medvid.data.readers import open_video

    with open_video(real / "short.mp4") as rd:
        short = rd.read(np.arange(rd.num_frames))
    # real: every frame of every video (sorted by name: r0..r3, short)
    r = np.concatenate(load_frames(real, [f"r{i}.npz" for i in range(4)]) + [short])
    f = np.concatenate(load_frames(fake, [f"video_{i:04d}.npz" for i in range(4)]))
    x = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    with torch.no_grad():
        fr, ff = det(x(r), return_features=True), det(x(f), return_features=True)
        probs = det(x(f), no_output_bias=True).double().numpy()
    assert res["metrics"]["fid"]["value"] == pytest.approx(direct_fd(fr.double().numpy(), ff.double().numpy()), rel=1e-5)
    assert res["metrics"]["fid"]["num_real"] == len(r) == 74 and res["metrics"]["fid"]["num_fake"] == 80
    # IS written out: 10 consecutive splits of 8 frames
    scores = []
    for i in range(10):
        p = probs[i * 8 : (i + 1) * 8]
        scores.append(np.exp((p * (np.log(p) - np.log(p.mean(0)))).sum(1).mean()))
    assert res["metrics"]["is"]["value"] == pytest.approx(np.mean(scores), rel=1e-6)
    assert res["metrics"]["is"]["std"] == pytest.approx(np.std(scores), rel=1e-5, abs=1e-9)


def test_inception_score_extremes():
    n, k = 100, 5
    assert inception_score(np.full((n, k), 1 / k))[0] == pytest.approx(1.0)
    confident = np.eye(k)[np.arange(n) % k]  # one-hot, each class equally often in every split
    mean, std = inception_score(confident, num_splits=10)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-12)


def test_missing_weights_are_skipped_and_others_run(video_dirs):
    real, fake = video_dirs
    res = evaluate(real, fake, ["fvd", "fid", "motion_smoothness"], None, cache_dir=None, bootstrap=0)
    assert "i3d_torchscript.pt" in res["skipped"]["fvd"]
    assert "inception-2015-12-05.pt" in res["skipped"]["fid"]
    assert "motion_smoothness_blend" in res["metrics"]


def test_bad_metric_name_and_folder(video_dirs, tmp_path):
    real, fake = video_dirs
    with pytest.raises(ValueError, match="--metrics: unknown"):
        evaluate(real, fake, ["fvd", "fdv"], None)
    with pytest.raises(ValueError, match="--fake"):
        evaluate(real, tmp_path / "nowhere", ["fvd"], None)


def test_weights_file_that_is_not_torchscript(video_dirs, tmp_path):
    real, fake = video_dirs
    bad = tmp_path / "i3d.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="--i3d"):
        evaluate(real, fake, ["fvd"], None, i3d=bad, cache_dir=None)
