"""Plain-text corpora for language-model training.

A corpus is a folder::

    train/   one or more UTF-8 text files (the training "splits"; each is read as one stream)
    valid.txt
    test.txt (optional)

One sentence or paragraph per line: line breaks are part of the text the model learns (the
boundary ``"\\n"`` a sentence is read with). ``write_text_corpus`` builds such a folder from lines
of raw text, ``corpus_texts`` turns a tagging corpus into lines (original text where the reader
kept it, otherwise the tokens joined with spaces).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data import Corpus, Sentence
from engine.readers.errors import CorpusFormatError
from engine.readers.files import read_text

TRAIN_FOLDER = "train"
VALID_FILE = "valid.txt"
TEST_FILE = "test.txt"
# bytes read from each end of a file for its fingerprint: corpora run to gigabytes
FINGERPRINT_SAMPLE = 8192


class LanguageModelCorpusError(ValueError):
    """A language-model corpus folder is malformed; the message names the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _read(path: Path) -> str:
    try:
        return read_text(path)
    except CorpusFormatError as error:
        raise LanguageModelCorpusError(path, str(error)) from None


@dataclass(frozen=True)
class TextCorpus:
    folder: Path
    train_files: tuple[Path, ...]
    valid_file: Path
    test_file: Path | None = None

    def __post_init__(self) -> None:
        # Flair's TextCorpus(path, dictionary, forward, character_level=True) built one of these
        # with a Dictionary as its train files and failed deep inside training.
        paths = (
            [self.folder, *self.train_files, self.valid_file] if isinstance(self.train_files, tuple) else []
        )
        if (
            not paths
            or not all(isinstance(p, Path) for p in paths)
            or not (self.test_file is None or isinstance(self.test_file, Path))
        ):
            raise TypeError(
                "TextCorpus is read from a folder: TextCorpus.open(folder) (train/ with training files, "
                "valid.txt, optional test.txt); the characters come from the corpus "
                "(LanguageModel(corpus.characters(), is_forward=...)), not from a Dictionary argument"
            )

    @classmethod
    def open(cls, folder: str | Path) -> TextCorpus:
        folder = Path(folder)
        if not folder.is_dir():
            raise LanguageModelCorpusError(folder, "not a folder")
        train_dir = folder / TRAIN_FOLDER
        if not train_dir.is_dir():
            raise LanguageModelCorpusError(folder, f"missing the {TRAIN_FOLDER}/ folder of training files")
        train = tuple(sorted(p for p in train_dir.iterdir() if p.is_file() and not p.name.startswith(".")))
        if not train:
            raise LanguageModelCorpusError(train_dir, "no training files")
        valid = folder / VALID_FILE
        if not valid.is_file():
            raise LanguageModelCorpusError(folder, f"missing {VALID_FILE}")
        test = folder / TEST_FILE
        return cls(folder, train, valid, test if test.is_file() else None)

    def read_train(self, index: int) -> str:
        return _read(self.train_files[index])

    def read_valid(self) -> str:
        return _read(self.valid_file)

    def read_test(self) -> str | None:
        return _read(self.test_file) if self.test_file is not None else None

    def fingerprint(self) -> list[dict[str, Any]]:
        """Each file's name, size and a digest of its first and last ``FINGERPRINT_SAMPLE``
        bytes: cheap on a corpus of gigabytes, and the same for a copy of the folder elsewhere (a
        requeued job's), which modification times are not. An edit that keeps the size and both
        ends goes unseen."""
        files = [(path, f"{TRAIN_FOLDER}/{path.name}") for path in self.train_files]
        files.append((self.valid_file, VALID_FILE))
        if self.test_file is not None:
            files.append((self.test_file, TEST_FILE))
        return [_file_fingerprint(path, name) for path, name in files]

    def characters(self, min_count: int = 1) -> list[str]:
        """Characters of the training files seen at least ``min_count`` times, most frequent first."""
        counts: Counter[str] = Counter()
        for index in range(len(self.train_files)):
            counts.update(self.read_train(index))
        return [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]


def _file_fingerprint(path: Path, name: str) -> dict[str, Any]:
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(FINGERPRINT_SAMPLE))
        if size > FINGERPRINT_SAMPLE:
            handle.seek(max(FINGERPRINT_SAMPLE, size - FINGERPRINT_SAMPLE))
            digest.update(handle.read(FINGERPRINT_SAMPLE))
    # 128 bits tell edits apart; the state file, rewritten after every split, lists every file
    return {"file": name, "size": size, "sample": digest.hexdigest()[:32]}


def fingerprint_differences(saved: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[str]:
    """What differs between two ``TextCorpus.fingerprint()`` results, one phrase per file."""
    before = {entry["file"]: entry for entry in saved}
    now = {entry["file"]: entry for entry in current}
    differences = []
    for name, entry in before.items():
        other = now.get(name)
        if other is None:
            differences.append(f"{name} is missing")
        elif other["size"] != entry["size"]:
            differences.append(f"{name} has {other['size']} bytes, not {entry['size']}")
        elif other["sample"] != entry["sample"]:
            differences.append(f"{name} has other content ({entry['size']} bytes as before)")
    differences += [f"{name} is new" for name in now if name not in before]
    return differences


def sentence_text(sentence: Sentence) -> str:
    return sentence.to_original_text()


def corpus_texts(corpus: Corpus | Iterable[Sentence], splits: Iterable[str] = ("train",)) -> Iterator[str]:
    """One line of text per sentence (of the given splits of a ``Corpus``)."""
    if isinstance(corpus, Corpus):
        by_name = corpus.splits()
        for split in splits:
            if split not in by_name:
                raise ValueError(f"unknown split {split!r} (train, dev, test)")
            for sentence in by_name[split]:
                yield sentence_text(sentence)
    else:
        for sentence in corpus:
            yield sentence_text(sentence)


def write_text_corpus(
    lines: Iterable[str],
    folder: str | Path,
    train_chunk_chars: int = 1_000_000,
    valid_fraction: float = 0.01,
    test_fraction: float = 0.01,
    seed: int = 42,
) -> TextCorpus:
    """Write ``lines`` as a corpus folder: a seeded sample of lines is held out for valid and test
    (at least one line each), the rest keeps its order and is cut into training files of about
    ``train_chunk_chars`` characters at line boundaries."""
    if train_chunk_chars < 1:
        raise ValueError(f"train_chunk_chars must be positive, got {train_chunk_chars}")
    if not (
        0.0 < valid_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and valid_fraction + test_fraction < 1.0
    ):
        raise ValueError(f"bad valid/test fractions {valid_fraction}, {test_fraction}")
    clean = [" ".join(line.split()) for line in lines]
    clean = [line for line in clean if line]
    n_valid = max(1, round(len(clean) * valid_fraction))
    n_test = max(1, round(len(clean) * test_fraction)) if test_fraction > 0 else 0
    if len(clean) < n_valid + n_test + 1:
        raise ValueError(f"too few non-empty lines ({len(clean)}) for train, valid and test")
    held_out = random.Random(seed).sample(range(len(clean)), n_valid + n_test)
    valid_idx, test_idx = set(held_out[:n_valid]), set(held_out[n_valid:])

    folder = Path(folder)
    train_dir = folder / TRAIN_FOLDER
    train_dir.mkdir(parents=True, exist_ok=True)
    for old in train_dir.iterdir():
        if old.is_file():
            old.unlink()
    chunk: list[str] = []
    size = 0
    written = 0

    def flush() -> None:
        nonlocal chunk, size, written
        (train_dir / f"train_{written:05d}.txt").write_text("\n".join(chunk) + "\n", encoding="utf-8")
        written += 1
        chunk, size = [], 0

    for i, line in enumerate(clean):
        if i in valid_idx or i in test_idx:
            continue
        chunk.append(line)
        size += len(line) + 1
        if size >= train_chunk_chars:
            flush()
    if chunk:
        flush()
    (folder / VALID_FILE).write_text("\n".join(clean[i] for i in sorted(valid_idx)) + "\n", encoding="utf-8")
    test_path = folder / TEST_FILE
    if n_test:
        test_path.write_text("\n".join(clean[i] for i in sorted(test_idx)) + "\n", encoding="utf-8")
    elif test_path.exists():
        test_path.unlink()
    return TextCorpus.open(folder)
