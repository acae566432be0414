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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from service.cli import main
from service.db.models import Job, Model
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


def _interrupt_when(process: subprocess.Popen[str], ready: Callable[[], bool]) -> tuple[str, str]:
    """Ctrl-C (SIGINT) to ``process`` once ``ready()``; its stdout and stderr."""
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        return process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()


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
    out, err = _interrupt_when(process, lambda: len(live_api.polled) >= watching)  # it is watching
    job_id = job_id or live_api.polled[0]
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
    assert len(lines) == 2 and lines[1].startswith("  --split: "), err  # the option, not the body field


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
    assert text.splitlines() == ["queued, 0/10 epochs done  0%", "cancelled, 0/10 epochs done  0%"], text


def test_jobs_models_and_corpora_list_newest_first_with_their_filters(
    live_api: LiveApi, capsys: pytest.CaptureFixture[str]
) -> None:
    older, newer = live_api.submit_job(), live_api.submit_job()
    with session_scope() as session:
        job = session.get(Job, older)
        job.status, job.epoch, job.percent, job.best_dev_score = "completed", 10, 100.0, 0.8125
        job.created_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        owner_id = job.owner_id
        session.add(
            Model(
                owner_id=owner_id,
                job_id=older,
                name="tiny-ner",
                task="sequence_tagging",
                label_type="ner",
                labels=["PER"],
                storage_key="models/tiny-ner",
            )
        )
    url = ["--url", live_api.url]

    rc, out, err = _run(capsys, *url, "jobs")
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "PROGRESS", "BEST", "DEV", "CREATED", "(UTC)"]
    assert [line.split()[0] for line in lines[1:]] == [newer, older]
    assert lines[1].split()[2:5] == ["queued", "0/10", "0%"] and lines[1].split()[5] == "-"
    assert lines[2].split()[2:] == ["completed", "10/10", "100%", "0.8125", "2026-01-02", "03:04:05"]
    status_column = lines[0].index("STATUS")
    assert all(line[status_column:].split()[0] in {"STATUS", "queued", "completed"} for line in lines)

    rc, out, _ = _run(capsys, *url, "jobs", "--status", "completed")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [older]
    rc, out, _ = _run(capsys, *url, "jobs", "--limit", "1")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [newer]
    rc, out, err = _run(capsys, *url, "jobs", "--status", "running")
    assert (rc, out, err) == (0, "", "no running jobs\n")
    rc, _, err = _run(capsys, *url, "jobs", "--status", "nosuch")
    assert rc == 1 and err.startswith("error: GET /jobs -> 422"), err

    rc, out, _ = _run(capsys, *url, "jobs", "--json")
    assert rc == 0
    assert json.loads(out) == {"items": httpx.get(f"{live_api.url}/jobs").json()["items"]}

    rc, out, err = _run(capsys, *url, "models")
    assert (rc, err) == (0, "")
    model_id = httpx.get(f"{live_api.url}/models").json()["items"][0]["id"]
    assert [line.split()[:4] for line in out.splitlines()] == [
        ["ID", "NAME", "TASK", "LABEL"],
        [model_id, "tiny-ner", "sequence_tagging", "ner"],
    ]
    rc, out, _ = _run(capsys, *url, "models", "--json")
    assert [model["name"] for model in json.loads(out)["items"]] == ["tiny-ner"]

    rc, out, err = _run(capsys, *url, "corpora")
    assert (rc, err) == (0, "")
    corpora = httpx.get(f"{live_api.url}/corpora").json()["items"]
    header, *rows = (line.split() for line in out.splitlines())
    assert header == ["ID", "NAME", "FORMAT", "TRAIN", "DEV", "TEST", "CREATED", "(UTC)"]
    sentences = [
        [str(c["statistics"][split]["sentences"]) for split in ("train", "dev", "test")] for c in corpora
    ]
    assert len(corpora) == 2 and sentences[0][0] != "0"
    assert [row[:6] for row in rows] == [
        [corpus["id"], "tiny", "column", *counts] for corpus, counts in zip(corpora, sentences, strict=True)
    ]
    rc, out, _ = _run(capsys, *url, "corpora", "--json", "--limit", "1")
    assert json.loads(out) == {"items": corpora[:1]}


@pytest.mark.postgres
def test_a_listing_of_several_pages_has_each_job_once_while_jobs_are_submitted(
    live_api: LiveApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.cli import client

    ids = [live_api.submit_job() for _ in range(5)]
    monkeypatch.setattr(client, "PAGE_SIZE", 2)
    pages: list[str] = []
    call = client.Api.call

    def call_and_submit(api: client.Api, method: str, path: str, **kwargs: object) -> object:
        answer = call(api, method, path, **kwargs)
        if path == "/jobs":
            pages.append(str(kwargs.get("params")))
            live_api.submit_job()  # by offset, the next page would start with the last job shown
        return answer

    monkeypatch.setattr(client.Api, "call", call_and_submit)
    rc, out, err = _run(capsys, "--url", live_api.url, "jobs", "--json")
    assert (rc, err) == (0, "")
    assert [job["id"] for job in json.loads(out)["items"]] == ids[::-1]
    assert len(pages) == 3 and "cursor" in pages[1] and "offset" not in "".join(pages)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("jobs", "no jobs yet; submit one with tagsmith train SPEC.json"),
        (
            "models",
            "no models yet; train one with tagsmith train SPEC.json, or add one with tagsmith import-model",
        ),
        ("corpora", "no corpora yet; upload one with tagsmith upload TRAIN"),
    ],
)
def test_an_empty_list_says_so_and_how_to_make_one(
    live_api: LiveApi, capsys: pytest.CaptureFixture[str], command: str, message: str
) -> None:
    assert _run(capsys, "--url", live_api.url, command) == (0, "", message + "\n")
    rc, out, err = _run(capsys, "--url", live_api.url, command, "--json")
    assert (rc, json.loads(out), err) == (0, {"items": []}, "")


def test_ctrl_c_while_submitting_says_the_job_may_be_queued(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"corpus": {"ids": ["c1"]}, "label_type": "ner"}), encoding="utf-8")
    with socket.socket() as listener:  # takes the connection and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        process = subprocess.Popen(
            [TAGSMITH, "--url", url, "train", str(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        connections: list[socket.socket] = []

        def connected() -> bool:  # POST /jobs has connected (and waits for its answer)
            try:
                connections.append(listener.accept()[0])
            except TimeoutError:
                return False
            return True

        try:
            out, err = _interrupt_when(process, connected)
        finally:
            for connection in connections:
                connection.close()
    assert process.returncode == 130, out + err
    assert out == ""
    assert err.splitlines() == [
        "submit interrupted; the server may have queued the job anyway "
        "(tagsmith jobs to check, tagsmith cancel JOB to stop it)"
    ]
    assert "Traceback" not in err and "Aborted" not in err
