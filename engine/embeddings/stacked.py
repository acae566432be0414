"""Concatenation of several token embeddings (e.g. GloVe + character + Flair)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from engine.data import Sentence, sentence_list
from engine.embeddings.base import (
    EmbeddingConfigError,
    Embeddings,
    TokenEmbeddings,
    register_embedding,
    resource_folder_name,
)


@register_embedding("stacked")
class StackedEmbeddings(TokenEmbeddings):
    """Concatenates its children's outputs along the feature axis. Each child keeps its own
    storage (a static child's vectors may be kept while a trainable sibling is recomputed)."""

    def __init__(self, embeddings: Sequence[TokenEmbeddings], name: str = "stacked") -> None:
        super().__init__()
        if not embeddings:
            raise EmbeddingConfigError("StackedEmbeddings needs at least one embedding")
        seen: set[str] = set()
        for child in embeddings:
            if not isinstance(child, TokenEmbeddings):
                raise EmbeddingConfigError(
                    f"StackedEmbeddings stacks token embeddings; got {type(child).__name__}"
                )
            if child.name in seen:
                raise EmbeddingConfigError(
                    f"two stacked embeddings are both named {child.name!r}; pass a distinct name= to one"
                )
            seen.add(child.name)
        _check_resource_folders(embeddings)
        self.embeddings = nn.ModuleList(embeddings)
        self.name = name

    @property
    def stack(self) -> list[TokenEmbeddings]:
        """The stacked embeddings, typed (a ModuleList holds plain modules for a type checker)."""
        return cast(list[TokenEmbeddings], list(self.embeddings))

    @property
    def embedding_length(self) -> int:
        return sum(child.embedding_length for child in self.stack)

    @property
    def is_static(self) -> bool:
        return all(child.is_static for child in self.stack)

    def embed(self, sentences: list[Sentence] | Sentence) -> torch.Tensor:
        sentences = sentence_list(sentences, "embed")
        return torch.cat([child.embed(sentences) for child in self.stack], dim=-1)

    def _embed(self, sentences: list[Sentence]) -> torch.Tensor:
        return self.embed(sentences)

    def to_config(self) -> dict[str, Any]:
        return {
            "type": self.embedding_type,
            "name": self.name,
            "embeddings": [child.to_config() for child in self.stack],
        }

    def save_resources(self, directory: Path) -> None:
        for child in self.stack:
            child.save_resources(directory)

    @classmethod
    def from_config(cls, config: dict[str, Any], resource_dir: Path | None = None) -> StackedEmbeddings:
        from engine.embeddings import embeddings_from_config

        children = config.get("embeddings")
        if not isinstance(children, list) or not children:
            raise EmbeddingConfigError(
                f"stacked embeddings config needs a non-empty 'embeddings' list: {config!r}"
            )
        built = [embeddings_from_config(child, resource_dir) for child in children]
        return cls(built, name=config.get("name", "stacked"))  # type: ignore[arg-type]


def _check_resource_folders(embeddings: Sequence[TokenEmbeddings]) -> None:
    """Two embeddings that write files into one folder of a saved model (their names differ only
    in characters a folder name cannot hold, or a nested stack repeats a name) would load with one
    vocabulary or tokenizer for both. Only those that write files are compared: models saved with
    embeddings without files (character, flair) whose names share a folder still load."""
    owners: dict[str, TokenEmbeddings] = {}
    for embedding in (e for child in embeddings for e in _resource_writers(child)):
        folder = resource_folder_name(embedding.name)
        other = owners.setdefault(folder, embedding)
        if other is not embedding:
            raise EmbeddingConfigError(
                f"stacked embeddings {other.name!r} and {embedding.name!r} would save their files into "
                f"one folder ({folder!r}) of a model; pass a distinct name= to one"
            )


def _resource_writers(embedding: TokenEmbeddings) -> Iterator[TokenEmbeddings]:
    """``embedding`` or, for a stack, its embeddings at any depth (a nested stack hands its children
    the folder it was given) that save files of their own."""
    if isinstance(embedding, StackedEmbeddings):
        for child in embedding.stack:
            yield from _resource_writers(child)
    elif type(embedding).save_resources is not Embeddings.save_resources:
        yield embedding
