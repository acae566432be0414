"""CoNLL-U files (Universal Dependencies), read as the format defines them.

- Tokens are the *syntactic words* (integer IDs). A multi-word token line (``1-2 vámonos``) is
  not a token: its surface form is kept in ``sentence.metadata["multiword_tokens"]`` as
  ``(start, end_exclusive, form)`` over token indices, the words it covers get no space between
  them, and its ``SpaceAfter=No`` applies to its last word. Empty nodes (``8.1``, enhanced
  dependencies) are not tokens and are left out.
- Token labels: ``upos``, ``xpos``, ``lemma`` and ``feats`` by default (``fields`` chooses among
  those and ``deprel``, ``head``, ``deps``, ``misc``). ``_`` (unspecified) gives no label, except
  a lemma ``_`` of the form ``_``.
- ``# sent_id = X`` sets ``Sentence.id``, ``# text = X`` sets ``Sentence.text``; ``# newdoc``
  (with or without ``id = X``) starts a document: the sentences that follow get that
  ``document_id`` (or ``<file>#<n>`` without an id) and are linked as neighbours. Other comments
  are ignored. ``SpaceAfter=No`` in MISC sets ``token.whitespace_after`` to False.
- A sentence with no syntactic words (only comments or empty nodes) is skipped and counted.
- Label values other than the lemma lose surrounding whitespace, Unicode whitespace included;
  forms and lemmas keep theirs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from engine.data import Corpus, Label, SampleMissingSplits, Sentence, Token
from engine.readers.errors import (
    MAX_SENTENCE_TOKENS,
    MAX_TOKEN_CHARS,
    CorpusFormatError,
    ReaderOptionError,
    check_token_length,
)
from engine.readers.files import clean_label, corpus_name, gc_paused, read_text, resolve_split_files

FIELD_COLUMNS: dict[str, int] = {
    "lemma": 2,
    "upos": 3,
    "xpos": 4,
    "feats": 5,
    "head": 6,
    "deprel": 7,
    "deps": 8,
    "misc": 9,
}
DEFAULT_FIELDS: tuple[str, ...] = ("upos", "xpos", "lemma", "feats")


def _field_columns(fields: Iterable[str]) -> list[tuple[int, str]]:
    if isinstance(fields, str):
        fields = [fields]
    result: list[tuple[int, str]] = []
    for name in fields:
        if not isinstance(name, str) or name not in FIELD_COLUMNS:
            raise ReaderOptionError(f"unknown CoNLL-U field {name!r} (known: {', '.join(FIELD_COLUMNS)})")
        result.append((FIELD_COLUMNS[name], name))
    return result


class _State:
    """The sentence being read: tokens plus what its comments said."""

    __slots__ = ("tokens", "text", "id", "mwt", "mwt_end", "mwt_space", "start_line")

    def __init__(self, start_line: int) -> None:
        self.tokens: list[Token] = []
        self.text: str | None = None
        self.id: str | None = None
        self.mwt: list[tuple[int, int, str]] | None = None
        self.mwt_end = 0
        self.mwt_space = True
        self.start_line = start_line


def read_conllu_file(path: str | Path, fields: Iterable[str] = DEFAULT_FIELDS) -> tuple[list[Sentence], int]:
    """Read a CoNLL-U file; returns ``(sentences, skipped)`` (skipped: sentences without words).

    Raises CorpusFormatError for a line that does not have 10 tab-separated columns, a word id out
    of sequence, a malformed id or range, an empty form, and for a file without sentences.
    """
    columns = _field_columns(fields)
    with gc_paused():
        return _read_conllu(path, columns)


def _read_conllu(path: str | Path, columns: list[tuple[int, str]]) -> tuple[list[Sentence], int]:
    lemma_column = FIELD_COLUMNS["lemma"]
    text = read_text(path)
    file_name = Path(path).name
    sentences: list[Sentence] = []
    skipped = 0
    document: str | None = None
    documents = 0
    previous: Sentence | None = None
    state: _State | None = None

    def finish(state: _State) -> None:
        nonlocal skipped, previous
        if not state.tokens:
            skipped += 1
            return
        if state.mwt_end > len(state.tokens):
            raise CorpusFormatError(
                path,
                state.start_line,
                f"multi-word token range ends at word {state.mwt_end}, "
                f"after the sentence's last word {len(state.tokens)}",
            )
        sentence = Sentence()
        sentence.tokens = state.tokens
        sentence.text = state.text
        sentence.id = state.id
        if state.mwt is not None:
            sentence.metadata["multiword_tokens"] = state.mwt
        if document is not None:
            sentence.document_id = document
            if previous is not None and previous.document_id == document:
                previous.next_sentence = sentence
                sentence.previous_sentence = previous
        previous = sentence
        sentences.append(sentence)

    for lineno, line in enumerate(text.split("\n"), 1):
        if not line or line.isspace():
            if state is not None:
                finish(state)
                state = None
            continue
        if state is None:
            state = _State(lineno)
        if line[0] == "#":
            key, eq, value = line[1:].partition("=")
            key = key.strip()
            if key == "text" and eq:
                state.text = value.strip()
            elif key == "sent_id" and eq:
                state.id = value.strip()
            elif key == "newdoc" or key == "newdoc id":
                documents += 1
                doc_id = value.strip() if eq else ""
                document = doc_id or f"{file_name}#{documents}"
            continue
        row = line.split("\t")
        if len(row) != 10:
            reason = f"wrong number of columns (expected 10, got {len(row)})"
            if len(line.split()) == 10:
                reason += (
                    "; CoNLL-U columns are separated by tabs, and this line has 10 only when split at spaces"
                )
            raise CorpusFormatError(path, lineno, reason)
        word_id = row[0]
        tokens = state.tokens
        if not _is_number(word_id):
            if "." in word_id:
                _check_empty_node(path, lineno, word_id, len(tokens))
                continue
            if "-" in word_id:
                first, _, last = word_id.partition("-")
                if (
                    not (_is_number(first) and _is_number(last))
                    or int(first) != len(tokens) + 1
                    or int(last) <= int(first)  # a range covers two words or more (UD's rule)
                ):
                    raise CorpusFormatError(
                        path, lineno, f"invalid multi-word token range {word_id!r} after word {len(tokens)}"
                    )
                if state.mwt is None:
                    state.mwt = []
                state.mwt.append((int(first) - 1, int(last), row[1]))
                state.mwt_end = int(last)
                state.mwt_space = "SpaceAfter=No" not in row[9]
                continue
            raise CorpusFormatError(path, lineno, f"invalid word id {word_id!r}")
        index = len(tokens)
        if index == MAX_SENTENCE_TOKENS:
            raise CorpusFormatError(
                path,
                state.start_line,
                f"the sentence starting here has more than {MAX_SENTENCE_TOKENS:,} words (word "
                f"{index + 1} is on line {lineno}); sentences that long are refused",
            )
        if int(word_id) != index + 1:
            raise CorpusFormatError(path, lineno, f"word id {word_id} out of sequence (expected {index + 1})")
        form = row[1]
        if not form:
            raise CorpusFormatError(path, lineno, "empty word form")
        if len(form) > MAX_TOKEN_CHARS:
            check_token_length(path, lineno, [form])
        token = Token(form, index)
        if index + 1 < state.mwt_end:
            token.whitespace_after = False
        elif index + 1 == state.mwt_end:
            token.whitespace_after = state.mwt_space
        elif "SpaceAfter=No" in row[9]:
            token.whitespace_after = False
        labels = token.labels
        for column, name in columns:
            value = row[column]
            if column != lemma_column:
                # Unicode whitespace too: a trailing no-break space would make "NOUN\xa0" a new
                # label. A lemma is a word form like the token's, whose spaces are its own.
                value = clean_label(value)
            if value != "_" or (column == lemma_column and form == "_"):
                labels[name] = Label(value)
        tokens.append(token)
    if state is not None:
        finish(state)
    if not sentences:
        raise CorpusFormatError(path, 1, f"empty file: no sentences with words ({skipped} without words)")
    return sentences, skipped


def _is_number(text: str) -> bool:
    # CoNLL-U ids are ASCII digits; str.isdigit alone also accepts superscripts and other
    # scripts' digits, some of which int() refuses.
    return text.isascii() and text.isdigit()


def _check_empty_node(path: str | Path, lineno: int, word_id: str, words: int) -> None:
    major, _, minor = word_id.partition(".")
    if not (_is_number(major) and _is_number(minor)) or int(major) != words:
        raise CorpusFormatError(path, lineno, f"invalid empty node id {word_id!r} after word {words}")


class ConlluCorpus(Corpus):
    """A corpus of CoNLL-U files: a ``data_folder`` with ``*train*.conllu`` / ``*dev*.conllu`` /
    ``*test*.conllu`` (found by name) or explicit files. ``fields`` as in :func:`read_conllu_file`.
    """

    def __init__(
        self,
        data_folder: str | Path | None = None,
        *,
        train_file: str | Path | None = None,
        dev_file: str | Path | None = None,
        test_file: str | Path | None = None,
        fields: Iterable[str] = DEFAULT_FIELDS,
        name: str | None = None,
        sample_missing_splits: SampleMissingSplits = True,
        seed: int = 42,
    ) -> None:
        files = resolve_split_files(data_folder, train_file, dev_file, test_file, suffixes=(".conllu",))
        splits: dict[str, list[Sentence] | None] = {"train": None, "dev": None, "test": None}
        skipped = 0
        for split, path in files.items():
            splits[split], n = read_conllu_file(path, fields)
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
