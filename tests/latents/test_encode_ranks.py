"""``medvid encode`` in two gloo processes, as --shard jobs, and resumed after a lost rank: the
same index rows (in the same order) and the same tensors as one process.

One clip per batch: batched convolutions round differently for different batch compositions
(~1e-6, in one process too), and a rank's batches hold other clips than a single process's."""

import pytest
import torch

from medvid.data.datasets import ShardReader, read_index
from medvid.latents.encode import encode
from medvid.utils.sharding import spawn_local

from .test_encode import KW, prepared, vae  # noqa: F401  (module fixtures)

KW = {**KW, "batch_size": 1}


def cache(out):
    """index rows without the shard name, and every clip's tensors."""
    rows = read_index(out)
    reader = ShardReader(out)
    tensors = {}
    for r in rows:
        for what in ("video", "images"):
            tensors[f"{r['clip_id']}/{what}"] = reader.get(r["shard"], f"{r['clip_id']}/{what}")
    return [{k: v for k, v in r.items() if k != "shard"} for r in rows], tensors


def same(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], rtol=0, atol=0, msg=k)


@pytest.fixture(scope="module")
def reference(prepared, vae, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("one")
    encode(prepared, vae, out, clips_per_video=2, **KW)
    return cache(out)


def test_two_processes_match_one(prepared, vae, reference, tmp_path):  # noqa: F811
    spawn_local(encode, 2, prepared, vae, tmp_path, clips_per_video=2, **KW)
    same(cache(tmp_path), reference)
    assert not list(tmp_path.glob("index-rank-*"))  # merged
    assert {p.name for p in tmp_path.glob("shard-*")} >= {"shard-rank-00000-00000.safetensors",
                                                          "shard-rank-00001-00000.safetensors"}


def test_shard_jobs_lost_rank_and_world_size_change(prepared, vae, reference, tmp_path, monkeypatch):  # noqa: F811
    KW1 = {**KW, "shard_size": 1}
    # job 1 of 2 dies in its second shard (its first shard is kept), job 0 finishes
    s0 = encode(prepared, vae, tmp_path, clips_per_video=2, shard="0/2", **KW1)
    assert s0["encoded"] == 3 and not (tmp_path / "index.jsonl").exists()
    calls = {"n": 0}
    real = vae.encode_images

    def crash_on_second_batch(images, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("node lost")
        return real(images, *a, **k)

    monkeypatch.setattr(vae, "encode_images", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="node lost"):
        encode(prepared, vae, tmp_path, clips_per_video=2, shard="1/2", **KW1)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="--merge"):
        encode(prepared, vae, tmp_path, shard="1/2", merge=True, **KW1)
    # three jobs (another world size) finish the lost clip; --merge joins everything
    left = [encode(prepared, vae, tmp_path, clips_per_video=2, shard=f"{i}/3", **KW1)["encoded"] for i in range(3)]
    assert sum(left) == 2  # job 1/2's 3 clips, 1 committed before the crash
    s = encode(prepared, vae, tmp_path, clips_per_video=2, merge=True, **KW1)
    assert s["total_clips"] == 6 and s["encoded"] == 0
    same(cache(tmp_path), reference)
