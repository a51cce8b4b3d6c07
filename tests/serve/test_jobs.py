"""The SQLite job queue: order, persistence across instances (a restart), cancel, no job run twice."""

import threading

from medvid.serve.jobs import QUEUE_FILE, JobQueue


def test_queue_survives_a_restart_and_requeues_the_interrupted_job(tmp_path):
    q = JobQueue(tmp_path)
    ids = [q.submit(lambda i: f"{i:05d}-video", {"prompt": f"p{k}", "seed": k})["id"] for k in range(3)]
    assert (tmp_path / QUEUE_FILE).is_file() and ids == [1, 2, 3]
    running = q.claim_next()
    assert running["id"] == 1 and running["status"] == "running" and running["params"] == {"prompt": "p0", "seed": 0}
    q.progress(1, 7, 10, 3.5, "step 7 of 10")
    assert q.cancel(3) == "queued" and q.get(3)["status"] == "cancelled"

    again = JobQueue(tmp_path)  # the server restarts (the first one was killed mid-video)
    assert again.get(1)["step"] == 7
    assert again.requeue_interrupted() == 1
    j = again.get(1)
    assert (j["status"], j["step"], j["eta"]) == ("queued", 0, None) and "starts again" in j["message"]
    assert [again.claim_next()["id"], again.claim_next()["id"], again.claim_next()] == [1, 2, None]
    again.finish(1, "done", "made in 1 s", video="00001-video.mp4")
    assert [j["status"] for j in again.recent()] == ["cancelled", "running", "done"]  # newest first
    assert again.count_active() == 1 and again.cancel(1) == "done" and again.get(1)["status"] == "done"
    assert again.cancel(2) == "running" and again.get(2)["message"] == "stopping"  # the worker stops it
    assert again.cancel(42) is None


def test_two_workers_never_claim_the_same_job(tmp_path):
    q = JobQueue(tmp_path)
    for k in range(40):
        q.submit(lambda i: f"v{i}", {"k": k})
    claimed: list[int] = []

    def worker():
        other = JobQueue(tmp_path)  # its own connections, as a second server process would have
        while (j := other.claim_next()) is not None:
            claimed.append(j["id"])

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(1, 41))


def test_recent_keeps_every_active_job(tmp_path):
    q = JobQueue(tmp_path)
    for k in range(6):
        q.submit(lambda i: f"v{i}", {})
    for job_id in (4, 5, 6):
        q.cancel(job_id)
    assert [j["id"] for j in q.recent(limit=2)] == [6, 5, 3, 2, 1]  # 2 finished + all 3 waiting
