"""Corpora: validate uploaded files with the engine's readers, store them, list, delete."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select

from engine.readers import FORMATS as READER_FORMATS
from engine.readers.errors import CorpusFormatError, ReaderOptionError
from service.corpus_reading import TIMEOUT_SETTING, ReaderProcessDied, ReadTooSlow, summarize_corpus
from service.db.models import Corpus, Job, new_id
from service.db.session import session_scope
from service.errors import Conflict, FieldError, Invalid, PayloadTooLarge, Unavailable
from service.logic import text_corpora
from service.logic.owned import owned_or_404
from service.logic.pages import Listing, Page, fetch_page
from service.process_folders import REQUESTS_KIND, own_folder
from service.storage import discard, get_storage
from service.stored_corpora import SAMPLED_SPLITS

# ``text``: plain text for language models (``service.logic.text_corpora``), no labels.
FORMATS: tuple[str, ...] = (*READER_FORMATS, text_corpora.TEXT_FORMAT)
SUFFIXES = {
    "column": ".txt",
    "conllu": ".conllu",
    "fasttext": ".txt",
    "csv": ".csv",
    "tsv": ".tsv",
    "jsonl": ".jsonl",
}
SPLITS = ("train", "dev", "test")
ACTIVE_STATUSES = ("queued", "running")
# Label values an API answer lists per label type and split (the most common): EWT's 14,194
# lemmas made its upload answer 245 kB. ``label_classes`` counts them all.
SHOWN_LABEL_VALUES = 100


def trimmed_statistics(statistics: Mapping[str, Any], keep: int) -> dict[str, Any]:
    """``statistics`` with each split's ``labels`` cut to the ``keep`` most common values of each
    label type, and ``label_classes`` saying how many values each type has in all (counted from
    the labels where the statistics predate it)."""
    trimmed = dict(statistics)
    for split in SPLITS:
        values = statistics.get(split)
        if not isinstance(values, dict) or not isinstance(values.get("labels"), dict):
            continue
        labels: dict[str, dict[str, int]] = values["labels"]
        classes = values.get("label_classes") or {name: len(counts) for name, counts in labels.items()}
        shown = {
            name: dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:keep])
            for name, counts in labels.items()
        }
        trimmed[split] = {**values, "labels": shown, "label_classes": classes}
    return trimmed


@dataclass
class Upload:
    split: str
    filename: str  # the client's name for the file: used in messages only, never as a path
    stream: BinaryIO


def _display_name(filename: str | None, split: str) -> str:
    name = Path(filename or "").name
    return re.sub(r"[^\w.\- ]", "_", name)[:200] or split


def _option_errors(
    options: Iterable[str], option_fields: Mapping[str, str] | None, message: str
) -> list[FieldError]:
    """One error per request field the options came from (``options`` for the JSON object)."""
    fields = dict.fromkeys((option_fields or {}).get(option, "options") for option in options)
    return [FieldError(["body", field], message) for field in fields or ["options"]]


def create_corpus(
    owner_id: str,
    name: str,
    format: str,
    options: dict[str, Any],
    uploads: list[Upload],
    option_fields: Mapping[str, str] | None = None,
) -> Corpus:
    """Parse every file (nothing is stored when one fails), then store files and row together.

    ``option_fields`` maps an option that came from a request field of its own (``column_map``)
    to that field, so an error in it names the field the user filled in; the rest are
    ``body.options``."""
    if format not in FORMATS:
        raise Invalid(
            f"unknown format {format!r}",
            [FieldError(["body", "format"], f"must be one of {', '.join(FORMATS)}")],
        )
    by_split = {u.split: u for u in uploads}
    if "train" not in by_split:
        raise Invalid("a train file is required", [FieldError(["body", "train"], "missing")])
    names = {u.split: _display_name(u.filename, u.split) for u in uploads}
    if format == text_corpora.TEXT_FORMAT:
        if options:
            raise Invalid(
                "the text format has no reader options",
                _option_errors(options, option_fields, "the text format takes no options"),
            )
        return text_corpora.create_text_corpus(
            owner_id, name, [Upload(u.split, names[u.split], u.stream) for u in by_split.values()]
        )
    suffix = READER_FORMATS[format].suffixes[0]
    with tempfile.TemporaryDirectory(prefix="upload-", dir=own_folder(REQUESTS_KIND)) as tmp:
        paths: dict[str, Path] = {}
        for split, upload in by_split.items():
            # Service-chosen names: the client's file name never reaches the file system.
            path = Path(tmp) / f"{split}{suffix}"
            with path.open("wb") as out:
                shutil.copyfileobj(upload.stream, out, 1024 * 1024)
            paths[split] = path
        try:
            corpus = summarize_corpus(format, paths, options, SAMPLED_SPLITS)
        except ReadTooSlow as e:
            # 413: the upload is more than this server reads in the time it allows (a retry
            # of the same files would take as long); nothing was stored yet.
            raise PayloadTooLarge(
                f"the corpus took too long to read: reading its files was stopped after {e.seconds:g} s "
                f"({TIMEOUT_SETTING}); upload a smaller corpus, or ask the operator to raise {TIMEOUT_SETTING}"
            ) from None
        except ReaderProcessDied:
            raise Unavailable(
                "the server could not finish reading the corpus (its reader process ended, most likely "
                "out of memory); try again later, or upload a smaller corpus"
            ) from None
        except CorpusFormatError as e:
            split = Path(e.file).stem
            file = names.get(split, e.filename)
            raise Invalid(
                f"{file} ({split}), line {e.line}: {e.reason}",
                [
                    FieldError(
                        ["body", split],
                        e.reason,
                        type="corpus_format",
                        extra={"file": file, "split": split, "line": e.line, "reason": e.reason},
                    )
                ],
            ) from None
        except ReaderOptionError as e:
            raise Invalid(
                f"invalid reader options: {e}", _option_errors(e.options, option_fields, str(e))
            ) from None
        label_types = corpus.label_types
        if not label_types:
            raise Invalid(
                "the corpus has no labels", [FieldError(["body", "train"], "no label column or label found")]
            )
        from engine.limits import MAX_LABELS  # torch: not at the API's import

        # One value more than a served model may have: the submission check (``service.logic.jobs``)
        # still sees a label type with too many.
        statistics = trimmed_statistics(corpus.statistics, MAX_LABELS + 1)
        corpus_id = new_id()
        storage = get_storage()
        files = {split: f"corpora/{corpus_id}/{split}{suffix}" for split in paths}
        try:
            for split, path in paths.items():
                with path.open("rb") as f:
                    storage.put(files[split], f)
            with session_scope() as session:
                row = Corpus(
                    id=corpus_id,
                    owner_id=owner_id,
                    name=name,
                    task=READER_FORMATS[format].task,
                    format=format,
                    options=options,
                    files=files,
                    statistics=json.loads(json.dumps(statistics)),
                    label_types=label_types,
                    has_documents=corpus.has_documents,
                )
                session.add(row)
            return row
        except BaseException:
            storage.delete(f"corpora/{corpus_id}")
            raise


CORPORA = Listing("corpora", Corpus.created_at, Corpus.id)


def list_corpora(owner_id: str, limit: int = 100, offset: int = 0, cursor: str | None = None) -> Page[Corpus]:
    """Newest first, from ``cursor`` (a page's ``next``) or ``offset``."""
    with session_scope() as session:
        query = select(Corpus).where(Corpus.owner_id == owner_id)
        return fetch_page(session, query, CORPORA, limit, offset, cursor)


def get_corpus(owner_id: str, corpus_id: str) -> Corpus:
    with session_scope() as session:
        return owned_or_404(session, Corpus, corpus_id, owner_id, "corpus")


def jobs_using(session: Any, owner_id: str, corpus_id: str) -> list[str]:
    jobs = session.scalars(select(Job).where(Job.owner_id == owner_id, Job.status.in_(ACTIVE_STATUSES))).all()
    # Training specs name corpora in ``corpus.ids``, language-model specs in ``corpus_id``.
    return [
        j.id
        for j in jobs
        if corpus_id in ((j.spec or {}).get("corpus") or {}).get("ids", [])
        or (j.spec or {}).get("corpus_id") == corpus_id
    ]


def delete_corpus(owner_id: str, corpus_id: str) -> None:
    with session_scope() as session:
        row = owned_or_404(session, Corpus, corpus_id, owner_id, "corpus")
        using = jobs_using(session, owner_id, corpus_id)
        if using:
            raise Conflict(f"corpus {corpus_id} is used by unfinished job(s): {', '.join(using)}")
        session.delete(row)
    discard(f"corpora/{corpus_id}")
