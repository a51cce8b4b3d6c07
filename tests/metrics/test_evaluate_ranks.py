"""``medvid evaluate`` under two gloo processes: the feature extraction is split across ranks and
the metrics equal one process's; rank 0's feature cache serves a later single-process run."""

import json

from medvid.metrics.evaluate import evaluate
from medvid.utils.sharding import spawn_local

from .test_inputs_cache_cli import _demo_sets

METRICS = ["fd_effnet_frame", "fd_effnet_clip"]


def test_two_processes_match_one(tmp_path):
    real, fake = _demo_sets(tmp_path, n=5)
    kw = dict(bootstrap=10, effnet_resolution=32, report=False)
    one = evaluate(real, fake, METRICS, tmp_path / "one", cache_dir=None, **kw)
    spawn_local(evaluate, 2, real, fake, METRICS, tmp_path / "two", cache_dir=tmp_path / "cache", **kw)
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["metrics"] == json.loads(json.dumps(one["metrics"]))
    assert two["cache"]["misses"] == 2  # the real set's features, as in one process; rank 0 stored them
    again = evaluate(real, fake, METRICS, None, cache_dir=tmp_path / "cache", **kw)
    assert again["cache"]["misses"] == 0 and again["metrics"] == one["metrics"]
