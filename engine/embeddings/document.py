"""Document embeddings built from token embeddings: pooling and an RNN over the tokens.

``DocumentPoolEmbeddings``: mean/max/min over each sentence's token vectors (padding excluded),
optionally after a trainable reprojection (``fine_tune_mode``: ``linear`` = one square linear
map initialised to the identity, so training starts from plain pooling; ``nonlinear`` = that map,
a ReLU and a second linear map).

``DocumentRNNEmbeddings``: dropout, locked dropout and word dropout on the token vectors (as
Flair), an optional linear reprojection, then a GRU or LSTM (optionally bidirectional); the
document vector is the final state (both directions' final states concatenated when
bidirectional), after dropout and locked dropout again (one mask per sentence).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from engine.data import Sentence
from engine.dropout import LockedDropout, WordDropout
from engine.embeddings.base import (
    DocumentEmbeddings,
    EmbeddingConfigError,
    TokenEmbeddings,
    register_embedding,
)

POOLINGS = ("mean", "max", "min")
FINE_TUNE_MODES = ("none", "linear", "nonlinear")
RNN_TYPES = ("GRU", "LSTM")


def _as_token_embeddings(embeddings: TokenEmbeddings | Sequence[TokenEmbeddings]) -> TokenEmbeddings:
    if isinstance(embeddings, TokenEmbeddings):
        return embeddings
    if (
        isinstance(embeddings, Sequence)
        and len(embeddings) == 1
        and isinstance(embeddings[0], TokenEmbeddings)
    ):
        return embeddings[0]
    if isinstance(embeddings, Sequence):
        from engine.embeddings.stacked import StackedEmbeddings

        return StackedEmbeddings(list(embeddings))
    raise EmbeddingConfigError(f"document embeddings need token embeddings, got {type(embeddings).__name__}")


def _lengths_and_mask(
    sentences: list[Sentence], max_len: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in sentences], device=device)
    mask = torch.arange(max_len, device=device)[None, :] < lengths[:, None]
    return lengths, mask


def _child_from_config(config: dict[str, Any], resource_dir: Path | None) -> TokenEmbeddings:
    from engine.embeddings import embeddings_from_config

    child = config.get("embeddings")
    if not isinstance(child, dict):
        raise EmbeddingConfigError(
            f"{config.get('type')} config needs 'embeddings' (a token embedding config)"
        )
    built = embeddings_from_config(child, resource_dir)
    if not isinstance(built, TokenEmbeddings):
        raise EmbeddingConfigError(f"{config.get('type')}: 'embeddings' must be token embeddings")
    return built


@register_embedding("document_pool")
class DocumentPoolEmbeddings(DocumentEmbeddings):
    def __init__(
        self,
        token_embeddings: TokenEmbeddings | Sequence[TokenEmbeddings],
        pooling: str = "mean",
        fine_tune_mode: str = "none",
        name: str | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise EmbeddingConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if fine_tune_mode not in FINE_TUNE_MODES:
            raise EmbeddingConfigError(
                f"fine_tune_mode must be one of {FINE_TUNE_MODES}, got {fine_tune_mode!r}"
            )
        self.embeddings = _as_token_embeddings(token_embeddings)
        self.pooling = pooling
        self.fine_tune_mode = fine_tune_mode
        self.name = name or f"document_pool:{pooling}:{self.embeddings.name}"
        size = self.embeddings.embedding_length
        self.reprojection: nn.Module | None = None
        if fine_tune_mode != "none":
            linear = nn.Linear(size, size)
            with torch.no_grad():
                linear.weight.copy_(torch.eye(size))
                linear.bias.zero_()
            layers: list[nn.Module] = [linear]
            if fine_tune_mode == "nonlinear":
                layers += [nn.ReLU(), nn.Linear(size, size)]
            self.reprojection = nn.Sequential(*layers)

    @property
    def embedding_length(self) -> int:
        return self.embeddings.embedding_length

    @property
    def is_static(self) -> bool:
        return self.embeddings.is_static and self.reprojection is None

    def _embed(self, sentences: list[Sentence]) -> torch.Tensor:
        tokens = self.embeddings.embed(sentences)  # [B, T, D]
        if self.reprojection is not None:
            tokens = self.reprojection(tokens)
        lengths, mask = _lengths_and_mask(sentences, tokens.shape[1], tokens.device)
        if tokens.shape[1] == 0:
            # a batch of empty sentences only (predict puts them together, last): nothing to reduce
            return tokens.new_zeros(len(sentences), tokens.shape[2])
        mask = mask.unsqueeze(-1)
        if self.pooling == "mean":
            pooled = (tokens * mask).sum(dim=1) / lengths.clamp(min=1).unsqueeze(-1).to(tokens.dtype)
        elif self.pooling == "max":
            pooled = tokens.masked_fill(~mask, float("-inf")).amax(dim=1)
        else:
            pooled = tokens.masked_fill(~mask, float("inf")).amin(dim=1)
        # an empty sentence pools to zeros instead of +-inf
        return torch.where((lengths > 0).unsqueeze(-1), pooled, torch.zeros_like(pooled))

    def to_config(self) -> dict[str, Any]:
        return {
            "type": self.embedding_type,
            "name": self.name,
            "embeddings": self.embeddings.to_config(),
            "pooling": self.pooling,
            "fine_tune_mode": self.fine_tune_mode,
        }

    def save_resources(self, directory: Path) -> None:
        self.embeddings.save_resources(directory)

    @classmethod
    def from_config(cls, config: dict[str, Any], resource_dir: Path | None = None) -> DocumentPoolEmbeddings:
        return cls(
            _child_from_config(config, resource_dir),
            pooling=str(config.get("pooling", "mean")),
            fine_tune_mode=str(config.get("fine_tune_mode", "none")),
            name=config.get("name"),
        )


@register_embedding("document_rnn")
class DocumentRNNEmbeddings(DocumentEmbeddings):
    def __init__(
        self,
        token_embeddings: TokenEmbeddings | Sequence[TokenEmbeddings],
        hidden_size: int = 128,
        rnn_layers: int = 1,
        reproject_words: bool = True,
        reproject_words_dimension: int | None = None,
        bidirectional: bool = False,
        dropout: float = 0.5,
        rnn_type: str = "GRU",
        word_dropout: float = 0.0,
        locked_dropout: float = 0.0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if rnn_type not in RNN_TYPES:
            raise EmbeddingConfigError(f"rnn_type must be one of {RNN_TYPES}, got {rnn_type!r}")
        if hidden_size < 1 or rnn_layers < 1:
            raise EmbeddingConfigError("hidden_size and rnn_layers must be positive")
        for key, rate in (
            ("dropout", dropout),
            ("word_dropout", word_dropout),
            ("locked_dropout", locked_dropout),
        ):
            if not 0.0 <= rate < 1.0:
                raise EmbeddingConfigError(f"{key} must be in [0, 1), got {rate}")
        self.embeddings = _as_token_embeddings(token_embeddings)
        self.hidden_size = hidden_size
        self.rnn_layers = rnn_layers
        self.reproject_words = reproject_words
        self.bidirectional = bidirectional
        self.dropout_rate = dropout
        self.rnn_type = rnn_type
        self.name = name or f"document_rnn:{rnn_type}:{self.embeddings.name}"
        size = self.embeddings.embedding_length
        self.reproject_words_dimension = reproject_words_dimension or size
        self.reprojection = nn.Linear(size, self.reproject_words_dimension) if reproject_words else None
        rnn_input = self.reproject_words_dimension if reproject_words else size
        rnn_class = nn.GRU if rnn_type == "GRU" else nn.LSTM
        self.rnn = rnn_class(
            rnn_input,
            hidden_size,
            num_layers=rnn_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if rnn_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.word_dropout = WordDropout(word_dropout)
        self.locked_dropout = LockedDropout(locked_dropout)

    @property
    def embedding_length(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)

    def _embed(self, sentences: list[Sentence]) -> torch.Tensor:
        tokens = self.embeddings.embed(sentences)
        # An empty sentence is read as one zero token vector: in a batch with longer sentences
        # that is its padding row, which goes through the reprojection like any token. A batch of
        # empty sentences only has no row at all, so its zero step is made here, *before* the
        # reprojection (made after it, it skipped the reprojection's bias, and an empty text was
        # classified differently alone than next to another text).
        if tokens.shape[1] == 0:
            tokens = tokens.new_zeros(tokens.shape[0], 1, tokens.shape[2])
        tokens = self.word_dropout(self.locked_dropout(self.dropout(tokens)))
        if self.reprojection is not None:
            tokens = self.reprojection(tokens)
        lengths = torch.tensor([max(1, len(s)) for s in sentences])
        packed = pack_padded_sequence(tokens, lengths, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        final = state[0] if isinstance(state, tuple) else state  # [layers * directions, B, H]
        if self.bidirectional:
            document = torch.cat([final[-2], final[-1]], dim=-1)
        else:
            document = final[-1]
        return self.locked_dropout(self.dropout(document).unsqueeze(1)).squeeze(1)

    def to_config(self) -> dict[str, Any]:
        return {
            "type": self.embedding_type,
            "name": self.name,
            "embeddings": self.embeddings.to_config(),
            "hidden_size": self.hidden_size,
            "rnn_layers": self.rnn_layers,
            "reproject_words": self.reproject_words,
            "reproject_words_dimension": self.reproject_words_dimension,
            "bidirectional": self.bidirectional,
            "dropout": self.dropout_rate,
            "word_dropout": self.word_dropout.p,
            "locked_dropout": self.locked_dropout.p,
            "rnn_type": self.rnn_type,
        }

    def save_resources(self, directory: Path) -> None:
        self.embeddings.save_resources(directory)

    @classmethod
    def from_config(cls, config: dict[str, Any], resource_dir: Path | None = None) -> DocumentRNNEmbeddings:
        return cls(
            _child_from_config(config, resource_dir),
            hidden_size=int(config.get("hidden_size", 128)),
            rnn_layers=int(config.get("rnn_layers", 1)),
            reproject_words=bool(config.get("reproject_words", True)),
            reproject_words_dimension=config.get("reproject_words_dimension"),
            bidirectional=bool(config.get("bidirectional", False)),
            dropout=float(config.get("dropout", 0.5)),
            rnn_type=str(config.get("rnn_type", "GRU")),
            word_dropout=float(config.get("word_dropout", 0.0)),
            locked_dropout=float(config.get("locked_dropout", 0.0)),
            name=config.get("name"),
        )
