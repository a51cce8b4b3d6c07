"""`medvid serve` in a real browser (headless Chromium over the DevTools protocol) with a tiny random
text-conditioned MedSora: submit, watch the progress, play the video, cancel, restart, traverse."""

import json

import pytest

from .cdp import Browser
from .conftest import Server

STEPS = 6  # denoising steps of the short test videos (guidance 1: one forward pass per step)
LONG = 1000  # steps of the videos that are watched half-way, then cancelled (long enough to still run)


def job_status(b, job_id):
    return b.js(f"(document.querySelector('.job[data-job-id=\"{job_id}\"]') || {{dataset: {{}}}}).dataset.status || null")


def wait_status(b, job_id, *statuses, timeout=120):
    """Wait until the queue in the page shows job ``job_id`` in one of ``statuses``."""
    wanted = json.dumps(list(statuses))
    return b.wait_for(f"{wanted}.includes((document.querySelector('.job[data-job-id=\"{job_id}\"]') || "
                      f"{{dataset: {{}}}}).dataset.status)", timeout=timeout, what=f"job {job_id} to be {' or '.join(statuses)}")


def submit(b, prompt, steps, seed):
    b.js(f"""(() => {{
        document.getElementById('prompt').value = {json.dumps(prompt)};
        document.getElementById('steps').value = {json.dumps(str(steps))};
        document.getElementById('guidance').value = '1';
        document.getElementById('seed').value = {json.dumps(str(seed))};
        document.getElementById('form-status').textContent = '';
        document.getElementById('generate').click(); return true; }})()""")
    status = b.wait_for("document.getElementById('form-status').textContent || "
                        "(!document.getElementById('form-error').hidden && 'ERROR ' + document.getElementById('form-error').textContent)",
                        what="the job to be queued")
    assert status.startswith("Queued as job"), status
    return int(status.rstrip(".").split()[-1])


def cancel(b, job_id):
    b.js(f"document.querySelector('.job[data-job-id=\"{job_id}\"] button.cancel').click(); true")
    wait_status(b, job_id, "cancelled")


@pytest.mark.browser
def test_prompt_queue_gallery_restart_in_chromium(text_checkpoint, tmp_path):
    gallery = tmp_path / "gallery"
    args = ("--checkpoint", str(text_checkpoint), "--out", str(gallery), "--max-steps", "1000")
    server = Server(*args, log=tmp_path / "serve-1.log")
    try:
        with Browser(tmp_path) as b:
            b.goto(server.url)
            b.wait_for("document.getElementById('model-info').textContent.includes('MedSora')", what="the form")
            # A text checkpoint: a prompt, a negative prompt, no class, no first frame, frames set by the model.
            shown = b.js("['row-prompt', 'row-negative', 'row-class', 'row-image', 'num_frames', 'frames-fixed']"
                         ".map(id => !document.getElementById(id).hidden)")
            assert shown == [True, True, False, False, False, True]

            # Bad values: a message in the page naming the field and the bound, never a traceback.
            b.js("document.getElementById('prompt').value = 'echocardiogram'; document.getElementById('steps').value = '5000';"
                 "document.getElementById('generate').click(); true")
            msg = b.wait_for("!document.getElementById('form-error').hidden && document.getElementById('form-error').textContent")
            assert "Steps" in msg and "1000" in msg and "Traceback" not in msg
            assert b.js("document.getElementById('steps').classList.contains('invalid')")
            b.js("document.getElementById('prompt').value = '   '; document.getElementById('steps').value = '5';"
                 "document.getElementById('generate').click(); true")
            assert "Prompt" in b.wait_for("document.getElementById('form-error').textContent.startsWith('Prompt') && "
                                          "document.getElementById('form-error').textContent")

            # A video made while the page watches: it reaches 100% and lands in the gallery.
            first = submit(b, "echocardiogram apical four chamber view", STEPS, 7)
            assert b.js("document.getElementById('form-error').hidden")
            wait_status(b, first, "done", timeout=300)  # the model loads first
            assert b.js(f"document.querySelector('.job[data-job-id=\"{first}\"] .job-detail').textContent").startswith("100%")
            assert b.js(f"document.querySelector('.job[data-job-id=\"{first}\"] progress').value") == 1

            # The gallery plays the video and shows its sidecar's values.
            b.wait_for("document.querySelectorAll('#gallery video').length === 1", what="the gallery card")
            played = b.js("""(async () => {
                const v = document.querySelector('#gallery video');
                await v.play();
                await new Promise(r => setTimeout(r, 700));
                return {ready: v.readyState, time: v.currentTime, width: v.videoWidth, paused: v.paused,
                        error: v.error && v.error.code}; })()""")
            assert played["error"] is None and played["ready"] >= 2 and played["time"] > 0 and played["width"] == 64, played
            name = b.js("document.querySelector('#gallery .video-card').dataset.name")
            side = json.loads((gallery / f"{name}.json").read_text())
            card = b.js("document.querySelector('#gallery .video-card').innerText")
            assert side["prompt"] in card and f"Seed\n{side['seed']}" in card and f"{side['settings']['steps']} steps" in card
            assert f"{side['frames']} frames" in card and side["seed"] == 7 and side["settings"]["guidance"] == 1.0
            hrefs = b.js("[...document.querySelectorAll('#gallery .links a')].map(a => a.getAttribute('href'))")
            assert hrefs == [f"files/{name}.mp4?download=1", f"files/{name}.json"]
            head = b.js(f"fetch('files/{name}.mp4?download=1').then(r => [r.status, r.headers.get('content-disposition')])")
            assert head[0] == 200 and "attachment" in head[1]

            # Path traversal: 404, never the file.
            for path in ("files/..%2f..%2f..%2f..%2fetc%2fpasswd", "files/%2fetc%2fpasswd", "files/queue.sqlite",
                         "files/..%2fserve-1.log", "files/.serve.lock"):
                assert b.js(f"fetch('{path}').then(r => r.status)") == 404, path

            # Live progress of a long video (step k of n, percent, time left); cancel a job queued behind
            # it, then the long one while it runs.
            long_job = submit(b, "colonoscopy of the sigmoid colon", LONG, 1)
            queued = submit(b, "ultrasound of the liver", STEPS, 2)
            wait_status(b, queued, "queued")
            live = b.wait_for(f"(t => /^step \\d+ of {LONG} · \\d+% · about .+ left$/.test(t) && t)(document.querySelector("
                              f"'.job[data-job-id=\"{long_job}\"] .job-detail').textContent)", what="live progress")
            k = int(live.split()[1])
            assert 1 < k < LONG and live.split(" · ")[1] == f"{round(100 * k / LONG)}%"
            cancel(b, queued)
            cancel(b, long_job)

            # Two jobs waiting when the server stops.
            again = submit(b, "colonoscopy of the sigmoid colon", LONG, 3)
            last = submit(b, "ultrasound of the liver", STEPS, 4)
            wait_status(b, again, "running")
            wait_status(b, last, "queued")
        server.stop(kill=True)  # killed mid-video, as by a power cut

        server = Server(*args, log=tmp_path / "serve-2.log")
        with Browser(tmp_path) as b:
            b.goto(server.url)
            b.wait_for("document.querySelectorAll('#gallery video').length === 1", what="the gallery after the restart")
            b.wait_for("document.querySelectorAll('.job').length === 5", what="every job after the restart")
            statuses = {j: job_status(b, j) for j in (first, long_job, queued)}
            assert statuses == {first: "done", long_job: "cancelled", queued: "cancelled"}
            assert job_status(b, again) in ("queued", "running") and job_status(b, last) == "queued"
            wait_status(b, again, "running")
            cancel(b, again)
            wait_status(b, last, "done", timeout=300)
            b.wait_for("document.querySelectorAll('#gallery video').length === 2", what="the second video")
            b.screenshot(tmp_path / "page.png")
    finally:
        server.stop()
