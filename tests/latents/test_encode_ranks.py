"""``medvid encode`` in two gloo processes, as --shard jobs, and resumed after a lost rank: the
same index rows (in the same order) and the same tensors as one process.

One clip per batch: batched convolutions round differently for different batch compositions
(~1e-6, in one process too), and a rank's batches hold other clips than a single process's."""

import pytest
import torch
from safetensors.torch import load_file

from medvid.data.datasets import read_index
from medvid.latents.encode import encode
from medvid.utils.sharding import spawn_local

from .test_encode import KW

# two windows per video, both flips, an image pool: every kind of row and tensor the cache holds
KW = {**KW, "batch_size": 1, "clips_per_video": 2, "flips": "both", "image_pool": 2}


def cache(out):
    """index rows (clips, then image pools) without the shard name, and every tensor stored."""
    rows, tensors = [], {}
    for folder in (out, out / "images"):
        index = read_index(folder)
        rows += [{k: v for k, v in r.items() if k != "shard"} for r in index]
        for shard in {r["shard"] for r in index}:
            tensors.update(load_file(str(folder / f"{shard}.safetensors")))
    return rows, tensors


def same(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], rtol=0, atol=0, msg=k)


@pytest.fixture(scope="module")
def reference(prepared, vae, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("one")
    encode(prepared, vae, out, **KW)
    return cache(out)


def test_two_processes_match_one(prepared, vae, reference, tmp_path):  # noqa: F811
    spawn_local(encode, 2, prepared, vae, tmp_path, **KW)
    same(cache(tmp_path), reference)
    assert not list(tmp_path.glob("index-rank-*"))  # merged
    assert {p.name for p in tmp_path.glob("shard-*")} >= {"shard-rank-00000-00000.safetensors",
                                                          "shard-rank-00001-00000.safetensors"}


def test_shard_jobs_lost_rank_and_world_size_change(prepared, vae, reference, tmp_path, monkeypatch):  # noqa: F811
    KW1 = {**KW, "shard_size": 1}
    # job 1 of 2 dies in its second shard (its first shard is kept), job 0 finishes
    s0 = encode(prepared, vae, tmp_path, shard="0/2", **KW1)
    assert s0["encoded"] == 6 and not (tmp_path / "index.jsonl").exists()  # windows 0, 2, 4 x 2 flips
    calls = {"n": 0}
    real = vae.posterior

    def crash_on_second_batch(video, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("node lost")
        return real(video, *a, **k)

    monkeypatch.setattr(vae, "posterior", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="node lost"):
        encode(prepared, vae, tmp_path, shard="1/2", **KW1)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="--merge"):
        encode(prepared, vae, tmp_path, shard="1/2", merge=True, **KW1)
    # three jobs (another world size) finish the lost clip; --merge joins everything
    left = [encode(prepared, vae, tmp_path, shard=f"{i}/3", **KW1)["encoded"] for i in range(3)]
    assert sum(left) == 4  # job 1/2's windows 3 and 5 (window 1 was committed before the crash)
    s = encode(prepared, vae, tmp_path, merge=True, **KW1)
    assert s["total_clips"] == 12 and s["encoded"] == 0
    same(cache(tmp_path), reference)
