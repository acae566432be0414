"""Uploads are read by processes of their own: a 190 MB column file took the API to 12.3 GB and
kept 12.1 GB after, and freeing it stalled every request for 25 s (a scale audit)."""

from __future__ import annotations

import multiprocessing.forkserver
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from tests.service.fixtures import CONLL_TRAIN, ApiSession


def _readers_now(min_rss_mb: float) -> list[int]:
    """The pids of the reader processes (children of the fork server) holding at least
    ``min_rss_mb``: busy reading, not one waiting for work."""
    server = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if server is not None and int(fields[1]) == server and int(fields[21]) * 4096 / 2**20 >= min_rss_mb:
            found.append(int(stat.parent.name))
    return found


def test_a_reader_that_dies_is_a_503_and_the_next_upload_is_read(api: ApiSession) -> None:
    owner = api.new_owner()
    assert api.upload(owner).status_code == 201  # starts the fork server
    big = CONLL_TRAIN * (30_000_000 // len(CONLL_TRAIN))  # seconds of reading
    answer: dict[str, Any] = {}
    upload = threading.Thread(target=lambda: answer.setdefault("r", api.upload(owner, train=big)))
    upload.start()
    deadline = time.monotonic() + 60
    killed: list[int] = []
    while not killed and time.monotonic() < deadline:
        for pid in _readers_now(min_rss_mb=300):
            os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
            killed.append(pid)
        time.sleep(0.05)
    upload.join(120)
    assert killed, "no reader process was seen"
    r = answer["r"]
    assert r.status_code == 503, r.text
    assert "reader process ended" in r.json()["detail"]
    assert (
        api.client.get("/corpora", headers=owner.headers).json()["items"][0]["statistics"]["train"][
            "sentences"
        ]
        < 10
    )
    assert api.upload(owner).status_code == 201


def test_more_uploads_than_readers_wait_their_turn_and_are_all_read(api: ApiSession) -> None:
    owner = api.new_owner()
    train = CONLL_TRAIN * 200  # long enough that the uploads overlap
    answers: list[Any] = []
    uploads = [
        threading.Thread(target=lambda i=i: answers.append(api.upload(owner, train=train, name=f"c{i}")))
        for i in range(6)
    ]
    for upload in uploads:
        upload.start()
    for upload in uploads:
        upload.join(120)
    assert sorted(r.status_code for r in answers) == [201] * 6, [r.text for r in answers]
    assert len(_readers_now(min_rss_mb=0)) == 0, "a reader process outlived its upload"
