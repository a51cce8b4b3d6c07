"""Per-rank ShardWriter files: no collisions, a crashed rank's leftovers repaired, merge order."""

import json

import torch
from safetensors.torch import save_file

from medvid.data.shards import ShardWriter, all_rows, merge_index


def test_rank_writers_repair_their_own_files_and_merge_in_order(tmp_path):
    a = ShardWriter(tmp_path, "f", 1, tag="rank-00000")
    b = ShardWriter(tmp_path, "f", 1, tag="rank-00001")
    a.add({"clip_id": "c2"}, {"c2/x": torch.ones(1)})
    b.add({"clip_id": "c1"}, {"c1/x": torch.zeros(1)})
    assert {p.name for p in tmp_path.glob("shard-*")} == {"shard-rank-00000-00000.safetensors",
                                                         "shard-rank-00001-00000.safetensors"}
    # rank 1 crashed: a shard renamed but never indexed, and a torn index line
    save_file({"c9/x": torch.ones(1)}, str(tmp_path / "shard-rank-00001-00001.safetensors"))
    with open(tmp_path / "index-rank-00001.jsonl", "a") as fh:
        fh.write('{"clip_id": "c9", "sha')
    again = ShardWriter(tmp_path, "f", 1, tag="rank-00000")  # another rank leaves rank 1's files alone
    assert again.done == {"c1", "c2"} and (tmp_path / "shard-rank-00001-00001.safetensors").exists()
    b = ShardWriter(tmp_path, "f", 1, tag="rank-00001")  # rank 1 repairs its own
    assert not (tmp_path / "shard-rank-00001-00001.safetensors").exists()
    assert (tmp_path / "index-rank-00001.jsonl").read_text().endswith("\n") and b.done == {"c1", "c2"}
    # a single process sees every rank's clips as done and numbers its own shards apart
    one = ShardWriter(tmp_path, "f", 1)
    one.add({"clip_id": "c0"}, {"c0/x": torch.ones(1)})
    assert one.done == {"c0", "c1", "c2"} and (tmp_path / "shard-00000.safetensors").exists()
    assert merge_index(tmp_path, ["c0", "c1", "c2"]) == 3
    rows = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert [r["clip_id"] for r in rows] == ["c0", "c1", "c2"]
    assert [r["shard"] for r in rows] == ["shard-00000", "shard-rank-00001-00000", "shard-rank-00000-00000"]
    assert not list(tmp_path.glob("index-rank-*")) and len(all_rows(tmp_path)) == 3
    ShardWriter(tmp_path, "f", 1)  # merged rank shards are indexed: nothing is removed
    assert len(list(tmp_path.glob("shard-*"))) == 3
