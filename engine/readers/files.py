"""Reading corpus files as text: UTF-8 checked, line endings normalised, empty files refused."""

from __future__ import annotations

from pathlib import Path

from engine.readers.errors import CorpusFormatError, ReaderOptionError


def read_text(path: str | Path) -> str:
    """The file's text. A UTF-8 byte-order mark is dropped and ``\\r\\n`` becomes ``\\n``.

    Raises CorpusFormatError for text that is not UTF-8 (with the line of the first bad byte)
    and for a file with nothing but whitespace.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise CorpusFormatError(
            path, line, f"text is not UTF-8 (invalid byte 0x{data[e.start]:02x} at column {column})"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise CorpusFormatError(path, 1, "empty file")
    return text


SPLITS: tuple[str, ...] = ("train", "dev", "test")


def _split_of(name: str) -> str | None:
    lowered = name.lower()
    # CoNLL naming: testa is the development set, testb the test set.
    if "testa" in lowered or "dev" in lowered or "valid" in lowered:
        return "dev"
    if "testb" in lowered or "test" in lowered:
        return "test"
    if "train" in lowered:
        return "train"
    return None


def find_split_files(folder: str | Path, suffixes: tuple[str, ...] = ()) -> dict[str, Path]:
    """The train/dev/test files of a corpus folder, recognised by name.

    A file is ``dev`` when its name contains ``dev``, ``valid`` or ``testa``; ``test`` when it
    contains ``test`` or ``testb``; ``train`` when it contains ``train``. Only files ending in one
    of ``suffixes`` count when suffixes are given. Two files for one split is an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"corpus folder {folder} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if suffixes and not path.name.endswith(suffixes):
            continue
        split = _split_of(path.name)
        if split is None:
            continue
        if split in found:
            raise ReaderOptionError(
                f"two {split} files in {folder}: {found[split].name} and {path.name}; pass the files explicitly"
            )
        found[split] = path
    if "train" not in found:
        raise FileNotFoundError(f"no training file (a name containing 'train') in {folder}")
    return found
