import csv
import json

import numpy as np
import pytest

from medvid.vlm.judge import JudgeConfig, format_table, judge, resolve_prompts

from .conftest import make_clip


@pytest.fixture
def videos(tmp_path):
    d = tmp_path / "gen"
    make_clip(d / "a.mp4", seed=0)
    (d / "a.json").write_text(json.dumps({"prompt": "an apical four-chamber echocardiogram"}))
    make_clip(d / "b.mp4", seed=1)  # from `medvid sample`: no prompt
    return d


class ScriptedModel:
    name = "scripted"

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []

    def generate(self, requests, max_new_tokens=128):
        self.requests += requests
        return [self.replies.pop(0) for _ in requests]


def test_judge_end_to_end_with_tiny_model(videos, tiny_vlm_dir, tmp_path):
    out = tmp_path / "res" / "judge.json"
    cfg = JudgeConfig(videos=str(videos), model=str(tiny_vlm_dir), out=str(out), max_new_tokens=8, image_size=64)
    summary = judge(cfg, progress=False)
    entries = json.loads(out.read_text())
    assert [e["video"] for e in entries] == ["a.mp4", "b.mp4"]
    for e in entries:
        assert set(e) >= {"video", "prompt", "scores", "reasons", "raw", "status"}
        assert set(e["scores"]) == {"text_alignment", "medical_plausibility", "visual_quality"}
        assert e["status"] in ("unparsed", "partial", "ok")  # gibberish never crashes the run
    assert entries[1]["prompt"] is None and entries[1]["reasons"]["text_alignment"] == "no prompt"
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [r["video"] for r in rows] == ["a.mp4", "b.mp4"]
    assert json.loads((out.parent / "judge_summary.json").read_text())["videos"] == 2
    assert summary["criteria"]["text_alignment"]["videos"] == 1


def test_scores_reasons_summary_and_resume(videos, tmp_path):
    out = tmp_path / "judge.json"
    model = ScriptedModel([
        '{"text_alignment": {"score": 4, "reason": "right view"}, "medical_plausibility": {"score": 3, "reason": "ok"},'
        ' "visual_quality": {"score": 2, "reason": "noisy"}}',
        "Medical plausibility: 5 - fine\nVisual quality: 4 - sharp",
    ])
    summary = judge(JudgeConfig(videos=str(videos), out=str(out)), model=model, progress=False)
    a, b = json.loads(out.read_text())
    assert a["scores"] == {"text_alignment": 4, "medical_plausibility": 3, "visual_quality": 2}
    assert a["reasons"]["visual_quality"] == "noisy" and a["status"] == "ok"
    assert b["scores"] == {"text_alignment": None, "medical_plausibility": 5, "visual_quality": 4} and b["status"] == "ok"
    # the no-prompt video was asked only about plausibility and quality
    assert "an apical four-chamber" in model.requests[0][1] and "text_alignment" not in model.requests[1][1]
    assert all(frames.shape[0] == 8 for frames, _ in model.requests)
    crit = summary["criteria"]
    assert crit["medical_plausibility"]["mean"] == pytest.approx(np.mean([3, 5]))
    assert crit["text_alignment"] == {"mean": 4.0, "std": 0.0, "parsed": 1, "videos": 1}
    assert "visual_quality" in format_table(summary)
    # rerun: both videos already judged by this model -> no new requests
    again = ScriptedModel([])
    judge(JudgeConfig(videos=str(videos), out=str(out)), model=again, progress=False)
    assert again.requests == []


def test_unreadable_video_is_recorded_default_out_in_the_video_folder(videos, tmp_path):
    (videos / "c.mp4").write_bytes(b"junk" * 100)
    model = ScriptedModel(["x", "y"])
    summary = judge(JudgeConfig(videos=str(videos)), model=model, progress=False)
    entries = json.loads((videos / "judge.json").read_text())  # where the evaluation report looks
    assert entries[2]["status"] == "error" and summary["errors"] == 1 and summary["unparsed"] == 2


def test_prompt_sources(videos, tmp_path):
    vids = sorted(videos.glob("*.mp4"))
    f = tmp_path / "p.json"
    f.write_text(json.dumps(["first", "second"]))
    assert list(resolve_prompts(vids, str(f)).values()) == ["first", "second"]
    f.write_text(json.dumps([{"video": "out/b.mp4", "prompt": "bee"}]))
    assert list(resolve_prompts(vids, str(f)).values()) == [None, "bee"]
    c = tmp_path / "p.csv"
    c.write_text("video,prompt\na.mp4,ay\nb.mp4,bee\n")
    assert list(resolve_prompts(vids, str(c)).values()) == ["ay", "bee"]
    f.write_text(json.dumps(["only one"]))
    with pytest.raises(ValueError, match="1 prompts for 2 videos"):
        resolve_prompts(vids, str(f))
    with pytest.raises(ValueError, match="no such file"):
        resolve_prompts(vids, str(tmp_path / "nope.json"))
    (videos / "a.json").write_text("{broken")
    with pytest.raises(ValueError, match="a.json: sidecar is not valid JSON"):
        resolve_prompts(vids, "sidecars")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="scale_min must be below"):
        JudgeConfig(scale_min=5, scale_max=1)
    with pytest.raises(ValueError, match="no such folder"):
        judge(JudgeConfig(videos=str(tmp_path / "none"), model="m"), model=ScriptedModel([]))
    with pytest.raises(ValueError, match="no videos"):
        judge(JudgeConfig(videos=str(tmp_path), model="m"), model=ScriptedModel([]))
