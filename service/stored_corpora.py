"""Reading a stored corpus back: its files from storage into a local folder, then the engine's
reader with the format and options it was uploaded with. The worker builds jobs from it; the API
derives text corpora and evaluates models on it. Imported by the worker: no FastAPI here."""

from __future__ import annotations

import shutil
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.data import Corpus, SampleMissingSplits, Sentence
from engine.readers import read_corpus_files
from engine.readers.column import split_file_span_columns
from engine.readers.errors import CorpusFormatError
from service.storage import Storage

# The service's corpora get a dev split from train when none was uploaded, never a test split:
# a job reports test scores only on a test file its owner chose (the engine's default, Flair's,
# would also take 10% of train away for a test split).
SAMPLED_SPLITS: SampleMissingSplits = "only_dev"


class StoredCorpusUnreadable(ValueError):
    """A stored corpus that this version's readers refuse (stored by an older Tagsmith, whose
    readers accepted it): the owner must upload it again, corrected."""


def copy_stored_files(storage: Storage, files: dict[str, str], folder: Path) -> dict[str, Path]:
    """The split files stored under ``files`` (split -> key), copied into ``folder``: split ->
    local path, named like the upload the service validated (split + the format's suffix)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for split, key in files.items():
        path = folder / Path(key).name
        with storage.open(key) as source, path.open("wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
        paths[split] = path
    return paths


@contextmanager
def _unreadable_as_stored(paths: dict[str, Path]) -> Iterator[None]:
    """A file of ``paths`` (split -> path) that the readers refuse: StoredCorpusUnreadable."""
    try:
        yield
    except CorpusFormatError as e:
        split = next((s for s, p in paths.items() if p.name == e.filename), e.filename)
        raise StoredCorpusUnreadable(
            f"its {split} split, stored by an older Tagsmith, does not read in this one: line {e.line}: "
            f"{e.reason}; upload the corpus again, corrected"
        ) from None


def read_copied_corpus(
    format: str,
    options: dict[str, Any],
    paths: dict[str, Path],
    sample_missing_splits: SampleMissingSplits = SAMPLED_SPLITS,
) -> Corpus:
    """The corpus of files ``copy_stored_files`` copied. A dev split that was not uploaded is
    sampled from train as at upload (same seed), so a job's splits are the ones the upload's
    statistics describe."""
    with _unreadable_as_stored(paths):
        return read_corpus_files(format, paths, options, sample_missing_splits=sample_missing_splits)


_SAMPLED: dict[SampleMissingSplits, frozenset[str]] = {
    True: frozenset({"dev", "test"}),
    "only_dev": frozenset({"dev"}),
    "only_test": frozenset({"test"}),
    False: frozenset(),
}


def _sampled_without(unread: Collection[str]) -> SampleMissingSplits:
    """``SAMPLED_SPLITS`` for a read that leaves the stored splits ``unread`` out: one stored
    must not be sampled from train in its place (which would also take its sentences from train)."""
    left = _SAMPLED[SAMPLED_SPLITS] - set(unread)
    return next(mode for mode, sampled in _SAMPLED.items() if sampled == left)


def read_copied_split(
    format: str,
    options: dict[str, Any],
    paths: dict[str, Path],
    split: str,
    label_kinds: Mapping[str, str] | None = None,
) -> list[Sentence]:
    """``read_copied_corpus(format, options, paths)``'s ``split``, the same sentences, from only
    the files it needs: train's for train or a split sampled from it, and otherwise the split's
    own. Column files read a dev or test file with the span columns found in train, which the
    corpus's label kinds (``label_kinds``: its ``label_types``, as the upload read them) tell
    without train in all but one case (``engine.readers.column.split_file_span_columns``); without
    them, train's file is read too."""
    if split == "train" or split not in paths:
        needed = {"train"}
    else:
        span_columns = (
            split_file_span_columns(label_kinds, options.get("span_columns"))
            if format == "column" and label_kinds is not None
            else None
        )
        if format != "column" or span_columns is not None:
            # In train's place, nothing sampled from it: a corpus reads its other files as it reads
            # train's, but for column files' span columns, which train's gave and are given here.
            alone = {**options, "span_columns": span_columns} if format == "column" else options
            with _unreadable_as_stored({split: paths[split]}):
                corpus = read_corpus_files(
                    format, {"train": paths[split]}, alone, sample_missing_splits=False
                )
            return corpus.train
        needed = {"train", split}
    read = {s: p for s, p in paths.items() if s in needed}
    corpus = read_copied_corpus(format, options, read, _sampled_without(set(paths) - needed))
    return list(getattr(corpus, split))


def read_stored_corpus(
    storage: Storage, format: str, options: dict[str, Any], files: dict[str, str], folder: Path
) -> Corpus:
    """The corpus whose split files are stored under ``files`` (split -> key), copied into
    ``folder`` (see ``copy_stored_files`` and ``read_copied_corpus``)."""
    return read_copied_corpus(format, options, copy_stored_files(storage, files, folder))
