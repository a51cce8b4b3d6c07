"""Captioning in two gloo processes (tiny random VLM), as --shard jobs + --merge, and after a lost
job: the same manifest as one process."""

import shutil

import pytest

from medvid.vlm.caption import CaptionConfig, caption
from medvid.utils.sharding import parts_folder, spawn_local

from .test_caption import SpyModel, manifest  # noqa: F401  (fixture)


def copy(manifest, to):
    shutil.copytree(manifest.parent, to)
    return to / manifest.name


def test_two_processes_match_one_with_a_tiny_vlm(manifest, tiny_vlm_dir, tmp_path):  # noqa: F811
    # one clip per batch: a padded batch of a random model may pick other tokens than a lone clip
    cfg = CaptionConfig(model=str(tiny_vlm_dir), batch_size=1, max_new_tokens_brief=4, max_new_tokens_detailed=6,
                        image_size=64)
    one, two = copy(manifest, tmp_path / "one"), copy(manifest, tmp_path / "two")
    caption(one, cfg, progress=False)
    spawn_local(caption, 2, two, cfg, progress=False)
    assert two.read_text() == one.read_text()
    assert "caption_model" in one.read_text() and not parts_folder(two).exists()


def test_shard_jobs_merge_and_a_lost_job_resumes(manifest, tmp_path):  # noqa: F811
    one = copy(manifest, tmp_path / "one")
    caption(one, CaptionConfig(batch_size=1), model=SpyModel(), progress=False)
    jobs = copy(manifest, tmp_path / "jobs")
    before = jobs.read_text()
    s0 = caption(jobs, CaptionConfig(batch_size=1), model=SpyModel(), progress=False, shard="0/2")
    assert s0["captioned"] == 2 and jobs.read_text() == before  # only the job's part file is written
    with pytest.raises(KeyboardInterrupt):  # job 1/2 (c1; "done" is skipped) is lost mid-clip
        caption(jobs, CaptionConfig(batch_size=1), model=SpyModel(fail_on_call=2), progress=False, shard="1/2")
    merged = caption(jobs, CaptionConfig(batch_size=1, model="spy"), progress=False, merge=True)
    assert merged["captioned"] == 0 and jobs.read_text() != before
    assert jobs.read_text() != one.read_text()  # the lost clip is still missing
    spy = SpyModel()
    caption(jobs, CaptionConfig(batch_size=1), model=spy, progress=False)  # one process finishes it
    assert len(spy.calls) == 2  # one clip, brief + detailed
    assert jobs.read_text() == one.read_text()
