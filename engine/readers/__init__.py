"""Corpus readers: column files, CoNLL-U, and classification files (FastText, CSV, TSV, JSONL).

One entry point for callers that get a format name and files from elsewhere (the REST service
validates uploads with it)::

    corpus = read_corpus_files("column", {"train": "train.txt", "dev": "dev.txt"},
                               {"column_map": {"0": "text", "3": "ner"}})

``FORMATS`` describes every format and its options (types, defaults, meaning); unknown or
ill-typed options raise :class:`ReaderOptionError`, malformed files
:class:`CorpusFormatError` (file, line, reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.data import Corpus, SampleMissingSplits
from engine.readers.classification import ClassificationCorpus, read_fasttext_file, read_table_file
from engine.readers.column import ColumnCorpus, read_column_file
from engine.readers.conllu import DEFAULT_FIELDS, ConlluCorpus, read_conllu_file
from engine.readers.errors import CorpusFormatError, ReaderOptionError, check_label_type_name

__all__ = [
    "FORMATS",
    "ClassificationCorpus",
    "ColumnCorpus",
    "ConlluCorpus",
    "CorpusFormatError",
    "ReaderFormat",
    "ReaderOption",
    "ReaderOptionError",
    "read_column_file",
    "read_conllu_file",
    "read_corpus_files",
    "read_fasttext_file",
    "read_table_file",
]

SPLIT_NAMES: tuple[str, ...] = ("train", "dev", "test")
_NONE = type(None)


@dataclass(frozen=True)
class ReaderOption:
    types: tuple[type, ...]
    default: Any
    help: str

    def to_dict(self) -> dict[str, Any]:
        names = ["null" if t is _NONE else t.__name__ for t in self.types]
        return {"type": " | ".join(names), "default": self.default, "help": self.help}


@dataclass(frozen=True)
class ReaderFormat:
    name: str
    task: str  # "sequence_tagging" | "text_classification"
    description: str
    suffixes: tuple[str, ...]
    options: dict[str, ReaderOption] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "description": self.description,
            "suffixes": list(self.suffixes),
            "options": {k: v.to_dict() for k, v in self.options.items()},
        }


_TOKENIZER = ReaderOption((str,), "segtok", "'segtok' (tokenize, keep offsets) or 'whitespace'")
_LABEL_TYPE = ReaderOption((str,), "class", "name of the sentence label type")
_LABEL_SEPARATOR = ReaderOption(
    (str, _NONE), None, "keep only the part of each label before this separator (e.g. ':')"
)


def _fasttext_options(label_prefix: str | None, label_separator: str | None) -> dict[str, ReaderOption]:
    return {
        "label_prefix": ReaderOption(
            (str, _NONE),
            label_prefix,
            "leading fields with this prefix are labels; null: the first field is the label",
        ),
        "label_separator": ReaderOption(_LABEL_SEPARATOR.types, label_separator, _LABEL_SEPARATOR.help),
        "label_type": _LABEL_TYPE,
        "tokenizer": _TOKENIZER,
    }


def _table_options(header: bool) -> dict[str, ReaderOption]:
    options = {
        "text_column": ReaderOption(
            (str, int), "text", "header name / JSON key, or 0-based index, of the text"
        ),
        "label_column": ReaderOption(
            (str, int), "label", "header name / JSON key, or 0-based index, of the label"
        ),
        "label_type": _LABEL_TYPE,
        "label_separator": _LABEL_SEPARATOR,
        "multi_label_separator": ReaderOption((str, _NONE), None, "split a label cell into several labels"),
        "tokenizer": _TOKENIZER,
    }
    if header:
        options["has_header"] = ReaderOption((bool,), True, "the first row names the columns")
    return options


FORMATS: dict[str, ReaderFormat] = {
    "column": ReaderFormat(
        "column",
        "sequence_tagging",
        "one token a line with label columns (CoNLL-03, WNUT-17), blank lines between sentences",
        (".txt", ".conll", ".tsv", ".bio", ".iob"),
        {
            "column_map": ReaderOption(
                (dict,),
                {"0": "text", "-1": "ner"},
                "column index -> label name; exactly one 'text'; negative indices count from the end",
            ),
            "span_columns": ReaderOption(
                (list, dict, _NONE),
                None,
                "null: detect tag-scheme columns; or names, or name -> scheme (BIO, IOB1, BIOES, plain)",
            ),
            "comment_prefix": ReaderOption(
                (str, _NONE), "# ", "lines starting with it are comments; null: none"
            ),
            "document_separator": ReaderOption(
                (str,), "-DOCSTART-", "a line starting with it starts a document"
            ),
            "whole_file_document": ReaderOption(
                (bool,),
                False,
                "the sentences before the first separator line (in a file without one: all) are one "
                "document, as Flair reads such files, so that use_context has neighbours",
            ),
        },
    ),
    "conllu": ReaderFormat(
        "conllu",
        "sequence_tagging",
        "CoNLL-U (Universal Dependencies): syntactic words with UPOS, XPOS, lemma and features",
        (".conllu",),
        {
            "fields": ReaderOption(
                (list, tuple),
                list(DEFAULT_FIELDS),
                "token labels to read: upos, xpos, lemma, feats, head, deprel, deps, misc",
            )
        },
    ),
    "fasttext": ReaderFormat(
        "fasttext",
        "text_classification",
        "one example a line: __label__A __label__B text (multi-label)",
        (".txt", ".ft"),
        _fasttext_options("__label__", None),
    ),
    "trec": ReaderFormat(
        "trec",
        "text_classification",
        "one example a line, the label is the first field and only its part before ':' is kept "
        "(TREC 'COARSE:fine question'; a first field without ':' is an error); fasttext with "
        "label_prefix=null, label_separator=':'",
        (".txt",),
        _fasttext_options(None, ":"),
    ),
    "csv": ReaderFormat(
        "csv", "text_classification", "comma-separated table", (".csv",), _table_options(True)
    ),
    "tsv": ReaderFormat(
        "tsv",
        "text_classification",
        "tab-separated table",
        (".tsv",),
        {
            **_table_options(True),
            "quoted": ReaderOption(
                (bool,),
                False,
                'fields may be in double quotes, as CSV writers such as pandas write them (default: a " is text)',
            ),
        },
    ),
    "jsonl": ReaderFormat(
        "jsonl",
        "text_classification",
        "one JSON object a line; a label may be a string, number or list (multi-label)",
        (".jsonl", ".json", ".ndjson"),
        _table_options(False),
    ),
}


def validate_options(format: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The format's options with defaults filled in; ReaderOptionError for unknown or ill-typed ones."""
    spec = FORMATS.get(format)
    if spec is None:
        raise ReaderOptionError(f"unknown corpus format {format!r} (known: {', '.join(FORMATS)})")
    given = dict(options or {})
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        raise ReaderOptionError(
            f"unknown option(s) for format {format!r}: {', '.join(unknown)} (known: {', '.join(spec.options)})",
            tuple(unknown),
        )
    resolved: dict[str, Any] = {}
    for name, option in spec.options.items():
        value = given.get(name, option.default)
        if not isinstance(value, option.types) or (isinstance(value, bool) and bool not in option.types):
            raise ReaderOptionError(
                f"option {name!r} of format {format!r} must be {option.to_dict()['type']}, got {value!r}",
                (name,),
            )
        if name == "label_type" and isinstance(value, str):
            check_label_type_name(value, "option 'label_type'", (name,))
        resolved[name] = value
    return resolved


def read_corpus_files(
    format: str,
    files: Mapping[str, str | Path],
    options: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    sample_missing_splits: SampleMissingSplits = True,
    seed: int = 42,
) -> Corpus:
    """Read a corpus of ``format`` from ``files`` (split -> path; ``train`` required, ``dev`` and
    ``test`` optional) with the format's ``options`` (see ``FORMATS``).

    Raises ReaderOptionError (unknown format, split or option), CorpusFormatError (a malformed
    file, with file, line and reason) and FileNotFoundError.
    """
    resolved = validate_options(format, options)
    unknown = sorted(set(files) - set(SPLIT_NAMES))
    if unknown:
        raise ReaderOptionError(f"unknown split(s) {', '.join(unknown)} (use {', '.join(SPLIT_NAMES)})")
    if "train" not in files:
        raise ReaderOptionError("a corpus needs a 'train' file")
    common: dict[str, Any] = {
        "train_file": files["train"],
        "dev_file": files.get("dev"),
        "test_file": files.get("test"),
        "name": name,
        "sample_missing_splits": sample_missing_splits,
        "seed": seed,
    }
    if format == "column":
        column_map = resolved.pop("column_map")
        return ColumnCorpus(None, column_map, **common, **resolved)
    if format == "conllu":
        return ConlluCorpus(None, **common, **resolved)
    return ClassificationCorpus(None, format=format, **common, **resolved)
