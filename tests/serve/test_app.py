"""The HTTP side of `medvid serve`: access token, host and origin checks, files only from the gallery,
bounded form values with messages, the queue (progress, ETA, cancel, full), the gallery listing."""

import base64
import io
import json
import os
import time

import pytest

from medvid.serve.backend import Capabilities
from medvid.serve.form import Limits

TOKEN = "s3cret-token-for-tests-0123"


def wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def job(server, job_id):
    return next(j for j in server.json("GET", "/api/jobs")[1]["jobs"] if j["id"] == job_id)


def test_token_is_required_on_every_request(app_server):
    s, _ = app_server(token=TOKEN)
    for path in ("/", "/api/info", "/api/jobs", "/api/gallery", "/app.js", "/files/x.mp4"):
        status, _, body = s.request("GET", path)
        assert status == 401 and b"access token" in body, path
    assert s.request("GET", "/api/info", headers={"X-Medvid-Token": "wrong" + TOKEN})[0] == 401
    assert s.request("POST", "/api/jobs", body={"prompt": "x"})[0] == 401
    assert s.request("GET", "/api/info", headers={"X-Medvid-Token": TOKEN})[0] == 200
    assert s.request("GET", "/api/info", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    # The printed link trades the token for a cookie and drops it from the address bar.
    status, headers, _ = s.request("GET", f"/?token={TOKEN}")
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"].split(";")[0]
    assert "httponly" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()
    status, headers, body = s.request("GET", "/", headers={"Cookie": cookie})
    assert status == 200 and b"New video" in body and "script-src 'self'" in headers["content-security-policy"]


def test_host_origin_and_content_type_checks(app_server):
    s, _ = app_server()
    # DNS rebinding: a loopback server answers only requests that name a loopback host.
    assert s.request("GET", "/api/info", headers={"Host": "evil.example:80"})[0] == 403
    assert s.request("GET", "/api/info", headers={"Host": f"localhost:{s.port}"})[0] == 200
    # Cross-site posts: another origin, or a body that is not JSON (a plain HTML form), are refused.
    assert s.request("POST", "/api/jobs", body={"prompt": "heart"}, headers={"Origin": "http://evil.example"})[0] == 403
    status, _, body = s.request("POST", "/api/jobs", raw=b"prompt=heart", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and b"JSON" in body
    status, _ = s.json("POST", "/api/jobs", {"prompt": "heart", "steps": 2},
                       headers={"Origin": f"http://127.0.0.1:{s.port}"})
    assert status == 201


def test_files_are_served_from_the_gallery_only(app_server, tmp_path):
    s, _ = app_server()
    gallery = tmp_path / "gallery"
    (tmp_path / "secret.mp4").write_bytes(b"TOPSECRET")
    (tmp_path / "secret.json").write_text('"TOPSECRET"')
    (gallery / "sub").mkdir()
    (gallery / "video.mp4").write_bytes(bytes(range(200)))
    (gallery / "notes.txt").write_text("not a served type")
    (gallery / ".hidden.json").write_text("{}")
    os.symlink(tmp_path / "secret.mp4", gallery / "link.mp4")
    os.symlink(tmp_path, gallery / "sub" / "up")
    attempts = ["/files/../secret.mp4", "/files/..%2fsecret.mp4", "/files/%2e%2e/secret.mp4", "/files/%2e%2e%2fsecret.json",
                "/files/sub/../../secret.mp4", "/files/sub%2f..%2f..%2fsecret.mp4", f"/files/{tmp_path}/secret.mp4",
                f"/files/%2f{str(tmp_path)[1:]}/secret.mp4", "/files//etc/passwd", "/files/..\\secret.mp4",
                "/files/link.mp4", "/files/sub/up/secret.mp4", "/files/queue.sqlite", "/files/.serve.lock",
                "/files/.hidden.json", "/files/notes.txt", "/files/sub", "/files/", "/files/video.mp4%00.json",
                "/files/../../../../../../etc/passwd"]
    for path in attempts:
        status, _, body = s.request("GET", path)
        assert status == 404 and b"TOPSECRET" not in body and b"root:" not in body, path
    status, headers, body = s.request("GET", "/files/video.mp4", headers={"Range": "bytes=10-19"})
    assert status == 206 and body == bytes(range(10, 20)) and headers["content-type"] == "video/mp4"  # seeking works
    assert "sandbox" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"


def test_bad_values_get_messages_not_tracebacks(app_server):
    s, _ = app_server(limits=Limits(max_prompt_chars=50, max_steps=30, max_queue=2))
    cases = [
        ({"prompt": ""}, "prompt", "describe the video"),
        ({"prompt": "x" * 51}, "prompt", "at most 50"),
        ({"prompt": 3}, "prompt", "must be text"),
        ({"prompt": "heart", "steps": 0}, "steps", "from 1 to 30"),
        ({"prompt": "heart", "steps": 31}, "steps", "from 1 to 30"),
        ({"prompt": "heart", "steps": "ten"}, "steps", "not a number"),
        ({"prompt": "heart", "steps": 2.5}, "steps", "whole number"),
        ({"prompt": "heart", "seed": -1}, "seed", "from 0"),
        ({"prompt": "heart", "guidance": -1}, "guidance", "from 0 to 20"),
        ({"prompt": "heart", "guidance": "nan"}, "guidance", "out of range"),
        ({"prompt": "heart", "num_frames": 9}, "num_frames", "clip length it was trained on"),
        ({"prompt": "heart", "image": "data:image/png;base64,AAAA"}, "image", "text only"),
        (["heart"], "", "JSON object"),
    ]
    for body, field, words in cases:
        status, answer = s.json("POST", "/api/jobs", body)
        assert status == 400 and answer["field"] == field and words in answer["error"], (body, answer)
    status, _, raw = s.request("POST", "/api/jobs", raw=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400 and b"malformed" in raw
    status, answer = s.json("POST", "/api/jobs", {"prompt": "heart", "image": "x" * (15 * 2**20)})
    assert status == 413 and answer["field"] == "image" and "smaller first frame" in answer["error"]
    assert [s.json("POST", "/api/jobs", {"prompt": "heart"})[0] for _ in range(3)] == [201, 201, 429]
    status, answer = s.json("POST", "/api/jobs", {"prompt": "heart"})
    assert status == 429 and "queue is full (2" in answer["error"]


def test_progress_eta_and_cancel(app_server, tmp_path):
    s, backend = app_server(steps=4)
    first = s.json("POST", "/api/jobs", {"prompt": "echocardiogram apical four chamber view", "steps": 4, "seed": 5})[1]["job"]
    second = s.json("POST", "/api/jobs", {"prompt": "ultrasound of the liver"})[1]["job"]
    third = s.json("POST", "/api/jobs", {"prompt": "colonoscopy"})[1]["job"]
    assert first["name"] == "00001-echocardiogram-apical-four-chamber-view" and first["params"]["seed"] == 5
    assert 0 <= second["params"]["seed"] < 2**31  # no seed given: one is drawn and recorded
    backend.release.release()
    j = wait(lambda: (j := job(s, first["id"]))["step"] == 1 and j)
    assert j["status"] == "running" and j["total"] == 4 and j["eta"] is None and j["message"] == "step 1 of 4"
    time.sleep(0.3)
    backend.release.release()
    j = wait(lambda: (j := job(s, first["id"]))["step"] == 2 and j)
    assert 0.2 < j["eta"] < 5  # (time per step so far) x (steps left)
    assert s.json("POST", f"/api/jobs/{third['id']}/cancel", {})[1]["job"]["status"] == "cancelled"
    backend.release.release()
    backend.release.release()
    done = wait(lambda: (j := job(s, first["id"]))["status"] == "done" and j)
    assert done["step"] == done["total"] == 4 and done["video_url"] == f"files/{first['name']}.mp4"
    # The second job runs; cancelling it stops it at its next step and nothing is written.
    wait(lambda: job(s, second["id"])["status"] == "running")
    assert s.json("POST", f"/api/jobs/{second['id']}/cancel", {})[0] == 200
    backend.release.release()
    assert wait(lambda: (j := job(s, second["id"]))["status"] == "cancelled" and j)["message"] == "cancelled while it ran"
    assert backend.started == [first["name"], second["name"]]  # the cancelled queued job never started
    assert not list((tmp_path / "gallery").glob(f"{second['name']}*"))
    assert s.json("POST", f"/api/jobs/{third['id']}/cancel", {}) == (409, {"error": f"job {third['id']} is already cancelled", "field": ""})
    assert s.json("POST", "/api/jobs/99/cancel", {})[0] == 404
    videos = s.json("GET", "/api/gallery")[1]["videos"]
    assert [v["name"] for v in videos] == [first["name"]] and videos[0]["meta"]["seed"] == 5


def test_gallery_lists_sidecars_judge_scores_and_reports(app_server, tmp_path):
    from medvid.t2v.generate import save_video, video_record

    import numpy as np

    s, _ = app_server()
    gallery = tmp_path / "gallery"
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    for i, name in enumerate(["a", "b"]):
        save_video(gallery, frames, 4.0, video_record(name=name, prompt=f"prompt {name}", negative_prompt=None, seed=i,
                                                      model="wan", checkpoint="ck", lora=None, source={}, settings={},
                                                      frames=frames, seconds=1.0))
        os.utime(gallery / f"{name}.json", (1000 + i, 1000 + i))
    (gallery / "unfinished.mp4").write_bytes(b"")  # no sidecar yet: not listed
    (gallery / "judge.json").write_text(json.dumps([
        {"video": "a.mp4", "prompt": "prompt a", "status": "ok", "model": "qwen", "raw": "...",
         "scores": {"text_alignment": 4, "medical_plausibility": 3, "visual_quality": 5}, "reasons": {"text_alignment": "ok"}}]))
    (gallery / "eval").mkdir()
    (gallery / "eval" / "report.html").write_text("<html>report</html>")
    status, body = s.json("GET", "/api/gallery")
    assert [v["name"] for v in body["videos"]] == ["b", "a"]  # newest first
    a = body["videos"][1]
    assert a["video"] == "files/a.mp4" and a["sidecar"] == "files/a.json" and a["meta"]["prompt"] == "prompt a"
    assert a["judge"] == [{"model": "qwen", "status": "ok", "scores": {"text_alignment": 4, "medical_plausibility": 3,
                                                                        "visual_quality": 5}, "reasons": {"text_alignment": "ok"}}]
    assert body["videos"][0]["judge"] == []
    assert body["reports"] == [{"title": "eval", "url": "files/eval/report.html"}]
    assert s.json("GET", "/api/info")[1]["reports"] == body["reports"]
    status, headers, page = s.request("GET", "/files/eval/report.html")
    assert status == 200 and page == b"<html>report</html>" and headers["content-security-policy"].startswith("sandbox")


def test_first_frame_upload_is_checked_and_kept_in_the_gallery(app_server, tmp_path):
    from PIL import Image

    caps = Capabilities("wan", "ck", "text", steps=50, guidance=5.0, num_frames=81, negative_prompt="blurry", first_frame=True)
    s, _ = app_server(caps=caps)
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), (200, 30, 30)).save(buf, format="JPEG")
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    for frames, words in ((80, "4k+1"), (3, "from 5 to 129"), (133, "from 5 to 129")):
        status, answer = s.json("POST", "/api/jobs", {"prompt": "heart", "num_frames": frames})
        assert status == 400 and answer["field"] == "num_frames" and words in answer["error"]
    assert "not a readable" in s.json("POST", "/api/jobs", {"prompt": "heart", "image": "data:image/png;base64,AAAA"})[1]["error"]
    status, answer = s.json("POST", "/api/jobs", {"prompt": "heart", "image": url, "num_frames": 17, "negative_prompt": ""})
    assert status == 201
    params = answer["job"]["params"]
    assert params["num_frames"] == 17 and params["negative_prompt"] == "" and params["image"].startswith("uploads/")
    saved = Image.open(tmp_path / "gallery" / params["image"])
    assert saved.format == "PNG" and saved.size == (12, 10)


def test_remote_hosts_need_the_flag(capsys):
    from medvid.cli import main
    from medvid.serve.cli import ServeConfig

    for host in ("0.0.0.0", "192.0.2.7", "127.0.0.2"):
        with pytest.raises(ValueError, match="--allow-remote"):
            ServeConfig(checkpoint="ck", host=host)
    with pytest.raises(ValueError, match="16 characters"):
        ServeConfig(checkpoint="ck", host="0.0.0.0", allow_remote=True, token="short")
    assert ServeConfig(checkpoint="ck", host="0.0.0.0", allow_remote=True).host == "0.0.0.0"
    assert main(["serve", "--checkpoint", "ck", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_servers_sharing_a_device_take_turns(app_server, tmp_path):
    from medvid.serve.app import create_app

    from .conftest import AppServer, GatedBackend

    s, backend = app_server(steps=1)
    caps = Capabilities("medsora", "ck", "text", steps=20, guidance=4.0, negative_prompt="")
    other_backend = GatedBackend(caps, steps=1)
    other = AppServer(create_app(other_backend, tmp_path / "other-gallery"))
    try:
        a = s.json("POST", "/api/jobs", {"prompt": "heart"})[1]["job"]
        wait(lambda: backend.started)
        b = other.json("POST", "/api/jobs", {"prompt": "liver"})[1]["job"]
        assert "another medvid serve is using cpu" in wait(lambda: job(other, b["id"])["message"].startswith("waiting") and
                                                            job(other, b["id"])["message"])
        assert other_backend.started == []
        backend.release.release()
        other_backend.release.release()
        wait(lambda: job(other, b["id"])["status"] == "done")
        assert job(s, a["id"])["status"] == "done"
    finally:
        other_backend.release.release()
        other.close()


def test_a_job_queued_for_another_model_is_not_run(app_server, tmp_path):
    from medvid.serve.jobs import JobQueue

    (tmp_path / "gallery").mkdir()
    JobQueue(tmp_path / "gallery").submit(lambda i: "old", {"prompt": "heart", "seed": 1, "steps": 2, "guidance": 4.0,
                                                           "served_by": {"model": "wan", "checkpoint": "/old", "lora": None}})
    s, backend = app_server()
    j = wait(lambda: (j := job(s, 1))["status"] == "failed" and j)
    assert "another model" in j["message"] and "/old" in j["message"] and backend.started == []
