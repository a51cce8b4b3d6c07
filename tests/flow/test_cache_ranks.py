"""``medvid flow-features`` in two gloo processes and after a lost --shard job: the same index
and tensors as one process."""

import torch

from medvid.data.datasets import ShardReader, read_index
from medvid.flow.cache import compute_flow_features
from medvid.utils.sharding import spawn_local

from .test_cache import PROTO, manifest  # noqa: F401  (module fixture)

KW = dict(shard_size=1, progress=False, **PROTO)


def cache(out):
    rows, reader = read_index(out), ShardReader(out)
    tensors = {f"{r['clip_id']}/layer{i}": reader.get(r["shard"], f"{r['clip_id']}/layer{i}")
               for r in rows for i in range(r["num_layers"])}
    return [{k: v for k, v in r.items() if k != "shard"} for r in rows], tensors


def test_two_processes_and_a_lost_shard_job_match_one_process(manifest, tmp_path):  # noqa: F811
    compute_flow_features(manifest, tmp_path / "one", **KW)
    ref_rows, ref = cache(tmp_path / "one")
    assert len(ref_rows) == 4

    spawn_local(compute_flow_features, 2, manifest, tmp_path / "two", **KW)
    rows, got = cache(tmp_path / "two")
    assert rows == ref_rows and got.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)

    # job 0/2 finished, job 1/2 was lost: one process does the rest and merges
    jobs = tmp_path / "jobs"
    assert compute_flow_features(manifest, jobs, shard="0/2", **KW)["computed"] == 2
    s = compute_flow_features(manifest, jobs, **KW)
    assert (s["computed"], s["already_done"], s["total_clips"]) == (2, 2, 4)
    rows, got = cache(jobs)
    assert rows == ref_rows
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)
