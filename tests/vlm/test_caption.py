import json

import pytest

from medvid.curation.manifest import read_manifest
from medvid.vlm.caption import CaptionConfig, caption, clip_context

from .conftest import make_clip


@pytest.fixture
def manifest(tmp_path):
    recs = []
    for i in range(3):
        make_clip(tmp_path / "clips" / f"c{i}.mp4", seed=i)
        recs.append({"path": f"clips/c{i}.mp4", "id": f"c{i}", "title": "Parasternal long axis" if i == 0 else ""})
    make_clip(tmp_path / "clips" / "done.mp4", seed=9)
    recs.append({"path": "clips/done.mp4", "id": "done", "brief_caption": "b", "detailed_caption": "d"})  # imported
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


class SpyModel:
    """Stands in for the VLM: records requests, answers by prompt kind, can fail on call N."""

    name = "spy"

    def __init__(self, fail_on_call=None):
        self.calls, self.fail_on_call = [], fail_on_call

    def generate(self, requests, max_new_tokens=128):
        self.calls.append(requests)
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt  # the run is interrupted here
        kind = "brief" if "brief caption" in requests[0][1] else "detailed"
        return [f"{kind} {frames.shape[0]} frames" for frames, _ in requests]


def test_caption_end_to_end_with_tiny_model(manifest, tiny_vlm_dir):
    cfg = CaptionConfig(model=str(tiny_vlm_dir), batch_size=2, max_new_tokens_brief=4, max_new_tokens_detailed=6,
                        image_size=64)
    stats = caption(manifest, cfg, progress=False)
    assert (stats["captioned"], stats["skipped"], stats["errors"]) == (3, 1, [])
    recs = {r["id"]: r for r in read_manifest(manifest)}
    for i in range(3):
        r = recs[f"c{i}"]
        assert r["caption_model"] == tiny_vlm_dir.name
        assert isinstance(r["brief_caption"], str) and r["caption"] == r["detailed_caption"]
    assert "caption_model" not in recs["done"] and recs["done"]["brief_caption"] == "b"
    # resume: nothing left for this model, and the model is not even loaded
    again = caption(manifest, CaptionConfig(model="/nonexistent/" + tiny_vlm_dir.name), progress=False)
    assert again["captioned"] == 0 and again["skipped"] == 4


def test_interrupted_run_resumes_where_it_stopped(manifest):
    spy = SpyModel(fail_on_call=3)  # batch 1 = calls 1-2 (brief, detailed); dies in batch 2
    with pytest.raises(KeyboardInterrupt):
        caption(manifest, CaptionConfig(batch_size=2), model=spy, progress=False)
    recs = read_manifest(manifest)
    assert [r.get("caption_model") for r in recs] == ["spy", "spy", None, None]
    spy2 = SpyModel()
    stats = caption(manifest, CaptionConfig(batch_size=2), model=spy2, progress=False)
    assert stats["captioned"] == 1 and len(spy2.calls) == 2 and len(spy2.calls[0]) == 1
    recs = read_manifest(manifest)
    assert recs[2]["brief_caption"] == "brief 8 frames" and recs[2]["detailed_caption"] == "detailed 8 frames"


def test_prompts_carry_context_and_eight_frames(manifest):
    spy = SpyModel()
    caption(manifest, CaptionConfig(batch_size=4), model=spy, progress=False)
    brief_requests = spy.calls[0]
    assert len(brief_requests) == 3 and all(frames.shape[0] == 8 for frames, _ in brief_requests)
    assert "Title: Parasternal long axis" in brief_requests[0][1]
    assert "Title:" not in brief_requests[1][1]
    assert clip_context({"title": " ", "description": "Echo of a child"}).endswith("Description: Echo of a child")


def test_overwrite_and_bad_clip(manifest, tmp_path):
    recs = read_manifest(manifest)
    recs[1]["path"] = "clips/missing.mp4"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in recs))
    stats = caption(manifest, CaptionConfig(batch_size=2, overwrite=True), model=SpyModel(), progress=False)
    assert stats["captioned"] == 3 and [e["id"] for e in stats["errors"]] == ["c1"]
    recs = {r["id"]: r for r in read_manifest(manifest)}
    assert "caption_error" in recs["c1"] and recs["done"]["brief_caption"] == "brief 8 frames"
    assert recs["done"]["caption"] == "detailed 8 frames"


def test_bad_manifest_line_names_file_and_line(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"path": "a.mp4"}\n{oops\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2: not valid JSON"):
        caption(bad, CaptionConfig(model="x"), model=SpyModel())
