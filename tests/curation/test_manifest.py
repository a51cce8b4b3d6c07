import json

import pytest

from medvid.curation.manifest import import_metadata, normalize_record, read_manifest
from medvid.data.manifest import write_jsonl


def test_medvideocap_column_names_are_imported(tmp_path):
    rec = normalize_record({"File Name": "abc.mp4", "Resolution": "720x480", "Bit Rate": "1200", "FPS": "30",
                            "Duration": "8.0", "Aesthetic Score": "5.1", "DOVER Score": "0.62",
                            "Camera Motion": "static", "Category": "Surgery", "Brief Caption": "A short one.",
                            "Detailed Caption": "A long one."})
    assert rec["file_name"] == rec["path"] == "abc.mp4" and rec["id"] == "abc"
    assert (rec["width"], rec["height"], rec["fps"], rec["duration"]) == (720, 480, 30.0, 8.0)
    assert rec["aesthetic_score"] == 5.1 and rec["technical_score"] == 0.62 and rec["bit_rate"] == 1200
    assert rec["brief_caption"] == "A short one." and rec["caption"] == rec["detailed_caption"] == "A long one."
    assert rec["camera_motion"] == "static" and rec["category"] == "Surgery"
    csv_file = tmp_path / "meta.csv"
    csv_file.write_text("File Name,Brief Caption\nx.mp4,hello\n")
    assert import_metadata(csv_file)[0]["brief_caption"] == "hello"


def test_manifest_round_trip_and_errors(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"path": "a.mp4", "id": "a"}])
    assert read_manifest(path) == [{"path": "a.mp4", "id": "a"}]
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temporary file
    path.write_text(json.dumps({"id": "no-path"}) + "\n")
    with pytest.raises(ValueError, match="m.jsonl:1: each line must be a JSON object with a 'path'"):
        read_manifest(path)
    with pytest.raises(ValueError, match="manifest not found"):
        read_manifest(tmp_path / "missing.jsonl")
