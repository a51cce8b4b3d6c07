"""A job makes the same video as the command line does with the same values: `medvid sample` for class-
conditional and unconditional MedSora, `medvid generate` for text-conditioned MedSora and Wan."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from medvid.serve.backend import Backend, first_frame_supported, inspect_checkpoint
from medvid.serve.form import FormError, Limits, job_params

from .conftest import _t2v_helpers, tiny_checkpoint


@pytest.fixture
def written(monkeypatch):
    """file name -> the frames handed to write_mp4 (H.264 output itself is not byte-reproducible)."""
    import medvid.sampling.generate
    import medvid.utils.video

    frames, real = {}, medvid.utils.video.write_mp4

    def record(video, path, *args, **kw):
        frames[Path(path).name] = np.array(video)
        return real(video, path, *args, **kw)

    monkeypatch.setattr(medvid.utils.video, "write_mp4", record)
    monkeypatch.setattr(medvid.sampling.generate, "write_mp4", record)
    return frames


def run(backend, name, params, out):
    steps = []
    mp4 = backend.run(name, params, out, lambda k, n: steps.append((k, n)))
    return mp4, json.loads(mp4.with_suffix(".json").read_text()), steps


@pytest.mark.parametrize("conditioning", ["class", "none"])
def test_class_and_unconditional_jobs_equal_medvid_sample(conditioning, tmp_path, written):
    from medvid.cli import main

    ck = tiny_checkpoint(tmp_path / "run", conditioning)
    caps = inspect_checkpoint("medsora", ck)
    assert caps.conditioning == conditioning and caps.steps == 20 and caps.num_frames is None
    body = {"seed": 5, "steps": 3, "guidance": 2.5, "class_id": 2}
    if conditioning == "class":
        assert caps.num_classes == 3 and caps.guidance == 4.0
        with pytest.raises(FormError, match="from 0 to 2"):
            job_params({**body, "class_id": 3}, caps, Limits())
    else:
        assert caps.guidance is None and "unconditional" in caps.notes[0]
        with pytest.raises(FormError, match="does not apply"):
            job_params(body, caps, Limits())
        body = {"seed": 5, "steps": 3}
    params = job_params(body, caps, Limits())
    mp4, side, steps = run(Backend(caps, "cpu"), "job", params, tmp_path / "gallery")
    assert steps == [(1, 3), (2, 3), (3, 3)] and not (tmp_path / "gallery" / ".work" / "job").exists()
    assert side["seed"] == 5 and side["settings"]["steps"] == 3 and side["prompt"] is None and side["frames"] == 8
    argv = ["sample", "--checkpoint", str(ck), "--num", "1", "--seed", "5", "--steps", "3", "--out", str(tmp_path / "cli")]
    if conditioning == "class":
        assert side["settings"]["class_id"] == 2 and side["settings"]["guidance"] == 2.5
        argv += ["--class-id", "2", "--cfg", "2.5"]
    assert main(argv) == 0
    np.testing.assert_array_equal(written["job.mp4"], written["video_0000.mp4"])


def test_text_job_equals_medvid_generate(text_checkpoint, tmp_path, written):
    from medvid.cli import main

    caps = inspect_checkpoint("medsora", text_checkpoint)
    assert (caps.conditioning, caps.guidance, caps.negative_prompt, caps.first_frame) == ("text", 4.0, "", False)
    params = job_params({"prompt": " ultrasound of the liver ", "seed": 9, "steps": 3, "guidance": 3,
                         "negative_prompt": "blurry"}, caps, Limits())
    backend = Backend(caps, "cpu")
    mp4, side, steps = run(backend, "liver", params, tmp_path / "gallery")
    ours = written.pop("liver.mp4")
    assert steps == [(1, 3), (2, 3), (3, 3)] and backend.loaded
    assert side["prompt"] == "ultrasound of the liver" and side["negative_prompt"] == "blurry" and side["seed"] == 9
    assert main(["generate", "--model", "medsora", "--checkpoint", str(text_checkpoint), "--prompt", "ultrasound of the liver",
                 "--seed", "9", "--steps", "3", "--guidance", "3", "--negative-prompt", "blurry", "--name", "liver",
                 "--out", str(tmp_path / "cli")]) == 0
    np.testing.assert_array_equal(ours, written["liver.mp4"])
    cli_side = json.loads((tmp_path / "cli" / "liver.json").read_text())
    assert set(cli_side) == set(side) and cli_side["settings"] == side["settings"]
    # Empty negative prompt: MedSora's null text, as `medvid generate` without --negative-prompt.
    assert job_params({"prompt": "heart", "negative_prompt": ""}, caps, Limits())["negative_prompt"] is None


def test_wan_job_through_medvid_generate(tmp_path, written):
    from medvid.t2v import wan as W
    from medvid.t2v.generate import GenerateConfig, generate

    wan_dir = tmp_path / "wan"
    _t2v_helpers().make_wan_pipeline().save_pretrained(wan_dir)
    caps = inspect_checkpoint("wan", wan_dir)
    assert (caps.steps, caps.num_frames, caps.guidance) == (W.WAN_STEPS, W.WAN_NUM_FRAMES, W.WAN_GUIDANCE)
    assert caps.negative_prompt == W.WAN_NEGATIVE_PROMPT and caps.conditioning == "text"
    params = job_params({"prompt": "the heart", "seed": 3, "steps": 2, "num_frames": 5, "negative_prompt": "blurry"},
                        caps, Limits())
    mp4, side, steps = run(Backend(caps, "cpu", height=32, width=32), "heart", params, tmp_path / "gallery")
    ours = written.pop("heart.mp4")
    assert steps == [(1, 2), (2, 2)] and side["model"] == "wan" and side["frames"] == 5 and side["width"] == 32
    generate(GenerateConfig(model="wan", checkpoint=str(wan_dir), prompt="the heart", name="heart", seed=3, steps=2,
                            num_frames=5, height=32, width=32, negative_prompt="blurry", out=str(tmp_path / "cli")),
             progress=False)
    np.testing.assert_array_equal(ours, written["heart.mp4"])


def test_first_frame_appears_when_generate_takes_an_image(tmp_path, monkeypatch):
    """The form's first-frame field is offered only when `medvid generate` accepts ``image`` and the
    checkpoint is an image-to-video pipeline; the job hands the uploaded file to generate."""
    import medvid.t2v.generate as G
    from medvid.serve.backend import Capabilities

    i2v = tmp_path / "i2v"
    i2v.mkdir()
    (i2v / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline"}))
    t2v = tmp_path / "t2v"
    t2v.mkdir()
    (t2v / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    if "image" not in {f.name for f in dataclasses.fields(G.GenerateConfig)}:
        assert not first_frame_supported(i2v)

        @dataclasses.dataclass
        class WithImage(G.GenerateConfig):
            image: str | None = None

        monkeypatch.setattr(G, "GenerateConfig", WithImage)
    assert first_frame_supported(i2v) and not first_frame_supported(t2v)
    caps = Capabilities("wan", str(i2v), "text", first_frame=True)
    cfg = Backend(caps, "cpu")._config({"prompt": "heart", "seed": 1, "steps": 2, "guidance": 5.0,
                                        "image": "uploads/x.png"}, "heart", tmp_path / "gallery")
    assert cfg.image == str(tmp_path / "gallery" / "uploads" / "x.png") and cfg.name == "heart"


def test_bad_checkpoints_say_what_to_do(tmp_path):
    from medvid.utils.weights import MissingWeightsError

    with pytest.raises(ValueError, match="run folder"):
        inspect_checkpoint("medsora", tmp_path)
    with pytest.raises(ValueError, match="--lora applies to --model wan"):
        inspect_checkpoint("medsora", tmp_path, lora="x")
    with pytest.raises(MissingWeightsError):
        inspect_checkpoint("wan", tmp_path / "missing")
