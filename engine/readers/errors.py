"""The readers' typed errors."""

from __future__ import annotations

from pathlib import Path


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
    """Reader options that are unknown, of the wrong type or inconsistent (not a file problem)."""
