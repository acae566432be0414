"""Column files (CoNLL-2003, WNUT-17 style): one token a line, blank lines between sentences.

Layout rules, all per file:

- Separator: tab when the first token line holds a tab, otherwise runs of spaces.
- Every token line has the same number of columns as the first token line.
- Label values lose surrounding whitespace, Unicode whitespace included (a trailing no-break
  space would otherwise make ``ORG\u00a0`` a label of its own); token texts keep theirs.
- ``column_map`` names columns by index, e.g. ``{0: "text", 1: "pos", 3: "ner"}``; negative
  indices count from the last column (the default is ``{0: "text", -1: "ner"}``). Exactly one
  column is ``"text"``; unmapped columns are ignored.
- ``-DOCSTART-`` lines start a document: the following sentences get a ``document_id`` and are
  linked through ``previous_sentence``/``next_sentence``. Without such lines there is no document
  structure (``document_id`` None, no links), unless ``whole_file_document``: then the sentences
  before the first separator (in a file without separators: all of them) are one document, as
  Flair reads such files, so that FLERT context can use them.
- Comment lines start with ``comment_prefix`` (``"# "``) and are kept, in order, in
  ``sentence.metadata["comments"]`` of the sentence that follows (a comment line inside a
  sentence ends that sentence); ``# sent_id = X`` and
  ``# text = X`` also set ``Sentence.id`` and ``Sentence.text``. In a space-separated file, a line
  starting with ``"# "`` that has exactly the file's number of columns, and no `` = `` (the
  ``# key = value`` of comments), is a token line for the token ``#``, not a comment (a
  tab-separated token ``#`` is written ``#\\t...`` and never collides). Before the first token
  line such a line is a comment: files begin with comments far more often than with the token
  ``#`` (``# a comment`` at the top of a three-column file is not the token ``#`` tagged ``a``).
- Span columns: a column whose values are tags of a span scheme (``O``, ``B-X``, ``I-X``,
  ``E-X``, ``S-X``) is decoded into spans ``sentence.spans[name]`` (by the rule documented in
  :mod:`engine.tag_schemes`; IOB1 is told from BIO by where spans start). ``span_columns`` turns
  detection off: a list of names, or a map name -> scheme (``"BIO"``, ``"IOB1"``, ``"BIOES"``,
  ``"plain"``; None detects). Every other mapped column becomes token labels ``token.labels[name]``.
  A detected column of tags with a few values that are not tags (``o``, ``0``, ``B-`` without a
  type; see :func:`engine.tag_schemes.looks_like_span_tags`) is an error at the first such value,
  not a column of token labels; ``span_columns`` without the column reads it as token labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from engine.data import Corpus, Label, SampleMissingSplits, Sentence, Span, Token
from engine.readers.errors import (
    MAX_SENTENCE_TOKENS,
    MAX_TOKEN_CHARS,
    CorpusFormatError,
    ReaderOptionError,
    check_label_type_name,
    check_token_length,
)
from engine.readers.files import clean_label, corpus_name, gc_paused, read_text, resolve_split_files
from engine.tag_schemes import (
    BIO,
    PLAIN,
    detect_scheme,
    detect_scheme_from_sequences,
    is_prefixed_tag,
    looks_like_span_tags,
    normalize_scheme,
    tags_to_spans,
)

DEFAULT_COLUMN_MAP: dict[int, str] = {0: "text", -1: "ner"}
# The ASCII whitespace a space-separated field can start or end with (str.strip's, less the space
# and the line breaks): without these and non-ASCII text, label values need no stripping.
_ASCII_FIELD_SPACE = "\t\x0b\x0c\x1c\x1d\x1e\x1f"
SpanColumns = Mapping[str, str | None] | Iterable[str] | None
_MAP, _SPANS = ("column_map",), ("span_columns",)


def normalize_column_map(column_map: Mapping[int | str, str] | None) -> dict[int, str]:
    """Validate a column map (JSON-style string keys like ``"0"`` are accepted)."""
    if column_map is None:
        return dict(DEFAULT_COLUMN_MAP)
    result: dict[int, str] = {}
    for key, name in column_map.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ReaderOptionError(f"column map key {key!r} is not a column index", _MAP) from None
        if not isinstance(name, str) or not name:
            raise ReaderOptionError(f"column {index} needs a non-empty label name, got {name!r}", _MAP)
        check_label_type_name(name, f"the label name of column {index}", _MAP)
        result[index] = name
    names = list(result.values())
    if names.count("text") != 1:
        raise ReaderOptionError(f"the column map needs exactly one 'text' column, got {column_map!r}", _MAP)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ReaderOptionError(f"column names used twice in the column map: {', '.join(duplicates)}", _MAP)
    return result


def _looks_like_conllu(fields: list[str], sep: str | None) -> bool:
    """The first word line of a CoNLL-U (or CoNLL-X) file: ID, FORM, ..., HEAD, DEPREL, ..."""
    first = fields[0].split("-", 1)[0].split(".", 1)[0]
    return sep == "\t" and len(fields) == 10 and first == "1" and (fields[6].isdigit() or fields[6] == "_")


def _min_columns(column_map: dict[int, str]) -> int:
    """The fewest columns a line may have so that every mapped index is a distinct column."""
    for n in range(1, 1000):
        resolved = {i if i >= 0 else n + i for i in column_map}
        if len(resolved) == len(column_map) and all(0 <= i < n for i in resolved):
            return n
    raise ReaderOptionError(f"column map {column_map!r} cannot fit any line", _MAP)


def _span_column_schemes(span_columns: SpanColumns, names: Iterable[str]) -> dict[str, str | None] | None:
    if span_columns is None:
        return None
    if isinstance(span_columns, str):
        span_columns = [span_columns]
    # The options arrive as JSON from the API, so names and schemes are checked here rather than
    # trusted to be strings.
    pairs = (
        list(span_columns.items()) if isinstance(span_columns, Mapping) else [(n, None) for n in span_columns]
    )
    wanted: dict[str, str | None] = {}
    for name, scheme in pairs:
        if not isinstance(name, str):
            raise ReaderOptionError(f"span column names must be strings, got {name!r}", _SPANS)
        if scheme is not None and not isinstance(scheme, str):
            raise ReaderOptionError(
                f"the tag scheme of span column {name!r} must be a string, got {scheme!r}", _SPANS
            )
        try:
            wanted[name] = normalize_scheme(scheme) if scheme else None
        except ValueError as e:
            raise ReaderOptionError(f"span column {name!r}: {e}", _SPANS) from None
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise ReaderOptionError(f"span columns {', '.join(unknown)} are not in the column map", _SPANS)
    if "text" in wanted:
        raise ReaderOptionError("the 'text' column cannot be a span column", _SPANS)
    return wanted


def split_file_span_columns(
    label_kinds: Mapping[str, str], span_columns: SpanColumns
) -> dict[str, str] | None:
    """The ``span_columns`` with which ``ColumnCorpus`` reads a dev or test file (train's span
    columns and schemes), told by the label kinds of the corpus it read (``Corpus.label_kinds``)
    instead of by train's file; None when only train's tags tell.

    Every prefixed scheme decodes alike and refuses the same tags (:mod:`engine.tag_schemes`), so
    BIO stands for whichever prefixed scheme train's tags had. A detected span column is always
    prefixed (a plain one is read as token labels); one that ``span_columns`` names without a
    scheme may be plain, which only train's tags say.
    """
    try:
        wanted = _span_column_schemes(span_columns, label_kinds)
    except ReaderOptionError:  # reading train raises it as it should
        return None
    if wanted is None:  # detected
        return {name: BIO for name, kind in label_kinds.items() if kind == "span"}
    schemes = {name: scheme for name, scheme in wanted.items() if scheme is not None}
    return schemes if len(schemes) == len(wanted) else None


class _RawSentence:
    __slots__ = ("rows", "lines", "document", "comments")

    def __init__(self, document: int, comments: list[str] | None) -> None:
        self.rows: list[list[str]] = []
        self.lines: list[int] = []
        self.document = document
        self.comments = comments


def _parse(
    path: str | Path,
    text: str,
    column_map: dict[int, str],
    comment_prefix: str | None,
    document_separator: str,
) -> tuple[list[_RawSentence], dict[int, str], int]:
    """Split the file into sentences of raw rows; returns them, the resolved map and the width."""
    sentences: list[_RawSentence] = []
    sep: str | None = None
    sep_line = 0
    width = 0
    min_width = _min_columns(column_map)
    resolved: dict[int, str] = {}
    document = 0
    documents = 0
    comments: list[str] | None = None
    current: _RawSentence | None = None
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip(" \t")
        if not line:
            current = None
            continue
        if line.startswith(document_separator) and (
            len(line) == len(document_separator) or line[len(document_separator)] in " \t"
        ):
            current = None
            documents += 1
            document = documents
            continue
        if (
            comment_prefix
            and line.startswith(comment_prefix)
            and (sep != " " or len(line.split()) != width or " = " in line)
        ):
            if current is not None:
                current = None
            if comments is None:
                comments = []
            comments.append(line)
            continue
        if sep is None:
            sep = "\t" if "\t" in line else " "
            sep_line = lineno
        if sep == "\t":
            fields = line.split("\t")
        else:
            if "\t" in line:
                # with the right number of fields, the tab stayed inside a token ("rejects\t")
                raise CorpusFormatError(
                    path,
                    lineno,
                    "the file's columns are separated by spaces (detected from its first token "
                    f"line, line {sep_line}), and this line has tabs",
                )
            fields = line.split(" ")
            if "" in fields:
                fields = [f for f in fields if f]
        if len(fields) != width or "" in fields:
            if width == 0:
                if len(fields) < min_width:
                    raise CorpusFormatError(path, lineno, _too_few(fields, min_width))
                width = len(fields)
                resolved = {(i if i >= 0 else width + i): name for i, name in column_map.items()}
                if len(resolved) != len(column_map):
                    # e.g. {3: "a", -2: "b"} on 5 columns: both are column 3, and one name would
                    # silently replace the other.
                    raise CorpusFormatError(path, lineno, _colliding(column_map, width))
                if resolved.get(0) == "text" and _looks_like_conllu(fields, sep):
                    # Read as columns, its words would be the word numbers ("1", "2", ...).
                    raise CorpusFormatError(
                        path,
                        lineno,
                        "this looks like CoNLL-U (10 tab-separated columns, the first numbering the "
                        "words): upload it with format conllu, or give a column_map (the words are "
                        "column 1)",
                    )
            if len(fields) != width:
                if sep == "\t" and "\t" not in line and " " in line:
                    raise CorpusFormatError(
                        path,
                        lineno,
                        "the file's columns are separated by tabs (detected from its first token "
                        f"line, line {sep_line}), and this line has none (expected {width} columns)",
                    )
                if len(fields) == 1:
                    raise CorpusFormatError(
                        path, lineno, f"token {fields[0]!r} without a tag (expected {width} columns, got 1)"
                    )
                raise CorpusFormatError(
                    path, lineno, f"wrong number of columns (expected {width}, got {len(fields)})"
                )
            if "" in fields:
                column = fields.index("")
                if column == 0:
                    raise CorpusFormatError(path, lineno, "empty token text in column 0")
                raise CorpusFormatError(path, lineno, f"token {fields[0]!r} without a tag in column {column}")
        if len(line) > MAX_TOKEN_CHARS:
            check_token_length(path, lineno, fields)
        if current is None:
            current = _RawSentence(document, comments)
            comments = None
            sentences.append(current)
        current.rows.append(fields)
        current.lines.append(lineno)
        if len(current.rows) > MAX_SENTENCE_TOKENS:
            raise CorpusFormatError(
                path,
                current.lines[0],
                f"the sentence starting here runs past {MAX_SENTENCE_TOKENS:,} tokens (to line {lineno} "
                "without a blank line): is the blank line between sentences missing? Sentences of "
                f"more than {MAX_SENTENCE_TOKENS:,} tokens are refused",
            )
    if not sentences:
        raise CorpusFormatError(path, 1, "empty file: no token lines")
    if sep == "\t" or not text.isascii() or any(c in text for c in _ASCII_FIELD_SPACE):
        _strip_labels(path, sentences, [i for i, name in resolved.items() if name != "text"])
    return sentences, resolved, width


def _strip_labels(path: str | Path, sentences: list[_RawSentence], columns: list[int]) -> None:
    # Unicode whitespace too: a trailing no-break space would make "ORG\xa0" a label of its own.
    # A pass of its own, over the few distinct values first, rather than a step of the line loop.
    for column in columns:
        values = {fields[column] for sentence in sentences for fields in sentence.rows}
        padded = {value for value in values if clean_label(value) != value}
        if not padded:
            continue
        for sentence in sentences:
            for fields, lineno in zip(sentence.rows, sentence.lines, strict=True):
                if fields[column] in padded:
                    value = clean_label(fields[column])
                    if not value:
                        raise CorpusFormatError(
                            path, lineno, f"token {fields[0]!r} without a tag in column {column}"
                        )
                    fields[column] = value


def _colliding(column_map: dict[int, str], width: int) -> str:
    by_column: dict[int, list[str]] = {}
    for i, name in column_map.items():
        by_column.setdefault(i if i >= 0 else width + i, []).append(f"{i} ({name})")
    shared = next(names for names in by_column.values() if len(names) > 1)
    return f"column map entries {' and '.join(shared)} are the same column in a line of {width} columns"


def _too_few(fields: list[str], min_width: int) -> str:
    if len(fields) == 1:
        return f"token {fields[0]!r} without a tag (the column map needs {min_width} columns, got 1)"
    return f"wrong number of columns (the column map needs at least {min_width}, got {len(fields)})"


def _decide_span_columns(
    path: str | Path,
    raw: list[_RawSentence],
    label_columns: dict[int, str],
    wanted: dict[str, str | None] | None,
) -> dict[int, str]:
    """Column index -> tag scheme for every column read as spans."""
    result: dict[int, str] = {}
    for column, name in label_columns.items():
        if wanted is not None and name not in wanted:
            continue
        values = {row[column] for sentence in raw for row in sentence.rows}
        forced = wanted.get(name) if wanted is not None else None
        scheme = forced or detect_scheme(values)
        if wanted is None:
            if scheme is None and looks_like_span_tags(Counter(row[column] for s in raw for row in s.rows)):
                # A typo among tags: read as token labels, the column would silently lose its spans.
                lineno, tag = _first_unprefixed(raw, column)
                raise CorpusFormatError(
                    path,
                    lineno,
                    f"column {name!r} looks like BIO/BIOES tags, but {_shown(tag)} is not one "
                    "(expected O or B-/I-/E-/S- tags with a type); correct it, or pass span_columns "
                    f"without {name!r} (e.g. []) to read the column as token labels",
                )
            if scheme is None or scheme == PLAIN:
                continue
        elif scheme is None or (
            forced is not None and forced != PLAIN and not all(map(is_prefixed_tag, values))
        ):
            # Named as a span column but holding tags of no scheme: point at the first bad tag.
            lineno, tag = _first_unprefixed(raw, column)
            raise CorpusFormatError(
                path,
                lineno,
                f"invalid tag {_shown(tag)} in span column {name!r} (expected O or B-/I-/E-/S- tags with a type)",
            )
        if scheme in ("BIO", "IOB1") and forced is None:
            scheme = detect_scheme_from_sequences([row[column] for row in s.rows] for s in raw)
        result[column] = scheme or PLAIN
    return result


def _shown(tag: str) -> str:
    """The tag quoted, with the code points of its non-ASCII characters: a Cyrillic 'О', a
    full-width 'Ｏ' or 'B‐ORG' with a Unicode hyphen look like valid tags when only quoted."""
    if tag.isascii():
        return repr(tag)
    return f"{tag!r} ({', '.join(f'{c} is U+{ord(c):04X}' for c in dict.fromkeys(tag) if not c.isascii())})"


def _first_unprefixed(raw: list[_RawSentence], column: int) -> tuple[int, str]:
    """The line and value of the column's first value that is neither O nor a prefixed tag."""
    for sentence in raw:
        for row, lineno in zip(sentence.rows, sentence.lines, strict=True):
            if not is_prefixed_tag(row[column]):
                return lineno, row[column]
    raise AssertionError("called only for a column with an unprefixed tag")


def read_column_file(
    path: str | Path,
    column_map: Mapping[int | str, str] | None = None,
    *,
    span_columns: SpanColumns = None,
    comment_prefix: str | None = "# ",
    document_separator: str = "-DOCSTART-",
    whole_file_document: bool = False,
    schemes: dict[str, str] | None = None,
) -> tuple[list[Sentence], int]:
    """Read a column file into sentences; returns ``(sentences, skipped)``.

    ``column_map``: index -> label name (see the module docstring), ``{0: "text", -1: "ner"}`` by
    default. ``span_columns``: None detects span columns; otherwise the names (or name -> scheme)
    of the columns to decode into spans. ``comment_prefix``: None disables comments.
    ``document_separator``: the first field of a line that starts a document.
    ``whole_file_document``: the sentences before the first separator are a document too.
    ``schemes``: a dict that receives the scheme of every span column (name -> scheme).
    Column files have no empty sentences, so ``skipped`` is always 0. Raises CorpusFormatError.
    """
    if not document_separator.strip():
        # An empty separator starts a document on every line that begins with a blank.
        raise ReaderOptionError(f"document_separator must not be empty, got {document_separator!r}")
    cmap = normalize_column_map(column_map)
    wanted = _span_column_schemes(span_columns, cmap.values())
    with gc_paused():
        return _read_column_file(
            path, cmap, wanted, comment_prefix, document_separator, whole_file_document, schemes
        )


def _read_column_file(
    path: str | Path,
    cmap: dict[int, str],
    wanted: dict[str, str | None] | None,
    comment_prefix: str | None,
    document_separator: str,
    whole_file_document: bool,
    schemes: dict[str, str] | None,
) -> tuple[list[Sentence], int]:
    text = read_text(path)
    raw, resolved, _ = _parse(path, text, cmap, comment_prefix, document_separator)
    text_column = next(i for i, name in resolved.items() if name == "text")
    label_columns = {i: name for i, name in resolved.items() if name != "text"}
    span_schemes = _decide_span_columns(path, raw, label_columns, wanted)
    if schemes is not None:
        schemes.update({label_columns[c]: s for c, s in span_schemes.items()})
    token_columns = [(c, name) for c, name in label_columns.items() if c not in span_schemes]
    span_specs = [(c, label_columns[c], s) for c, s in span_schemes.items()]
    doc_prefix = Path(path).name
    sentences: list[Sentence] = []
    previous: Sentence | None = None
    for item in raw:
        sentence = Sentence()
        tokens = sentence.tokens
        for i, row in enumerate(item.rows):
            token = Token(row[text_column], i)
            if token_columns:
                labels = token.labels
                for c, name in token_columns:
                    labels[name] = Label(row[c])
            tokens.append(token)
        for c, name, scheme in span_specs:
            tags = [row[c] for row in item.rows]
            sentence.spans[name] = [
                Span(sentence, start, end, Label(kind)) for start, end, kind in tags_to_spans(tags, scheme)
            ]
        if item.comments is not None:
            _apply_comments(sentence, item.comments)
        if item.document or whole_file_document:
            sentence.document_id = f"{doc_prefix}#{item.document}"
            if previous is not None and previous.document_id == sentence.document_id:
                previous.next_sentence = sentence
                sentence.previous_sentence = previous
        previous = sentence
        sentences.append(sentence)
    return sentences, 0


def _apply_comments(sentence: Sentence, comments: list[str]) -> None:
    sentence.metadata["comments"] = comments
    for comment in comments:
        key, eq, value = comment.lstrip("#").partition("=")
        if not eq:
            continue
        key = key.strip()
        if key == "sent_id":
            sentence.id = value.strip()
        elif key == "text":
            sentence.text = value.strip()


class ColumnCorpus(Corpus):
    """A corpus of column files: a ``data_folder`` with train/dev/test files found by name
    (see :func:`engine.readers.files.find_split_files`) or explicit ``train_file`` etc.

    Span columns are detected on the training file; dev and test are read with the same
    columns and schemes, so all splits agree. ``tag_schemes`` records them (name -> scheme).
    Missing dev/test splits are sampled from train (``sample_missing_splits``, see ``Corpus``).
    """

    def __init__(
        self,
        data_folder: str | Path | None = None,
        column_map: Mapping[int | str, str] | None = None,
        *,
        train_file: str | Path | None = None,
        dev_file: str | Path | None = None,
        test_file: str | Path | None = None,
        span_columns: SpanColumns = None,
        comment_prefix: str | None = "# ",
        document_separator: str = "-DOCSTART-",
        whole_file_document: bool = False,
        name: str | None = None,
        sample_missing_splits: SampleMissingSplits = True,
        seed: int = 42,
    ) -> None:
        files = resolve_split_files(data_folder, train_file, dev_file, test_file)
        schemes: dict[str, str] = {}

        def read(
            path: Path, span_columns: SpanColumns, schemes: dict[str, str] | None = None
        ) -> tuple[list[Sentence], int]:
            return read_column_file(
                path,
                column_map,
                span_columns=span_columns,
                schemes=schemes,
                comment_prefix=comment_prefix,
                document_separator=document_separator,
                whole_file_document=whole_file_document,
            )

        train, skipped = read(files["train"], span_columns, schemes)
        # dev/test: exactly the span columns found in train, with train's schemes.
        fixed = dict(schemes)
        splits: dict[str, list[Sentence] | None] = {"dev": None, "test": None}
        for split in ("dev", "test"):
            if split in files:
                splits[split], n = read(files[split], fixed)
                skipped += n
        self.tag_schemes = schemes
        super().__init__(
            train,
            splits["dev"],
            splits["test"],
            name=name or corpus_name(data_folder, files["train"]),
            sample_missing_splits=sample_missing_splits,
            seed=seed,
            skipped=skipped,
        )
