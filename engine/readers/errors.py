"""The readers' typed errors."""

from __future__ import annotations

import unicodedata
from pathlib import Path

# No word, URL or hashtag comes near this; a longer "token" is a line that lost its separators or
# a pasted blob, and every model that reads characters would step through all of it.
MAX_TOKEN_CHARS = 1000
# The longest sentences of the shared corpora have under 200 tokens (UD EWT about 160, CoNLL-03 113).
# Far more is a file that lost its blank lines between sentences, read as one sentence that no
# model should take: a mini-batch pads every sentence to its length (32 x 200,000 tokens x a
# 4,196-dimension stacked embedding is 100 GB) and the CRF's work grows with it.
MAX_SENTENCE_TOKENS = 10_000
# A classification text is one document, and long ones (reports, judgements) are corpora of their
# own; a transformer reads its first 512 subtokens anyway. Past this it is a file whose line
# breaks were lost, or not text.
MAX_TEXT_TOKENS = 100_000


class CorpusFormatError(Exception):
    """Malformed corpus input: which file, which 1-based line, and what is wrong there.

    ``file`` is the path as the reader was given it; ``str(error)`` names only the file's base
    name, e.g. ``"train.txt, line 12: wrong number of columns (expected 4, got 3)"``.
    """

    def __init__(self, file: str | Path, line: int, reason: str) -> None:
        self.file = str(file)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.filename}, line {line}: {reason}")

    @property
    def filename(self) -> str:
        return Path(self.file).name

    def to_dict(self) -> dict[str, str | int]:
        return {"file": self.filename, "line": self.line, "reason": self.reason}


class ReaderOptionError(ValueError):
    """Reader options that are unknown, of the wrong type or inconsistent (not a file problem).

    ``options`` names the options at fault where one can tell, so a caller that took them from
    fields of its own (an HTTP form) can point at the field."""

    def __init__(self, message: str, options: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.options = options


def check_token_length(file: str | Path, line: int, tokens: list[str]) -> None:
    """Raise at ``line`` for a token over ``MAX_TOKEN_CHARS`` (call it only for a long line)."""
    longest = max(tokens, key=len, default="")
    if len(longest) > MAX_TOKEN_CHARS:
        raise CorpusFormatError(
            file,
            line,
            f"a token of {len(longest)} characters ({longest[:20]!r}...); the limit is {MAX_TOKEN_CHARS}: "
            "is a separator missing, or is this not text?",
        )


def check_label_type_name(name: str, what: str, options: tuple[str, ...]) -> None:
    """Raise ReaderOptionError for a label type name with a control character or a lone
    surrogate: it names files, job names and JSON keys, where a NUL fails the database."""
    odd = next((c for c in name if unicodedata.category(c) in ("Cc", "Cs")), None)
    if odd is not None:
        raise ReaderOptionError(f"{what} {name!r} holds a control character ({odd!r})", options)
