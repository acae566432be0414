"""Language-model corpora (format ``text``): plain UTF-8 text, one sentence or paragraph per line.

Made from an upload (``POST /corpora`` with ``format=text``) or from the text of a tagging or
classification corpus already uploaded (``POST /corpora/{id}/text``: one line per sentence, the
same splits). Stored as ``corpora/<id>/<split>.txt``; the worker turns them into the engine's
corpus folder (``engine.language_model.corpus``) when a language-model job runs.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.readers.errors import CorpusFormatError
from engine.readers.files import read_text
from service.corpus_reading import read_texts
from service.db.models import Corpus, new_id
from service.db.session import session_scope
from service.errors import FieldError, Invalid
from service.logic.owned import owned_or_404
from service.logic.stored_reads import read_stored
from service.process_folders import REQUESTS_KIND, own_folder
from service.storage import get_storage

TEXT_FORMAT = "text"
TEXT_TASK = "language_model"
SUFFIX = ".txt"


def _format_error(e: CorpusFormatError, split: str, file: str) -> Invalid:
    return Invalid(
        f"{file} ({split}), line {e.line}: {e.reason}",
        [
            FieldError(
                ["body", split],
                e.reason,
                type="corpus_format",
                extra={"file": file, "split": split, "line": e.line, "reason": e.reason},
            )
        ],
    )


def _lines(text: str) -> list[str]:
    return [line for line in (" ".join(raw.split()) for raw in text.split("\n")) if line]


def _store(owner_id: str, name: str, options: dict[str, Any], texts: dict[str, list[str]]) -> Corpus:
    if len(texts.get("train", [])) < 2:
        source = options.get("from_corpus")
        where: list[str | int]
        if source is None:
            where, problem = ["body", "train"], "the train text needs at least two non-empty lines"
        else:  # the request has no train field: the corpus it names is what falls short
            where, problem = (
                ["path", "corpus_id"],
                f"corpus {source}'s train split has fewer than two sentences",
            )
        raise Invalid(
            problem,
            [FieldError(where, "at least two non-empty lines are needed (one is held out for validation)")],
        )
    corpus_id = new_id()
    storage = get_storage()
    files = {split: f"corpora/{corpus_id}/{split}{SUFFIX}" for split, lines in texts.items() if lines}
    statistics = {
        split: {"lines": len(lines), "characters": sum(len(line) + 1 for line in lines)}
        for split, lines in texts.items()
        if lines
    }
    try:
        for split, key in files.items():
            storage.put(key, ("\n".join(texts[split]) + "\n").encode("utf-8"))
        with session_scope() as session:
            row = Corpus(
                id=corpus_id,
                owner_id=owner_id,
                name=name,
                task=TEXT_TASK,
                format=TEXT_FORMAT,
                options=options,
                files=files,
                statistics=statistics,
                label_types={},
                has_documents=False,
            )
            session.add(row)
        return row
    except BaseException:
        storage.delete(f"corpora/{corpus_id}")
        raise


def create_text_corpus(owner_id: str, name: str, uploads: Iterable[Any]) -> Corpus:
    """``uploads``: ``service.logic.corpora.Upload`` items. Every file must be UTF-8 (422 names
    the file and line of the first bad byte)."""
    texts: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="text-", dir=own_folder(REQUESTS_KIND)) as tmp:
        for upload in uploads:
            path = Path(tmp) / f"{upload.split}{SUFFIX}"
            with path.open("wb") as out:
                shutil.copyfileobj(upload.stream, out, 1024 * 1024)
            try:
                texts[upload.split] = _lines(read_text(path))
            except CorpusFormatError as e:
                raise _format_error(e, upload.split, upload.filename) from None
    return _store(owner_id, name, {}, texts)


def text_corpus_from(owner_id: str, source_id: str, name: str | None) -> Corpus:
    """A text corpus with one line per sentence of ``source_id`` (split by split)."""
    with session_scope() as session:
        source = owned_or_404(session, Corpus, source_id, owner_id, "corpus")
        format, options, files, source_name = (
            source.format,
            dict(source.options or {}),
            dict(source.files),
            source.name,
        )
    if format == TEXT_FORMAT:
        raise Invalid(
            f"corpus {source_id} is already a text corpus",
            [FieldError(["path", "corpus_id"], "already a text corpus")],
        )
    # In a reader process: the parsed corpus is many times its files' size (service.corpus_reading).
    read = read_stored(source_id, files, "for its text", lambda paths: read_texts(format, options, paths))
    texts = {split: _lines("\n".join(lines)) for split, lines in read.items()}
    return _store(owner_id, name or f"{source_name}-text", {"from_corpus": source_id}, texts)
