import json

from medvid.cli import main

from .conftest import make_clip


def test_caption_and_judge_commands(tmp_path, tiny_vlm_dir, capsys):
    make_clip(tmp_path / "clips" / "c0.mp4")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"path": "clips/c0.mp4", "id": "c0"}) + "\n")
    assert main(["caption", str(manifest), "--model", str(tiny_vlm_dir), "--max-new-tokens", "4"]) == 0
    assert "captioned 1 of 1 clips" in capsys.readouterr().out
    assert json.loads(manifest.read_text())["caption_model"] == tiny_vlm_dir.name

    out = tmp_path / "res" / "judge.json"
    assert main(["judge", "--videos", str(tmp_path / "clips"), "--model", str(tiny_vlm_dir), "--out", str(out),
                 "--max-new-tokens", "4", "--scale", "1-10"]) == 0
    printed = capsys.readouterr().out
    assert "medical_plausibility" in printed and "(scale 1-10)" in printed
    assert json.loads(out.read_text())[0]["video"] == "c0.mp4"
