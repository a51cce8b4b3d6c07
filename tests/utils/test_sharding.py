import json

import pytest

from medvid.utils import sharding as S


def test_parse_shard_and_take():
    assert S.parse_shard("1/4") == (1, 4) and S.parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="I/N"):
            S.parse_shard(bad)
    items = list(range(10))
    parts = [S.Sharding(r, 3).take(items) for r in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(parts, [])) == items
    assert S.Sharding().take(items) == items and S.Sharding().tag is None and S.Sharding().merges
    job = S.current("1/3")
    assert (job.rank, job.world_size, job.launched, job.merges, job.tag) == (1, 3, False, False, "rank-00001")
    assert not S.current("0/3").merges  # an independent job never merges: --merge does


def test_shard_refused_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="one or the other"):
        S.current("0/2")


def test_row_log_repairs_its_own_torn_line_and_readers_ignore_others(tmp_path):
    log = S.RowLog(tmp_path / "parts", 0)
    log.append([{"id": "a"}, {"id": "b"}])
    other = tmp_path / "parts" / "rank-00001.jsonl"
    other.write_text(json.dumps({"id": "c"}) + "\n" + '{"id": "d"')  # rank 1 is mid-write
    assert [r["id"] for r in S.read_parts(tmp_path / "parts")] == ["a", "b", "c"]
    assert other.read_text().endswith('{"id": "d"')  # another rank's file is never truncated
    with open(log.path, "a") as fh:
        fh.write('{"id": "torn')
    S.RowLog(tmp_path / "parts", 0)  # reopening repairs its own file
    assert [r["id"] for r in S.read_jsonl_tolerant(log.path)] == ["a", "b"]
    assert log.path.read_text().endswith("\n")
    S.clear_parts(tmp_path / "parts")
    assert not (tmp_path / "parts").exists()


def test_sum_counts():
    a = {"n": 1, "files": ["x"], "failed": {"p": "why"}, "model": "m", "ok": True}
    b = {"n": 2, "files": ["y"], "failed": {"q": "why"}, "model": "m", "ok": False}
    assert S.sum_counts([a, b]) == {"n": 3, "files": ["x", "y"], "failed": {"p": "why", "q": "why"}, "model": "m",
                                    "ok": True}


def _gather_worker(out):
    with S.sharding() as sh:
        got = sh.gather({"rank": sh.rank, "items": sh.take(list(range(5)))})
        first = sh.broadcast(f"from {sh.rank}")
        if sh.merges:
            out_path = __import__("pathlib").Path(out)
            out_path.write_text(json.dumps({"got": got, "first": first, "world": sh.world_size}))


def test_two_gloo_processes_gather_in_rank_order(tmp_path):
    S.spawn_local(_gather_worker, 2, str(tmp_path / "r.json"))
    r = json.loads((tmp_path / "r.json").read_text())
    assert r == {"got": [{"rank": 0, "items": [0, 2, 4]}, {"rank": 1, "items": [1, 3]}], "first": "from 0", "world": 2}
