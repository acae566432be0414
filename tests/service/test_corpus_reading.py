"""Uploads are read by processes of their own: a 190 MB column file took the API to 12.3 GB and
kept 12.1 GB after, and freeing it stalled every request for 25 s (a scale audit)."""

from __future__ import annotations

import functools
import multiprocessing.forkserver
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.service import reader_hooks
from tests.service.fixtures import CONLL_OPTIONS, CONLL_TRAIN, ApiSession


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


def _set(monkeypatch: pytest.MonkeyPatch, **settings: object) -> None:
    from service.settings import reset_settings

    for name, value in settings.items():
        monkeypatch.setenv(f"TAGSMITH_{name.upper()}", str(value))
    reset_settings()


def _two_reads_at_once(tmp_path: Path, log: Path) -> list[tuple[float, float]]:
    from service.corpus_reading import summarize_corpus
    from service.stored_corpora import SAMPLED_SPLITS

    train = tmp_path / "train.txt"
    train.write_text(CONLL_TRAIN)
    reads = [
        threading.Thread(
            target=summarize_corpus, args=("column", {"train": train}, CONLL_OPTIONS, SAMPLED_SPLITS)
        )
        for _ in range(2)
    ]
    for read in reads:
        read.start()
    for read in reads:
        read.join(60)
    intervals = reader_hooks.read_intervals(log)
    assert len(intervals) == 2, intervals
    return intervals


def test_a_read_waits_for_a_free_reader_and_the_limit_follows_the_setting(
    service_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from service import corpus_reading

    log = tmp_path / "reads.log"
    monkeypatch.setattr(
        corpus_reading, "test_hook", functools.partial(reader_hooks.record_and_wait, log, 1.0)
    )
    _set(monkeypatch, corpus_readers=1)
    (first, second) = _two_reads_at_once(tmp_path, log)
    assert second[0] >= first[1], "the second read started before the first ended"

    # Two readers: the same reads overlap (so the check above sees a limit, not a slow start).
    log.unlink()
    _set(monkeypatch, corpus_readers=2)
    (first, second) = _two_reads_at_once(tmp_path, log)
    assert second[0] < first[1], "the second read waited with a reader free"


def _left_behind(api: ApiSession) -> list[str]:
    """Files of an upload left behind: stored files, and its temporary folder of the request."""
    from service.process_folders import REQUESTS_KIND, own_folder
    from service.settings import get_settings

    stored = get_settings().storage_root / "corpora"
    found = [str(p) for p in stored.rglob("*")] if stored.exists() else []
    return found + [str(p) for p in own_folder(REQUESTS_KIND).glob("upload-*")]


def test_an_upload_read_past_the_time_limit_is_a_413_and_nothing_is_stored(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import corpus_reading

    owner = api.new_owner()
    _set(monkeypatch, corpus_read_timeout_seconds=0.5)
    monkeypatch.setattr(corpus_reading, "test_hook", functools.partial(time.sleep, 120))
    started = time.monotonic()
    r = api.upload(owner)
    assert time.monotonic() - started < 60, "the slow reader was waited for"
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert detail.startswith("the corpus took too long to read: reading its files was stopped after 0.5 s")
    assert "raise TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS" in detail
    assert api.client.get("/corpora", headers=owner.headers).json()["items"] == []
    assert _left_behind(api) == []
    assert _readers_now(min_rss_mb=0) == [], "the slow reader was left running"

    monkeypatch.setattr(corpus_reading, "test_hook", None)
    assert api.upload(owner).status_code == 201


def test_an_upload_whose_reader_ends_unanswered_is_a_503_and_nothing_is_stored(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import corpus_reading

    owner = api.new_owner()
    monkeypatch.setattr(corpus_reading, "test_hook", reader_hooks.end_abruptly)
    r = api.upload(owner)
    assert r.status_code == 503, r.text
    assert r.json()["detail"].startswith(
        "the server could not finish reading the corpus (its reader process ended"
    )
    assert api.client.get("/corpora", headers=owner.headers).json()["items"] == []
    assert _left_behind(api) == []


DOCUMENTS = "".join(
    "-DOCSTART- O\n\n" + "".join(f"w{d}.{i}.a O\nw{d}.{i}.b B-PER\n\n" for i in range(30)) for d in range(3)
)


def test_a_split_comes_back_alone_with_the_neighbours_a_models_context_reads(
    service_env: str, tmp_path: Path
) -> None:
    # Linked sentences pickled one by one dragged their neighbours along: a dev split sampled
    # from train took the whole train with it. The split comes back alone, relinked, with the
    # words of other splits' sentences a model with document context reads.
    from engine.embeddings.transformer import _context_words
    from service.corpus_reading import read_split
    from service.stored_corpora import read_copied_corpus

    train = tmp_path / "train.txt"
    train.write_text(DOCUMENTS)
    options = {"column_map": {"0": "text", "1": "ner"}}
    here = read_copied_corpus("column", options, {"train": train})
    for context in (0, 3, 64):
        dev = read_split("column", options, {"train": train}, "dev", context)
        assert [s.to_tagged_string() for s in dev] == [s.to_tagged_string() for s in here.dev]
        assert [s.document_id for s in dev] == [s.document_id for s in here.dev]
        for sentence, expected in zip(dev, here.dev, strict=True):
            assert _context_words(sentence, context) == _context_words(expected, context)
        # Of the other splits' sentences, only words came along, and only with a context to read.
        ours = {id(s) for s in dev}
        others = [n for s in dev for n in (s.previous_sentence, s.next_sentence) if n and id(n) not in ours]
        assert bool(others) == (context > 0)
        assert not any(n.spans or n.get_labels("ner") for n in others)
    train_split = read_split("column", options, {"train": train}, "train", 0)
    assert [s.to_tagged_string() for s in train_split] == [s.to_tagged_string() for s in here.train]


def test_a_split_read_for_one_label_type_carries_that_type_only(service_env: str, tmp_path: Path) -> None:
    # A CoNLL-U token carried lemma, xpos, feats ... to an evaluation that scores one of them.
    from service.corpus_reading import read_split
    from service.stored_corpora import read_copied_corpus

    train = tmp_path / "train.txt"
    train.write_text("".join(f"w{i} NN B-PER\nx{i} VB O\n\n" for i in range(20)))
    options = {"column_map": {"0": "text", "1": "pos", "2": "ner"}}
    here = read_copied_corpus("column", options, {"train": train}).dev
    for kept, dropped in (("ner", "pos"), ("pos", "ner")):
        dev = read_split("column", options, {"train": train}, "dev", 0, label_type=kept)
        assert [s.to_tagged_string(kept) for s in dev] == [s.to_tagged_string(kept) for s in here]
        assert [[t.text for t in s] for s in dev] == [[t.text for t in s] for s in here]
        assert not any(s.get_labels(dropped) or s.spans.get(dropped) for s in dev)
        assert not any(dropped in t.labels for s in dev for t in s)
    assert any(s.get_labels("ner") for s in here) and any(t.labels.get("pos") for s in here for t in s)


def test_a_time_limit_of_months_reads_as_any_other(
    service_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # One poll of the whole limit raised OverflowError past about 24.8 days (2**31 ms): an
    # operator who set the limit that high to mean "none" had every read fail (a 500).
    from service.corpus_reading import summarize_corpus
    from service.stored_corpora import SAMPLED_SPLITS

    train = tmp_path / "train.txt"
    train.write_text(CONLL_TRAIN)
    for seconds in (1e7, 1e12):
        _set(monkeypatch, corpus_read_timeout_seconds=seconds)
        summary = summarize_corpus("column", {"train": train}, CONLL_OPTIONS, SAMPLED_SPLITS)
        assert summary.statistics["train"]["sentences"] > 0
