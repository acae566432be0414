"""Text classification files: FastText-style lines, and CSV / TSV / JSONL tables.

Every example becomes one ``Sentence`` with sentence labels ``sentence.labels[label_type]``
(several for multi-label data). Its text is tokenized with :func:`engine.tokenization.tokenize`
(``tokenizer="segtok"``, offsets kept) or split at whitespace (``tokenizer="whitespace"``), and
kept whole in ``Sentence.text``.

FastText lines: ``__label__A __label__B the text`` - the leading fields that start with
``label_prefix`` are labels, the rest of the line is the text. With ``label_prefix=None`` the
label is instead the first whitespace-separated field, whatever it looks like.
``label_separator`` keeps only the part of each label before the separator: a TREC line
``DESC:manner How did serfdom develop ?`` read with ``label_prefix=None, label_separator=":"``
has the label ``DESC`` (the coarse class).

Errors (CorpusFormatError with the line): labels and no text, text and no label, an empty label,
and for tables a missing column, a wrong number of columns or a line that is not a JSON object.
Blank lines are not examples. An example whose text yields no tokens is skipped and counted.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from engine.data import Corpus, Label, SampleMissingSplits, Sentence
from engine.readers.errors import (
    MAX_TEXT_TOKENS,
    MAX_TOKEN_CHARS,
    CorpusFormatError,
    ReaderOptionError,
    check_token_length,
)
from engine.readers.files import (
    clean_label,
    corpus_name,
    gc_paused,
    invalid_unicode,
    read_text,
    resolve_split_files,
)
from engine.tokenization import TOKENIZERS, is_blank

Tokenizer = Literal["segtok", "whitespace"]
TableFormat = Literal["csv", "tsv", "jsonl"]
TABLE_FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl")

# The csv module refuses fields over 131072 characters by default, but a long document is a valid
# example (FastText lines have no such limit) and the whole file is in memory already. The limit is
# process-wide; 2**31 - 1 is the largest value every platform's C long holds.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


def _check_tokenizer(tokenizer: str) -> bool:
    if tokenizer not in TOKENIZERS:
        raise ReaderOptionError(f"unknown tokenizer {tokenizer!r} (use {' or '.join(map(repr, TOKENIZERS))})")
    return tokenizer == "segtok"


class _Builder:
    """Turns (text, labels) into sentences, with the checks shared by every format."""

    def __init__(
        self,
        path: str | Path,
        label_type: str,
        label_separator: str | None,
        tokenizer: str,
        separator_required: bool = False,
    ) -> None:
        if not label_type.strip():
            # The labels would go under a nameless type no spec can ask for.
            raise ReaderOptionError(f"label_type must be a name, got {label_type!r}")
        self.path = path
        self.label_type = label_type
        self.label_separator = label_separator or None
        # the separator a label must hold (TREC's ':'), or None
        self.required_separator = self.label_separator if separator_required else None
        self.use_tokenizer = _check_tokenizer(tokenizer)
        self.sentences: list[Sentence] = []
        self.skipped = 0

    def add(self, lineno: int, text: str, labels: Iterable[str]) -> None:
        text = text.strip()
        values: list[str] = []
        for label in labels:
            label = clean_label(label)
            if self.required_separator is not None and self.required_separator not in label:
                # TREC's first field is always COARSE:fine; a file of another format read as
                # TREC (a column file: "EU B-ORG") otherwise made every first word a class.
                raise CorpusFormatError(
                    self.path,
                    lineno,
                    f"label {label[:40]!r} has no {self.required_separator!r}: a TREC line starts with "
                    "COARSE:fine (DESC:manner How did serfdom develop ?); for one plain label a line, "
                    "use the format fasttext with label_prefix null",
                )
            if self.label_separator is not None:
                label = clean_label(label.split(self.label_separator, 1)[0])
            if not label:
                raise CorpusFormatError(self.path, lineno, "empty label")
            if label not in values:
                values.append(label)
        # blank as the tokenizer sees it (invisible characters only): such a text has no token
        if is_blank(text):
            if values:
                raise CorpusFormatError(self.path, lineno, f"label(s) {', '.join(values)} but no text")
            self.skipped += 1
            return
        if not values:
            raise CorpusFormatError(self.path, lineno, "text without a label")
        sentence = Sentence(text, use_tokenizer=self.use_tokenizer)
        if len(text) > MAX_TOKEN_CHARS:
            check_token_length(self.path, lineno, [token.text for token in sentence.tokens])
        if not sentence.tokens:
            self.skipped += 1
            return
        if len(sentence.tokens) > MAX_TEXT_TOKENS:
            raise CorpusFormatError(
                self.path,
                lineno,
                f"a text of {len(sentence.tokens):,} tokens; the limit is {MAX_TEXT_TOKENS:,}: "
                "split longer documents",
            )
        sentence.labels[self.label_type] = [Label(v) for v in values]
        self.sentences.append(sentence)

    def result(self) -> tuple[list[Sentence], int]:
        if not self.sentences:
            raise CorpusFormatError(self.path, 1, f"empty file: no examples ({self.skipped} without text)")
        return self.sentences, self.skipped


def read_fasttext_file(
    path: str | Path,
    *,
    label_prefix: str | None = "__label__",
    label_separator: str | None = None,
    label_type: str = "class",
    tokenizer: Tokenizer = "segtok",
    separator_required: bool = False,
) -> tuple[list[Sentence], int]:
    """Read FastText-style lines (see the module docstring); returns ``(sentences, skipped)``.

    ``label_prefix``: labels are the leading fields with this prefix (several = multi-label);
    None: the label is the first field. ``label_separator``: keep each label's part before it.
    ``label_type``: the name the labels go under. ``tokenizer``: ``"segtok"`` or ``"whitespace"``.
    ``separator_required``: a label without ``label_separator`` is an error (TREC's).
    """
    if label_prefix == "":
        # Every field starts with "", so literally all would be labels; None is the documented
        # way to say "the first field is the label".
        raise ReaderOptionError("label_prefix must not be empty; null means the first field is the label")
    builder = _Builder(path, label_type, label_separator, tokenizer, separator_required)
    text = read_text(path)
    with gc_paused():
        for lineno, line in enumerate(text.split("\n"), 1):
            line = line.strip()
            if not line:
                continue
            labels: list[str] = []
            rest = line
            if label_prefix:
                while rest.startswith(label_prefix):
                    parts = rest.split(None, 1)
                    labels.append(parts[0][len(label_prefix) :])
                    rest = parts[1] if len(parts) > 1 else ""
                if not labels:
                    raise CorpusFormatError(
                        path, lineno, f"text without a label (a line starts with {label_prefix}<label>)"
                    )
            else:
                parts = line.split(None, 1)
                labels.append(parts[0])
                rest = parts[1] if len(parts) > 1 else ""
            builder.add(lineno, rest, labels)
        return builder.result()


def read_table_file(
    path: str | Path,
    format: TableFormat | None = None,
    *,
    text_column: str | int = "text",
    label_column: str | int = "label",
    label_type: str = "class",
    label_separator: str | None = None,
    multi_label_separator: str | None = None,
    has_header: bool = True,
    tokenizer: Tokenizer = "segtok",
    quoted: bool | None = None,
) -> tuple[list[Sentence], int]:
    """Read a CSV, TSV or JSONL table of examples; returns ``(sentences, skipped)``.

    ``format``: ``"csv"``, ``"tsv"`` or ``"jsonl"`` (None: from the file suffix).
    ``text_column`` / ``label_column``: a header name (or JSON key), or a 0-based column index
    (always an index when ``has_header=False``). A JSON label may be a string, a number or a list
    of them (multi-label). ``multi_label_separator``: split a label cell into several labels
    (e.g. ``"|"``). ``label_separator``: keep each label's part before it. A row whose text and
    label are both empty is skipped and counted. ``tokenizer``: ``"segtok"`` or ``"whitespace"``.
    ``quoted``: fields may be in double quotes (CSV's rule, always on for CSV); a TSV file is read
    without quoting by default, as TSV defines it (GLUE's files: a ``"`` is part of the text).
    """
    fmt = format or _table_format_from_suffix(path)
    if fmt not in TABLE_FORMATS:
        raise ReaderOptionError(f"unknown table format {fmt!r} (use {', '.join(TABLE_FORMATS)})")
    if text_column == label_column or (fmt == "jsonl" and str(text_column) == str(label_column)):
        raise _same_column(text_column)
    builder = _Builder(path, label_type, label_separator, tokenizer)
    text = read_text(path)
    with gc_paused():
        if fmt == "jsonl":
            _read_jsonl(path, text, builder, str(text_column), str(label_column), multi_label_separator)
        else:
            _read_delimited(
                path,
                text,
                builder,
                "," if fmt == "csv" else "\t",
                text_column,
                label_column,
                has_header,
                multi_label_separator,
                fmt == "csv" or bool(quoted),
            )
        return builder.result()


def _same_column(
    text_column: str | int, label_column: str | int | None = None, index: int | None = None
) -> ReaderOptionError:
    # The text would double as its own label: every example would be labelled with itself.
    if index is None:
        given = f"are both {text_column!r}"
    else:
        given = f"({text_column!r} and {label_column!r}) are both column {index}"
    return ReaderOptionError(
        f"text_column and label_column {given}; they must name different columns",
        ("text_column", "label_column"),
    )


def _table_format_from_suffix(path: str | Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("json", "ndjson"):
        return "jsonl"
    if suffix in TABLE_FORMATS:
        return suffix
    raise ReaderOptionError(
        f"cannot tell the table format of {Path(path).name}: pass format='csv', 'tsv' or 'jsonl'"
    )


def _split_labels(value: str, multi_label_separator: str | None) -> list[str]:
    if not value.strip():
        return []
    if multi_label_separator:
        return [v for v in value.split(multi_label_separator) if v.strip()]
    return [value]


def _column_index(path: str | Path, header: list[str] | None, column: str | int, role: str) -> int:
    digits = str(column).lstrip("-")
    if isinstance(column, int) or (header is None and digits.isascii() and digits.isdigit()):
        index = int(column)
        if header is not None and not -len(header) <= index < len(header):
            raise CorpusFormatError(
                path, 1, f"{role} column {index} not in a header of {len(header)} columns"
            )
        return index
    if header is None:
        raise ReaderOptionError(
            f"without a header the {role} column must be an index, got {column!r}", (f"{role}_column",)
        )
    if column not in header:
        raise CorpusFormatError(
            path, 1, f"no {role} column {column!r} in the header (columns: {', '.join(header)})"
        )
    return header.index(column)


def _read_delimited(
    path: str | Path,
    text: str,
    builder: _Builder,
    delimiter: str,
    text_column: str | int,
    label_column: str | int,
    has_header: bool,
    multi_label_separator: str | None,
    quoted: bool,
) -> None:
    reader = csv.reader(
        io.StringIO(text), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    )
    header: list[str] | None = None
    width = 0
    text_index = label_index = 0
    end_line = 0
    # The csv module reads an unterminated quote to the end of the file without complaint.
    last_line = text.count("\n") + (not text.endswith("\n"))
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as e:
            raise CorpusFormatError(path, reader.line_num, f"unreadable row ({e})") from None
        start_line, end_line = end_line + 1, reader.line_num
        if not row:
            continue
        # Only a quoted field holds a line break, and a row must take lines start..end; so a quote
        # that swallowed the rest of the file opened on the row's first line.
        spans_lines = end_line > start_line
        if spans_lines and end_line == last_line and _open_quote(text, start_line, last_line):
            raise CorpusFormatError(
                path,
                start_line,
                f"unterminated quote starting at line {start_line} (it runs to the end of the file)",
            )
        if width == 0:
            if has_header:
                header = [h.strip() for h in row]
            width = len(row)
            text_index = _column_index(path, header, text_column, "text")
            label_index = _column_index(path, header, label_column, "label")
            for role, index in (("text", text_index), ("label", label_index)):
                if not -width <= index < width:
                    raise CorpusFormatError(
                        path, start_line, f"{role} column {index} not in a row of {width} columns"
                    )
            # A name and an index (or -1 and the last index) can still be one column.
            if text_index % width == label_index % width:
                raise _same_column(text_column, label_column, text_index % width)
            if has_header:
                continue
        if len(row) != width:
            if not any(cell.strip() for cell in row):
                builder.skipped += 1
                continue
            reason = f"wrong number of columns (expected {width}, got {len(row)})"
            if spans_lines:
                reason += (
                    f" in a row from line {start_line} to line {end_line}: a quoted field holds line breaks "
                    f"(an unterminated quote starting at line {start_line}?)"
                )
            raise CorpusFormatError(path, start_line, reason)
        builder.add(start_line, row[text_index], _split_labels(row[label_index], multi_label_separator))


def _open_quote(text: str, start_line: int, last_line: int) -> bool:
    """Whether the quotes from line ``start_line`` to the last line of ``text`` leave a field open.

    An escaped quote is two quotes, so a closed quoted field holds an even number of them.
    """
    # Found from the end: the row is a few lines, the file may be millions.
    start = len(text)
    for _ in range(last_line - start_line + text.endswith("\n") + 1):
        start = text.rfind("\n", 0, start)
    return text.count('"', start + 1) % 2 == 1


def _read_jsonl(
    path: str | Path,
    text: str,
    builder: _Builder,
    text_key: str,
    label_key: str,
    multi_label_separator: str | None,
) -> None:
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_int=_JsonNumber, parse_float=_JsonNumber)
        except json.JSONDecodeError as e:
            raise CorpusFormatError(path, lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
        except ValueError:
            # Python refuses integers of more than sys.get_int_max_str_digits() digits.
            raise CorpusFormatError(path, lineno, "invalid JSON (a number has too many digits)") from None
        except RecursionError:
            raise CorpusFormatError(path, lineno, "invalid JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise CorpusFormatError(path, lineno, f"expected a JSON object, got {_json_type(record)}")
        if text_key not in record:
            raise CorpusFormatError(path, lineno, f"no text key {text_key!r} (keys: {', '.join(record)})")
        value = record[text_key]
        if type(value) is not str:
            raise CorpusFormatError(path, lineno, f"text {text_key!r} is a {_json_type(value)}, not a string")
        problem = invalid_unicode([value, record.get(label_key)])
        if problem is not None:
            raise CorpusFormatError(path, lineno, problem)
        raw = record.get(label_key)
        labels: list[str] = []
        for item in raw if isinstance(raw, list) else ([] if raw is None else [raw]):
            # NaN and Infinity are no JSON, though Python's parser takes them: not a class "nan"
            if (
                isinstance(item, dict | list)
                or item is None
                or (isinstance(item, float) and not math.isfinite(item))
            ):
                raise CorpusFormatError(path, lineno, f"label {item!r} is not a string, number or boolean")
            # as written in the file: 1.0 stays "1.0" (Python would make 1e2 "100.0"), true "true"
            labels.extend(
                _split_labels(
                    json.dumps(item) if isinstance(item, bool) else str(item), multi_label_separator
                )
            )
        builder.add(lineno, value, labels)


class _JsonNumber(str):
    """A JSON number as written in the file: a label ``1.0`` is the class "1.0", not 1.0."""


def _json_type(value: Any) -> str:
    if isinstance(value, _JsonNumber):
        return "number"
    return {str: "string", bool: "boolean", list: "array", dict: "object", float: "number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


CLASSIFICATION_FORMATS: tuple[str, ...] = ("fasttext", "trec", *TABLE_FORMATS)


def read_classification_file(
    path: str | Path, format: str = "fasttext", **options: Any
) -> tuple[list[Sentence], int]:
    """Dispatch to :func:`read_fasttext_file` or :func:`read_table_file` by ``format``."""
    if format == "fasttext":
        return read_fasttext_file(path, **options)
    if format == "trec":  # fasttext whose first field is the label, COARSE:fine
        trec = {"label_prefix": None, "label_separator": ":", **options}
        return read_fasttext_file(path, **trec, separator_required=True)
    if format in TABLE_FORMATS:
        return read_table_file(path, format, **options)  # type: ignore[arg-type]
    raise ReaderOptionError(
        f"unknown classification format {format!r} (use {', '.join(CLASSIFICATION_FORMATS)})"
    )


class ClassificationCorpus(Corpus):
    """A classification corpus: a ``data_folder`` with train/dev/test files found by name, or
    explicit files, in one ``format`` (``"fasttext"``, ``"trec"``, ``"csv"``, ``"tsv"``, ``"jsonl"``).
    Other keyword options go to the reader (``label_type``, ``label_prefix``,
    ``label_separator``, ``text_column``, ``label_column``, ``tokenizer`` ...).
    """

    def __init__(
        self,
        data_folder: str | Path | None = None,
        *,
        train_file: str | Path | None = None,
        dev_file: str | Path | None = None,
        test_file: str | Path | None = None,
        format: str = "fasttext",
        name: str | None = None,
        sample_missing_splits: SampleMissingSplits = True,
        seed: int = 42,
        **options: Any,
    ) -> None:
        files = resolve_split_files(data_folder, train_file, dev_file, test_file)
        splits: dict[str, list[Sentence] | None] = {"train": None, "dev": None, "test": None}
        skipped = 0
        for split, path in files.items():
            splits[split], n = read_classification_file(path, format, **options)
            skipped += n
        super().__init__(
            splits["train"] or [],
            splits["dev"],
            splits["test"],
            name=name or corpus_name(data_folder, files["train"]),
            sample_missing_splits=sample_missing_splits,
            seed=seed,
            skipped=skipped,
        )
