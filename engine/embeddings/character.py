"""Character-level token embeddings: a BiLSTM over each token's characters (Lample et al. 2016).

A token's vector is the final forward state concatenated with the final backward state (a very
long token is read as its first and last ``EDGE_CHARS`` characters). A batch
runs the LSTM once over the distinct token strings of all its sentences (packed sequences), then
scatters the vectors back to the token positions.

Character dictionary: given, built from the training sentences
(``CharacterEmbeddings.from_sentences``: the default characters, then every other character of the
sentences, most frequent first, at most ``MAX_CHARACTERS`` in all), or by default printable ASCII,
Latin-1 letters and common typographic punctuation. Characters outside it share one ``<unk>``
vector: with the default dictionary that was every Cyrillic, Greek, CJK or Arabic letter (and
Latin ones such as ş or ł), so "Москва" and "Лондон" were one vector. The dictionary is part of
the config (``chars``), so a loaded model or a resumed checkpoint reads its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from engine.data import Dictionary, Sentence
from engine.embeddings.base import EmbeddingConfigError, TokenEmbeddings, register_embedding

PAD = 0  # character index 0 pads; dictionary index i maps to i + 1 (so <unk> is 1)
# A token longer than twice this is read as its first and last EDGE_CHARS characters. The LSTM
# steps through every character, one after the other, and pads every token of the batch to the
# longest: a single 1,000,000-character token (a pasted blob) held a training batch for minutes
# and took 16 GB. No word is that long, and prefix and suffix are what the final states carry.
EDGE_CHARS = 64
# The most characters from_sentences keeps (the default characters included; the rest are the
# corpus's most frequent). Everyday Chinese or Japanese text uses 3,000-7,000 distinct characters
# (GB 2312 has 6,763 hanzi, Big5's common set 13,060), so 20,000 keeps every one a tagger's
# training data is likely to hold more than a few times; past that come characters seen once or
# twice, whose vectors training hardly moves. The table is small at that size (20,000 x the
# default 25 dimensions: 500,000 weights, 2 MB) and config.json lists each character once.
MAX_CHARACTERS = 20_000


def default_characters() -> list[str]:
    ascii_chars = [chr(c) for c in range(33, 127)]
    latin1 = [chr(c) for c in range(161, 256) if c != 173]  # 173: soft hyphen, invisible
    typographic = list("–—‘’‚“”„†•…‰€™")
    return ascii_chars + latin1 + typographic


@register_embedding("character", "char")
class CharacterEmbeddings(TokenEmbeddings):
    def __init__(
        self,
        char_dictionary: Dictionary | Iterable[str] | None = None,
        char_embedding_dim: int = 25,
        hidden_size_char: int = 25,
        name: str = "char",
    ) -> None:
        super().__init__()
        if char_embedding_dim < 1 or hidden_size_char < 1:
            raise EmbeddingConfigError("char_embedding_dim and hidden_size_char must be positive")
        if char_dictionary is None:
            chars = default_characters()
        elif isinstance(char_dictionary, Dictionary):
            chars = [c for c in char_dictionary.get_items() if c != Dictionary.UNK]
        else:
            chars = [c for c in char_dictionary if c != Dictionary.UNK]
        self.char_dictionary = Dictionary(add_unk=True)
        for char in chars:
            if len(char) != 1:
                raise EmbeddingConfigError(
                    f"character dictionary items must be single characters, got {char!r}"
                )
            self.char_dictionary.add_item(char)
        self.char_embedding_dim = char_embedding_dim
        self.hidden_size_char = hidden_size_char
        self.name = name
        self.char_embedding = nn.Embedding(len(self.char_dictionary) + 1, char_embedding_dim, padding_idx=PAD)
        self.char_rnn = nn.LSTM(char_embedding_dim, hidden_size_char, batch_first=True, bidirectional=True)

    @classmethod
    def from_sentences(
        cls,
        sentences: Iterable[Sentence],
        min_count: int = 1,
        max_characters: int = MAX_CHARACTERS,
        with_defaults: bool = True,
        **kwargs: Any,
    ) -> CharacterEmbeddings:
        """Embeddings whose dictionary holds the characters of ``sentences`` (the training data:
        ``CharacterEmbeddings.from_sentences(corpus.train)``).

        With ``with_defaults``, ``default_characters()`` come first (the dictionary is then a
        superset of the default one: no character that had a vector of its own loses it), then
        the sentences' other characters seen at least ``min_count`` times, most frequent first
        (ties by code point: the same sentences always make the same dictionary), until the
        dictionary holds ``max_characters``. Any other character reads as ``<unk>``."""
        if min_count < 1 or max_characters < 1:
            raise EmbeddingConfigError("min_count and max_characters must be positive")
        counts: Counter[str] = Counter()
        for sentence in sentences:
            for token in sentence.tokens:
                counts.update(token.text)
        chars = default_characters() if with_defaults else []
        known = set(chars)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        chars += [c for c, n in ranked if n >= min_count and c not in known]
        return cls(chars[:max_characters], **kwargs)

    @property
    def embedding_length(self) -> int:
        return 2 * self.hidden_size_char

    def _char_ids(self, text: str) -> list[int]:
        item2idx = self.char_dictionary.item2idx
        if len(text) > 2 * EDGE_CHARS:
            text = text[:EDGE_CHARS] + text[-EDGE_CHARS:]
        # .get(c, 0) + 1: unknown characters land on <unk> (dictionary index 0)
        return [item2idx.get(c, 0) + 1 for c in text] or [1]

    def _embed(self, sentences: list[Sentence]) -> torch.Tensor:
        device = self.device
        unique: dict[str, int] = {}
        positions: list[list[int]] = []
        for sentence in sentences:
            positions.append([unique.setdefault(t.text, len(unique)) + 1 for t in sentence.tokens])
        max_len = max((len(p) for p in positions), default=0)
        if not unique:
            return torch.zeros(len(sentences), max_len, self.embedding_length, device=device)

        ids = [self._char_ids(text) for text in unique]
        lengths = torch.tensor([len(i) for i in ids])
        chars = torch.full((len(ids), int(lengths.max())), PAD, dtype=torch.long)
        for row, char_ids in enumerate(ids):
            chars[row, : len(char_ids)] = torch.tensor(char_ids)
        packed = pack_padded_sequence(
            self.char_embedding(chars.to(device)), lengths, batch_first=True, enforce_sorted=False
        )
        _, (final_hidden, _) = self.char_rnn(packed)
        per_word = torch.cat([final_hidden[0], final_hidden[1]], dim=-1)  # [unique words, 2H]
        table = torch.cat([per_word.new_zeros(1, per_word.shape[1]), per_word])  # row 0: padding

        index = torch.zeros(len(sentences), max_len, dtype=torch.long)
        for row, pos in enumerate(positions):
            index[row, : len(pos)] = torch.tensor(pos, dtype=torch.long)
        return table[index.to(device)]

    def to_config(self) -> dict[str, Any]:
        return {
            "type": self.embedding_type,
            "name": self.name,
            "chars": [c for c in self.char_dictionary.get_items() if c != Dictionary.UNK],
            "char_embedding_dim": self.char_embedding_dim,
            "hidden_size_char": self.hidden_size_char,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], resource_dir: Path | None = None) -> CharacterEmbeddings:
        chars = config.get("chars")
        if chars is not None and not isinstance(chars, list):
            raise EmbeddingConfigError(
                f"character embeddings 'chars' must be a list of characters: {chars!r}"
            )
        return cls(
            chars,
            char_embedding_dim=int(config.get("char_embedding_dim", 25)),
            hidden_size_char=int(config.get("hidden_size_char", 25)),
            name=config.get("name", "char"),
        )
