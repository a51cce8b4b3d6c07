"""``medvid generate --batch`` in two gloo processes and as --shard jobs: the same videos and
sidecars (the timing aside) as one process, since each prompt carries its own seed."""

import json

import av
import numpy as np

from medvid.t2v.generate import GenerateConfig, generate
from medvid.utils.checkpoint import save_checkpoint
from medvid.utils.sharding import spawn_local

from .test_medsora_text import LATENT, parts  # noqa: F401  (fixture)


def checkpoint(model, t5_dir, run):
    sd = model.state_dict()
    state = {"model_config": dict(model.config), "latent_shape": list(LATENT), "learn_sigma": True,
             "diffusion": {"num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
             "vae": "tiny-random(seed=0)", "num_classes": 0}
    config = {"text": {"enabled": True, "encoder": "t5", "encoder_path": str(t5_dir), "caption_field": "caption",
                       "dropout": 0.1, "max_length": 16, "cache_dir": None}, "sample": {"steps": 250, "fps": 8.0}}
    save_checkpoint(run, 10, {"model": sd, "ema": sd}, state=state, config=config)
    return run


def outputs(out, names):
    res = {}
    for n in names:
        with av.open(str(out / f"{n}.mp4")) as c:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        side = json.loads((out / f"{n}.json").read_text())
        side.pop("seconds")
        res[n] = (frames, side)
    return res


def test_two_processes_and_shard_jobs_match_one(t5_dir, parts, tmp_path):  # noqa: F811
    run = checkpoint(parts[1], t5_dir, tmp_path / "run")
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps(["echocardiogram apical four chamber view", "ultrasound of the liver",
                                   {"prompt": "colonoscopy polyp", "seed": 11, "name": "polyp"}]))
    names = ["0000-echocardiogram-apical-four-chamber-view", "0001-ultrasound-of-the-liver", "polyp"]

    def cfg(out):
        return GenerateConfig(model="medsora", checkpoint=str(run), batch=str(prompts), out=str(out), steps=3,
                              guidance=3.0, device="cpu")

    one = generate(cfg(tmp_path / "one"), progress=False)
    assert sorted(p.stem for p in one["written"]) == sorted(names)
    ref = outputs(tmp_path / "one", names)

    spawn_local(generate, 2, cfg(tmp_path / "two"), progress=False)
    got = outputs(tmp_path / "two", names)
    for n in names:
        assert np.array_equal(got[n][0], ref[n][0]) and got[n][1] == ref[n][1], n

    jobs = tmp_path / "jobs"
    assert len(generate(cfg(jobs), progress=False, shard="1/2")["written"]) == 1
    rest = generate(cfg(jobs), progress=False)  # job 0/2 lost: one process makes the other two
    assert len(rest["written"]) == 2 and len(rest["skipped"]) == 1
    got = outputs(jobs, names)
    for n in names:
        assert np.array_equal(got[n][0], ref[n][0]) and got[n][1] == ref[n][1], n
