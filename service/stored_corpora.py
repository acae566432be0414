"""Reading a stored corpus back: its files from storage into a local folder, then the engine's
reader with the format and options it was uploaded with. The worker builds jobs from it; the API
derives text corpora and evaluates models on it. Imported by the worker: no FastAPI here."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from engine.data import Corpus, SampleMissingSplits
from engine.readers import read_corpus_files
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


def read_copied_corpus(format: str, options: dict[str, Any], paths: dict[str, Path]) -> Corpus:
    """The corpus of files ``copy_stored_files`` copied. A dev split that was not uploaded is
    sampled from train as at upload (same seed), so a job's splits are the ones the upload's
    statistics describe."""
    try:
        return read_corpus_files(format, paths, options, sample_missing_splits=SAMPLED_SPLITS)
    except CorpusFormatError as e:
        split = next((s for s, p in paths.items() if p.name == e.filename), e.filename)
        raise StoredCorpusUnreadable(
            f"its {split} split, stored by an older Tagsmith, does not read in this one: line {e.line}: "
            f"{e.reason}; upload the corpus again, corrected"
        ) from None


def read_stored_corpus(
    storage: Storage, format: str, options: dict[str, Any], files: dict[str, str], folder: Path
) -> Corpus:
    """The corpus whose split files are stored under ``files`` (split -> key), copied into
    ``folder`` (see ``copy_stored_files`` and ``read_copied_corpus``)."""
    return read_copied_corpus(format, options, copy_stored_files(storage, files, folder))
