"""``medvid judge`` in two gloo processes (tiny random VLM), as --shard jobs + --merge, and after a
lost job: the same judge.json / judge.csv / summary as one process."""

import json

import pytest

from medvid.utils.sharding import parts_folder, spawn_local
from medvid.vlm.judge import JudgeConfig, judge

from .conftest import make_clip
from .test_judge import videos  # noqa: F401  (fixture)

REPLY = ('{"text_alignment": {"score": 4, "reason": "ok"}, "medical_plausibility": {"score": 3, "reason": "ok"}, '
         '"visual_quality": {"score": 2, "reason": "ok"}}')


class EchoModel:
    """Replies with fixed scores; can be interrupted on call N."""

    name = "echo"

    def __init__(self, fail_on_call=None):
        self.calls, self.fail_on_call = 0, fail_on_call

    def generate(self, requests, max_new_tokens=128):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        return [REPLY for _ in requests]


def files(out):
    summary = json.loads(out.with_name("judge_summary.json").read_text())
    summary.pop("files")
    return out.read_text(), out.with_suffix(".csv").read_text(), summary


def test_two_processes_match_one_with_a_tiny_vlm(videos, tiny_vlm_dir, tmp_path):  # noqa: F811
    make_clip(videos / "c.mp4", seed=2)
    kw = dict(videos=str(videos), model=str(tiny_vlm_dir), max_new_tokens=8, image_size=64, batch_size=1)
    judge(JudgeConfig(out=str(tmp_path / "one" / "judge.json"), **kw), progress=False)
    spawn_local(judge, 2, JudgeConfig(out=str(tmp_path / "two" / "judge.json"), **kw), progress=False)
    assert files(tmp_path / "two" / "judge.json") == files(tmp_path / "one" / "judge.json")
    assert not parts_folder(tmp_path / "two" / "judge.json").exists()


def test_shard_jobs_merge_and_a_lost_job(videos, tmp_path):  # noqa: F811
    for k in range(3):
        make_clip(videos / f"x{k}.mp4", seed=10 + k)
    one, jobs = tmp_path / "one" / "judge.json", tmp_path / "jobs" / "judge.json"
    judge(JudgeConfig(videos=str(videos), out=str(one)), model=EchoModel(), progress=False)
    assert judge(JudgeConfig(videos=str(videos), out=str(jobs)), model=EchoModel(), progress=False,
                 shard="0/2")["judged"] == 3
    assert not jobs.exists()
    with pytest.raises(KeyboardInterrupt):  # job 1/2 is lost in its second batch (one video in)
        judge(JudgeConfig(videos=str(videos), out=str(jobs), batch_size=1), model=EchoModel(fail_on_call=2),
              progress=False, shard="1/2")
    judge(JudgeConfig(videos=str(videos), out=str(jobs), model="echo"), progress=False, merge=True)
    assert len(json.loads(jobs.read_text())) == 4
    model = EchoModel()
    judge(JudgeConfig(videos=str(videos), out=str(jobs)), model=model, progress=False)  # finishes the rest
    assert model.calls == 1  # one batch of the one missing video
    assert files(jobs) == files(one)
