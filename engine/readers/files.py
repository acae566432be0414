"""Reading corpus files as text: UTF-8 checked, line endings normalised, empty files refused."""

from __future__ import annotations

import gc
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.readers.errors import CorpusFormatError, ReaderOptionError
from engine.tokenization import INVISIBLE, JOINERS


def read_text(path: str | Path) -> str:
    """The file's text. Byte-order marks (U+FEFF) are dropped and ``\\r\\n`` becomes ``\\n``.

    Raises CorpusFormatError for text that is not UTF-8 (with the line of the first bad byte)
    and for a file with nothing but whitespace.
    """
    data = Path(path).read_bytes()
    not_text = _not_plain_text(data)
    if not_text:
        raise CorpusFormatError(path, 1, not_text)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise CorpusFormatError(
            path, line, f"text is not UTF-8 (invalid byte 0x{data[e.start]:02x}, byte {column} of the line)"
        ) from None
    if "\ufeff" in text:
        # Not only the file's first character: files joined with cat keep each one's mark, and
        # "\ufeff-DOCSTART-" or "\ufeff# sent_id" would no longer be what they are.
        text = text.replace("\ufeff", "")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise CorpusFormatError(path, 1, "empty file")
    return text


# What tokenization reads as no text (control and bidi format characters, zero-width spaces,
# BOMs), joiners and whitespace, all of which str.strip() partly keeps: at the end of a label
# they made "ORG\u200b" a class of its own beside "ORG".
_AROUND_LABELS = INVISIBLE + JOINERS + "".join(chr(c) for c in range(0x3001) if chr(c).isspace())


def clean_label(value: str) -> str:
    """A label value without the whitespace (Unicode's too) and invisible format characters
    around it, its letters composed (NFC): "B-ÖRT" typed on one machine and decomposed by
    another ("O\u0308") would be two classes that look the same."""
    value = value.strip()
    if not value.isascii():
        value = value.strip(_AROUND_LABELS)  # one pass over both: "ORG\u200b \u200b" alternates
        value = unicodedata.normalize("NFC", value)
    return value


def _not_plain_text(data: bytes) -> str | None:
    """What the file is when it is recognisably not UTF-8 text, in words a user can act on
    (the byte-level message points at a byte of a compressed or UTF-16 file)."""
    if data.startswith(b"\x1f\x8b"):
        return "a gzip file: upload the uncompressed text"
    if data.startswith(b"PK\x03\x04"):
        return "a zip archive: upload the text file itself"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "text in UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8"
    head = data[:4096]
    if len(head) >= 4 and head.count(0) >= len(head) // 4:
        # ASCII in UTF-16 without a byte-order mark: every other byte is 0
        return "text in UTF-16 or another encoding with NUL bytes, not UTF-8: save it as UTF-8"
    return None


def invalid_unicode(value: Any) -> str | None:
    """What is wrong with the first string in a parsed JSON value (keys included) that is not
    Unicode text, or None. Python's JSON parser lets a lone surrogate escape such as ``\\ud800``
    through; such a string cannot be written as UTF-8, so storing, serving or saving it in a model
    would fail later."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{value!r} holds a lone surrogate escape (\\ud800-\\udfff): not Unicode text"
        return None
    items = value.items() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        for part in item if isinstance(value, dict) else (item,):
            problem = invalid_unicode(part)
            if problem is not None:
                return problem
    return None


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


def resolve_split_files(
    data_folder: str | Path | None,
    train_file: str | Path | None = None,
    dev_file: str | Path | None = None,
    test_file: str | Path | None = None,
    suffixes: tuple[str, ...] = (),
) -> dict[str, Path]:
    """Split -> file: found by name in ``data_folder`` (if given), overridden by explicit files
    (relative ones are looked up in ``data_folder`` first). Every file must exist."""
    files: dict[str, Path] = find_split_files(data_folder, suffixes) if data_folder is not None else {}
    for split, given in (("train", train_file), ("dev", dev_file), ("test", test_file)):
        if given is not None:
            path = Path(given)
            if data_folder is not None and not path.is_absolute() and (Path(data_folder) / path).is_file():
                path = Path(data_folder) / path
            files[split] = path
    if "train" not in files:
        raise ReaderOptionError("a corpus needs a training file: pass data_folder or train_file")
    for split, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"{split} file {path} does not exist")
    return files


def corpus_name(data_folder: str | Path | None, train_file: Path) -> str:
    return Path(data_folder).name if data_folder is not None else train_file.stem


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a reader allocates its objects.

    A reader creates millions of small tracked objects (tokens, label dicts, labels) and none of
    them is garbage yet; left on, the collector re-scans the growing heap again and again, which
    makes reading EWT five times slower.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
