"""``medvid sample`` in two gloo processes, as --shard jobs + --merge, and resumed after a lost
rank: the same videos (noise is seeded per video) and the same contact sheet as one process."""

import json

import numpy as np
import pytest

from medvid.sampling import sample_videos
from medvid.utils.sharding import spawn_local

KW = dict(steps=3, batch_size=1, sampler="ddpm", seed=3, device="cpu")


def outputs(d, n=3):
    out = {}
    for k in range(n):
        z = np.load(d / f"video_{k:04d}.npz")
        out[k] = (z["frames"], z["latents"])
    return out, (d / "contact_sheet.png").read_bytes(), json.loads((d / "samples.json").read_text())


def same(a, b):
    assert a[0].keys() == b[0].keys()
    for k in a[0]:
        assert np.array_equal(a[0][k][0], b[0][k][0]) and np.array_equal(a[0][k][1], b[0][k][1]), k
    assert a[1:] == b[1:]


def test_two_processes_shard_jobs_and_a_lost_rank_match_one(tiny_run, tmp_path):
    sample_videos(tiny_run, 3, tmp_path / "one", **KW)
    ref = outputs(tmp_path / "one")

    spawn_local(sample_videos, 2, tiny_run, 3, tmp_path / "two", **KW)
    same(outputs(tmp_path / "two"), ref)

    jobs = tmp_path / "jobs"
    assert len(sample_videos(tiny_run, 3, jobs, shard="1/2", **KW)) == 1
    assert not (jobs / "contact_sheet.png").exists()
    with pytest.raises(ValueError, match="--shard"):
        sample_videos(tiny_run, 3, jobs, merge=True, **KW)
    # job 0/2 is lost; one process resumes: it samples videos 0 and 2 only, then writes the sheet
    (jobs / "video_0001.mp4").write_bytes(b"")  # a video from before the crash is not redone
    paths = sample_videos(tiny_run, 3, jobs, **KW)
    assert [p.name for p in paths] == ["video_0000.mp4", "video_0001.mp4", "video_0002.mp4"]
    assert (jobs / "video_0001.mp4").stat().st_size == 0
    same(outputs(jobs), ref)
    with pytest.raises(ValueError, match="other settings"):
        sample_videos(tiny_run, 3, jobs, **{**KW, "seed": 4})
