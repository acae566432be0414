"""The job commands against a real API served over HTTP (uvicorn in a thread, its queue
recording jobs instead of sending them, so they stay queued): cancel, Ctrl-C while watching,
and the messages of a 422."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from service.cli import main
from service.db.models import Job
from service.db.session import session_scope
from tests.service.fixtures import CONLL_OPTIONS, CONLL_TRAIN, configured_service

TAGSMITH = str(Path(sys.executable).parent / "tagsmith")


@dataclass
class LiveApi:
    url: str
    polled: list[str]  # job ids of every GET /jobs/{id}

    def submit_job(self) -> str:
        with httpx.Client(base_url=self.url) as http:
            corpus = http.post(
                "/corpora",
                data={"name": "tiny", "format": "column", "options": json.dumps(CONLL_OPTIONS)},
                files={"train": ("train.txt", CONLL_TRAIN.encode())},
            )
            assert corpus.status_code == 201, corpus.text
            spec = {"corpus": {"ids": [corpus.json()["id"]]}, "label_type": "ner"}
            job = http.post("/jobs", json=spec)
            assert job.status_code == 202, job.text
            return str(job.json()["id"])

    def status(self, job_id: str) -> str:
        return str(httpx.get(f"{self.url}/jobs/{job_id}").json()["status"])


@pytest.fixture
def live_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LiveApi]:
    import uvicorn

    from service import queue
    from service.app import create_app
    from service.logic import jobs

    with configured_service(monkeypatch, tmp_path, open_mode="true"):
        monkeypatch.setattr(queue, "enqueue_job", lambda job_id, queue_name: f"task-{job_id}")
        polled: list[str] = []
        get_job = jobs.get_job

        def recording_get_job(owner_id: str, job_id: str) -> object:
            polled.append(job_id)
            return get_job(owner_id, job_id)

        monkeypatch.setattr(jobs, "get_job", recording_get_job)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not server.started:
                assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
                time.sleep(0.05)
            yield LiveApi(f"http://127.0.0.1:{sock.getsockname()[1]}", polled)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


def test_cancel_prints_the_resulting_status_and_a_finished_job_is_an_error(
    live_api: LiveApi, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = live_api.submit_job()
    assert _run(capsys, "--url", live_api.url, "cancel", job_id) == (0, f"job {job_id} cancelled\n", "")
    assert live_api.status(job_id) == "cancelled"
    rc, out, err = _run(capsys, "--url", live_api.url, "cancel", job_id)
    assert (rc, out) == (1, "")
    assert err == f"error: POST /jobs/{job_id}/cancel -> 409: Conflict - job {job_id} is already cancelled\n"

    # a job a worker holds only gets the flag: the worker stops it
    running = live_api.submit_job()
    with session_scope() as session:
        job = session.get(Job, running)
        job.status, job.lease_owner = "running", "worker-1"
        job.lease_expires_at = datetime(2999, 1, 1, tzinfo=UTC)
    assert _run(capsys, "--url", live_api.url, "cancel", running) == (
        0,
        f"job {running} running, cancel requested: it stops at its next batch boundary\n",
        "",
    )


@pytest.mark.parametrize("command", ["watch", "train"])
def test_ctrl_c_while_watching_says_the_job_keeps_running(
    live_api: LiveApi, tmp_path: Path, command: str
) -> None:
    if command == "watch":
        job_id = live_api.submit_job()
        args = ["watch", job_id]
    else:
        probe = live_api.submit_job()  # its corpus is the spec's
        with httpx.Client(base_url=live_api.url) as http:
            spec = http.get(f"/jobs/{probe}").json()["spec"]
        (tmp_path / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        args = ["train", str(tmp_path / "spec.json")]
        job_id = ""
    # the job is read once by POST /jobs itself (train), then by every poll of the watch
    watching = 2 if command == "train" else 1
    live_api.polled.clear()
    process = subprocess.Popen(
        [TAGSMITH, "--url", live_api.url, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while len(live_api.polled) < watching:  # it is watching
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        job_id = job_id or live_api.polled[0]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    assert err.splitlines()[-1] == (
        f"stopped watching; job {job_id} keeps running "
        f"(tagsmith watch {job_id} to follow it, tagsmith cancel {job_id} to stop it)"
    )
    assert "Traceback" not in err and "Aborted" not in err
    assert live_api.status(job_id) == "queued"


def test_a_422_names_its_detail_once_and_each_field_once(
    live_api: LiveApi, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = _run(capsys, "--url", live_api.url, "evaluate", "m1", "c1", "--split", "nosuch")
    assert rc == 1
    lines = err.splitlines()
    assert lines[0] == "error: POST /models/m1/evaluate -> 422: Invalid input - 1 invalid field(s)", err
    assert len(lines) == 2 and lines[1].startswith("  body.split: "), err


def test_watch_into_a_log_file_writes_lines_not_a_redrawn_bar(live_api: LiveApi, tmp_path: Path) -> None:
    job_id = live_api.submit_job()
    log = tmp_path / "watch.log"
    with log.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [TAGSMITH, "--url", live_api.url, "watch", job_id], stdout=subprocess.PIPE, stderr=stderr
        )
        try:
            deadline = time.monotonic() + 60
            while len(live_api.polled) < 3:  # a few polls of the queued job
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            httpx.post(f"{live_api.url}/jobs/{job_id}/cancel")
            process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 1  # it ended cancelled
    text = log.read_text(encoding="utf-8")
    assert "\r" not in text
    assert text.splitlines() == ["queued epoch 0/10  0%", "cancelled epoch 0/10  0%"], text
