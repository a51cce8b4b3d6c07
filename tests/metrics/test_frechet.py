"""Fréchet distance vs independent references: the scipy sqrtm formula written out here, a
closed form for commuting (diagonal) covariances, and pytorch-fid's own function if installed."""

import ast
import importlib.util

import numpy as np
import pytest
import scipy.linalg

from medvid.metrics import frechet_distance
from medvid.metrics.frechet import bootstrap_frechet, feature_stats, frechet_distance_from_features


def scipy_reference(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1.dot(s2)).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def pytorch_fid_function():
    """pytorch-fid's calculate_frechet_distance, taken from its source (its package imports
    torchvision at module level, which this project does not install)."""
    spec = importlib.util.find_spec("pytorch_fid")
    if spec is None:
        pytest.skip("pytorch-fid is not installed (optional oracle; the scipy reference always runs)")
    src = open(spec.submodule_search_locations[0] + "/fid_score.py").read()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "calculate_frechet_distance")
    ns = {"np": np, "linalg": scipy.linalg}
    exec(compile(ast.Module([fn], []), "fid_score.py", "exec"), ns)
    return ns["calculate_frechet_distance"]


def _sets(seed, n=200, d=16, shift=0.5):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    b = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + shift
    return a, b


def test_random_covariances_match_scipy():
    a, b = _sets(0)
    mu1, s1 = feature_stats(a, ddof=1)
    mu2, s2 = feature_stats(b, ddof=1)
    np.testing.assert_allclose(s1, np.cov(a, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(feature_stats(a, ddof=0)[1], np.cov(a, rowvar=False, bias=True), rtol=1e-12)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(scipy_reference(mu1, s1, mu2, s2), rel=1e-9)
    assert got == pytest.approx(frechet_distance_from_features(a, b, ddof=1), rel=1e-7)


def test_matches_pytorch_fid_random_and_ill_conditioned():
    fid = pytorch_fid_function()
    a, b = _sets(0)
    mu1, s1 = feature_stats(a, ddof=1)
    mu2, s2 = feature_stats(b, ddof=1)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(fid(mu1, s1, mu2, s2), rel=1e-9)
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    s_ill = q @ np.diag(np.logspace(0, -12, 20)) @ q.T
    s_other = np.cov(rng.standard_normal((100, 20)), rowvar=False)
    m = np.zeros(20)
    assert frechet_distance(m, s_ill, m + 1, s_other) == pytest.approx(fid(m, s_ill, m + 1, s_other), rel=1e-6)


def test_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    v1, v2 = rng.random(8) + 0.1, rng.random(8) + 0.1
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_ill_conditioned_and_rank_deficient():
    # fewer samples than dimensions: singular covariances (the small-evaluation case)
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((10, 40)), rng.standard_normal((12, 40)) * 2 + 0.3
    mu1, s1 = feature_stats(a)
    mu2, s2 = feature_stats(b)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(scipy_reference(mu1, s1, mu2, s2), rel=1e-5, abs=1e-6)
    assert got == pytest.approx(frechet_distance_from_features(a, b), rel=1e-5)
    # condition number ~1e12
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    s_ill = q @ np.diag(np.logspace(0, -12, 20)) @ q.T
    s_other = np.cov(rng.standard_normal((100, 20)), rowvar=False)
    m = np.zeros(20)
    assert frechet_distance(m, s_ill, m + 1, s_other) == pytest.approx(
        scipy_reference(m, s_ill, m + 1, s_other), rel=1e-6)
    # the sqrtm-free form agrees on the ill-conditioned pair too
    x1 = rng.multivariate_normal(np.zeros(20), s_ill, size=300)
    x2 = rng.standard_normal((300, 20)) + 1
    mu1, c1 = feature_stats(x1)
    mu2, c2 = feature_stats(x2)
    assert frechet_distance_from_features(x1, x2) == pytest.approx(frechet_distance(mu1, c1, mu2, c2), rel=1e-6)


def test_zero_for_identical_sets_and_nonzero_otherwise():
    a, b = _sets(3)
    mu, s = feature_stats(a)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-6
    assert abs(frechet_distance_from_features(a, a)) < 1e-8
    assert frechet_distance_from_features(a, b) > 1.0


def test_bootstrap_interval_brackets_the_estimate():
    a, b = _sets(4, n=100, d=4)
    d = frechet_distance_from_features(a, b)
    ci = bootstrap_frechet(a, b, num_samples=50)
    assert ci["low"] < d * 1.5 and ci["high"] > d * 0.7 and ci["low"] < ci["high"]
    assert ci == bootstrap_frechet(a, b, num_samples=50)  # seeded


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="same feature network"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
