"""Curation in two gloo processes, as --shard jobs + --merge, and resumed after a lost rank: the
same clips, manifest and removals as one process."""

import json


from medvid.curation import curate as C
from medvid.utils.sharding import spawn_local

from .test_curate import small_cfg, src  # noqa: F401  (module fixture)


def outputs(out):
    clips = sorted(p.name for p in (out / "clips").iterdir())
    report = json.loads((out / "report.json").read_text())
    return ((out / "manifest.jsonl").read_text(), (out / "removed.jsonl").read_text(), clips,
            {k: report[k] for k in ("sources", "errors", "kept", "removed", "removed_by_filter")})


def test_two_processes_and_shard_jobs_match_one_process(src, tmp_path):  # noqa: F811
    C.curate(src, tmp_path / "one", small_cfg(), progress=False)
    ref = outputs(tmp_path / "one")
    assert ref[3]["kept"] == 2 and ref[3]["removed"] == 3

    spawn_local(C.curate, 2, src, tmp_path / "two", small_cfg(), progress=False)
    assert outputs(tmp_path / "two") == ref

    # independent jobs: nothing merged until --merge; a missing job is named
    jobs = tmp_path / "jobs"
    r = C.curate(src, jobs, small_cfg(), progress=False, shard="0/2")
    assert r["processed"] == 2 and not (jobs / "manifest.jsonl").exists()
    try:
        C.curate(src, jobs, small_cfg(), progress=False, merge=True)
        raise AssertionError("merge with a missing shard must fail")
    except ValueError as e:
        assert "--shard" in str(e)
    # the lost job's share is picked up by a 3-way split (another world size) that skips what is done
    done = [C.curate(src, jobs, small_cfg(), progress=False, shard=f"{i}/3")["processed"] for i in range(3)]
    assert sum(done) == 2 + 1  # job 1/2's two sources, and broken.mp4 retried
    C.curate(src, jobs, small_cfg(), progress=False, merge=True)
    assert outputs(jobs) == ref


def test_killed_rank_resumes_to_the_same_result(src, tmp_path, monkeypatch):  # noqa: F811
    C.curate(src, tmp_path / "ref", small_cfg(), progress=False)
    out = tmp_path / "out"
    # rank 1 of 2 was killed before saving anything: only rank 0's share is on disk, no manifest
    C.curate(src, out, small_cfg(), progress=False, shard="0/2")
    assert not (out / "manifest.jsonl").exists()
    calls = []
    real = C.process_source
    monkeypatch.setattr(C, "process_source", lambda *a: calls.append(a[1]) or real(*a))
    report = C.curate(src, out, small_cfg(), progress=False)  # one process resumes the lost half
    rels = sorted(p.relative_to(src).as_posix() for p in C.find_videos(src))
    assert sorted(calls) == sorted(set(rels[1::2]) | {"broken.mp4"})  # rank 1's share; an error is retried
    assert report["resumed_sources"] == len(set(rels[0::2]) - {"broken.mp4"})
    assert outputs(out) == outputs(tmp_path / "ref")


def test_cli_shard_jobs_then_merge(src, tmp_path, capsys):  # noqa: F811
    from medvid.cli import main

    base = [str(src), str(tmp_path / "out"), "--set", "min_side=64", "--set", "min_seconds=0.5",
            "--set", "text_engine=opencv"]
    for i in range(2):
        assert main(["curate", *base, "--shard", f"{i}/2"]) == 0
        assert f"shard {i}/2" in capsys.readouterr().out
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
    assert main(["curate", *base, "--merge"]) == 0
    assert '"sources": 4' in capsys.readouterr().out and (tmp_path / "out" / "manifest.jsonl").is_file()
    capsys.readouterr()
    assert main(["curate", *base, "--shard", "2/2"]) == 2  # the CLI's error boundary: one line, exit 2
    assert "I/N" in capsys.readouterr().err
    assert main(["curate", *base, "--shard", "0/2", "--merge"]) == 2
    assert "--merge" in capsys.readouterr().err
