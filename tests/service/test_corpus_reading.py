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
from tests.service.fixtures import CONLL_OPTIONS, CONLL_TRAIN, FASTTEXT_TRAIN, ApiSession


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


def _conllu(n: int, word: str) -> str:
    """``n`` CoNLL-U sentences in two documents, with a multi-word token and SpaceAfter=No."""
    out = []
    for i in range(n):
        newdoc = f"# newdoc id = {word}{i // 4}\n" if i % 4 == 0 else ""
        out.append(
            f"{newdoc}# sent_id = {word}-{i}\n# text = Don't {word}{i}.\n"
            "1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
            "1\tDo\tdo\tAUX\tVBP\tMood=Imp\t3\taux\t_\t_\n"
            "2\tn't\tnot\tPART\tRB\tPolarity=Neg\t3\tadvmod\t_\t_\n"
            f"3\t{word}{i}\t{word}\tVERB\tVB\tVerbForm=Inf\t0\troot\t_\tSpaceAfter=No\n"
            "4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_\n\n"
        )
    return "".join(out)


def _columns(n: int, word: str, tags: tuple[str, str, str], pos: tuple[str, str] = ("NN", "VB")) -> str:
    """``n`` three-token sentences (text, pos, ner), a document every four."""
    return "".join(
        ("-DOCSTART- -X- O\n\n" if i % 4 == 0 else "")
        + f"{word}{i} {pos[0]} {tags[0]}\nx{i} {pos[1]} {tags[1]}\ny{i} {pos[0]} {tags[2]}\n\n"
        for i in range(n)
    )


COLUMN_MAP = {"column_map": {"0": "text", "1": "pos", "2": "ner"}}
# format, options, train's text, and dev's and test's (``word`` tells the splits apart)
SPLIT_CASES: dict[str, tuple[str, dict[str, Any], Any]] = {
    "column": ("column", CONLL_OPTIONS, lambda w: CONLL_TRAIN.replace("EU", w).replace("Peter", w) * 3),
    # Train's BIOES or IOB1 tags, dev's and test's BIO: train's scheme reads them.
    "column-bioes": (
        "column",
        COLUMN_MAP,
        lambda w: _columns(12, w, ("B-PER", "E-PER", "S-LOC") if w == "train" else ("B-PER", "I-PER", "O")),
    ),
    "column-iob1": (
        "column",
        COLUMN_MAP,
        lambda w: _columns(12, w, ("I-PER", "I-PER", "O") if w == "train" else ("B-PER", "I-PER", "B-PER")),
    ),
    # Train's second column is token labels; dev's and test's look like tags, and stay labels.
    "column-token-labels": (
        "column",
        COLUMN_MAP,
        lambda w: _columns(12, w, ("B-PER", "I-PER", "O"), ("NN", "VB") if w == "train" else ("B-X", "O")),
    ),
    "column-forced-plain": (
        "column",
        {**COLUMN_MAP, "span_columns": {"ner": "plain"}},
        lambda w: _columns(12, w, ("PER", "PER", "B-LOC")),
    ),
    # Named without a scheme: plain in train, which only train's tags tell (train is read too).
    "column-named-span": (
        "column",
        {**COLUMN_MAP, "span_columns": ["ner"]},
        lambda w: _columns(12, w, ("PER", "PER", "O") if w == "train" else ("B-PER", "I-PER", "O")),
    ),
    "column-whole-file": (
        "column",
        {**COLUMN_MAP, "whole_file_document": True},
        lambda w: _columns(12, w, ("B-PER", "I-PER", "O")).replace("-DOCSTART- -X- O\n\n", ""),
    ),
    "conllu": ("conllu", {}, lambda w: _conllu(12, w)),
    "fasttext": ("fasttext", {}, lambda w: FASTTEXT_TRAIN.replace("movie", w) * 3),
    "trec": (
        "trec",
        {},
        lambda w: "".join(
            f"DESC:manner How did {w} {i} develop ?\nHUM:ind Who wrote {w} {i} ?\n" for i in range(8)
        ),
    ),
    "csv": (
        "csv",
        {"multi_label_separator": "|"},
        lambda w: "text,label\n" + "".join(f'"{w}, {i}",a|b\n{w} {i} again,c\n' for i in range(8)),
    ),
    "tsv": (
        "tsv",
        {},
        lambda w: "text\tlabel\n" + "".join(f"{w} {i}\ta\n{w} too {i}\tb\n" for i in range(8)),
    ),
    "jsonl": (
        "jsonl",
        {},
        lambda w: "".join(
            f'{{"text": "{w} {i}", "label": ["a", "b"]}}\n{{"text": "{w}", "label": 3}}\n' for i in range(8)
        ),
    ),
}
LAYOUTS = (("train", "dev", "test"), ("train", "dev"), ("train", "test"), ("train",))


def _split_files(
    tmp_path: Path, case: str, layout: tuple[str, ...]
) -> tuple[str, dict[str, Any], dict[str, Path]]:
    from engine.readers import FORMATS

    format, options, text = SPLIT_CASES[case]
    folder = tmp_path / case / "-".join(layout)
    folder.mkdir(parents=True)
    paths = {}
    for split in layout:
        # named as copy_stored_files names them
        paths[split] = folder / f"{split}{FORMATS[format].suffixes[0]}"
        paths[split].write_text(text(split))
    return format, options, paths


def _fingerprint(sentences: list[Any]) -> list[tuple[Any, ...]]:
    """All a read gives each sentence, its neighbours by their words."""

    def words(sentence: Any) -> tuple[str, ...] | None:
        return None if sentence is None else tuple(t.text for t in sentence.tokens)

    return [
        (
            [
                (t.text, t.idx, t.start_pos, t.end_pos, t.whitespace_after)
                + tuple(sorted((k, v.value, v.score) for k, v in t.labels.items()))
                for t in s.tokens
            ],
            {k: [(x.start, x.end, x.label.value, x.label.score) for x in v] for k, v in s.spans.items()},
            {k: [(x.value, x.score) for x in v] for k, v in s.labels.items()},
            (s.text, s.id, s.document_id, s.metadata),
            (words(s.previous_sentence), words(s.next_sentence)),
        )
        for s in sentences
    ]


@pytest.mark.parametrize("case", sorted(SPLIT_CASES))
def test_a_split_read_from_its_files_alone_is_the_whole_corpus_s(tmp_path: Path, case: str) -> None:
    # Each split was taken from the whole corpus read, every stored file parsed; now only the files
    # it needs are, and it must come out the same in every format and layout.
    from service.stored_corpora import read_copied_corpus, read_copied_split

    for layout in LAYOUTS:
        format, options, paths = _split_files(tmp_path, case, layout)
        whole = read_copied_corpus(format, options, paths)
        kinds = whole.label_kinds()  # what the upload stores as the corpus's label types
        for split in ("train", "dev", "test"):
            expected = _fingerprint(getattr(whole, split))
            assert _fingerprint(read_copied_split(format, options, paths, split, kinds)) == expected, (
                layout,
                split,
            )
            assert _fingerprint(read_copied_split(format, options, paths, split)) == expected, (layout, split)
        assert whole.dev, layout  # stored or sampled


@pytest.mark.parametrize(
    "case", ["column", "column-bioes", "column-token-labels", "column-forced-plain", "conllu", "csv"]
)
def test_a_stored_dev_or_test_split_is_read_without_parsing_train(tmp_path: Path, case: str) -> None:
    # Reading a stored dev split parsed train too (EWT's dev: 1.1 s, most of it train's). Train's
    # file is replaced by one no reader accepts: the splits read as before it was.
    from service.stored_corpora import StoredCorpusUnreadable, read_copied_corpus, read_copied_split

    format, options, paths = _split_files(tmp_path, case, ("train", "dev", "test"))
    whole = read_copied_corpus(format, options, paths)
    kinds = whole.label_kinds()
    paths["train"].write_text('\t\n\x00 no corpus "\n{\n')
    with pytest.raises(StoredCorpusUnreadable, match="its train split"):
        read_copied_corpus(format, options, paths)
    for split in ("dev", "test"):
        assert _fingerprint(read_copied_split(format, options, paths, split, kinds)) == _fingerprint(
            getattr(whole, split)
        )


def test_a_column_split_refused_alone_is_refused_as_with_train(tmp_path: Path) -> None:
    # Dev's tags are read with train's scheme: a stray tag is the same error without train.
    from service.stored_corpora import StoredCorpusUnreadable, read_copied_corpus, read_copied_split

    format, options, paths = _split_files(tmp_path, "column-bioes", ("train", "dev"))
    kinds = read_copied_corpus(format, options, paths).label_kinds()
    paths["dev"].write_text(paths["dev"].read_text().replace("I-PER", "o", 1))
    with pytest.raises(StoredCorpusUnreadable) as whole:
        read_copied_corpus(format, options, paths)
    with pytest.raises(StoredCorpusUnreadable) as alone:
        read_copied_split(format, options, paths, "dev", kinds)
    assert str(alone.value) == str(whole.value)
    assert str(alone.value).startswith(
        "its dev split, stored by an older Tagsmith, does not read in this one: line "
    )


@pytest.mark.parametrize("case", ["column", "column-whole-file", "conllu"])
def test_a_split_from_a_reader_keeps_the_whole_corpus_s_context(
    service_env: str, tmp_path: Path, case: str
) -> None:
    # The reader's way (its own files only, then sent detached) against the whole corpus read here.
    from engine.embeddings.transformer import _context_words
    from service.corpus_reading import read_split
    from service.stored_corpora import read_copied_corpus

    for layout in (("train", "dev", "test"), ("train",)):
        format, options, paths = _split_files(tmp_path, case, layout)
        whole = read_copied_corpus(format, options, paths)
        for split in ("dev", "test"):
            expected = getattr(whole, split)
            got = read_split(format, options, paths, split, 64, None, whole.label_kinds())
            assert [[t.text for t in s] for s in got] == [[t.text for t in s] for s in expected]
            assert _fingerprint(got) == _fingerprint(expected), (layout, split)
            for sentence, wanted in zip(got, expected, strict=True):
                assert _context_words(sentence, 64) == _context_words(wanted, 64)
