"""Token and document embeddings; ``embeddings_from_config`` rebuilds any of them from its config.

Modules are imported lazily: building a GloVe tagger must not pay for importing transformers.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from engine.embeddings.base import (
    EMBEDDING_TYPES,
    DocumentEmbeddings,
    EmbeddingConfigError,
    Embeddings,
    StorageMode,
    TokenEmbeddings,
    clear_stored_embeddings,
    register_embedding,
    set_storage_mode,
)

# Where the built-in types live, so that only the needed module is imported. Types registered
# elsewhere (any module of this package using @register_embedding) are found by scanning.
_MODULE_FOR_TYPE: dict[str, str] = {
    "word": "engine.embeddings.word",
    "character": "engine.embeddings.character",
    "char": "engine.embeddings.character",
    "transformer_word": "engine.embeddings.transformer",
    "transformer": "engine.embeddings.transformer",
    "transformer_document": "engine.embeddings.transformer",
    "document_pool": "engine.embeddings.document",
    "document_rnn": "engine.embeddings.document",
    "stacked": "engine.embeddings.stacked",
    "flair": "engine.embeddings.flair",
}

_EXPORTS: dict[str, str] = {
    "WordEmbeddings": "engine.embeddings.word",
    "CharacterEmbeddings": "engine.embeddings.character",
    "TransformerWordEmbeddings": "engine.embeddings.transformer",
    "TransformerDocumentEmbeddings": "engine.embeddings.transformer",
    "DocumentPoolEmbeddings": "engine.embeddings.document",
    "DocumentRNNEmbeddings": "engine.embeddings.document",
    "StackedEmbeddings": "engine.embeddings.stacked",
    "FlairEmbeddings": "engine.embeddings.flair",
}

__all__ = [
    "EMBEDDING_TYPES",
    "DocumentEmbeddings",
    "EmbeddingConfigError",
    "Embeddings",
    "StorageMode",
    "TokenEmbeddings",
    "clear_stored_embeddings",
    "embedding_class",
    "embeddings_from_config",
    "register_embedding",
    "set_storage_mode",
    *_EXPORTS,
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.embeddings' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def embedding_class(type_name: str) -> type[Embeddings]:
    """The registered class for a config ``"type"`` (importing its module on first use)."""
    if type_name not in EMBEDDING_TYPES and type_name in _MODULE_FOR_TYPE:
        try:
            importlib.import_module(_MODULE_FOR_TYPE[type_name])
        except ModuleNotFoundError as error:
            if error.name != _MODULE_FOR_TYPE[type_name]:
                raise
    if type_name not in EMBEDDING_TYPES:
        for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
            importlib.import_module(info.name)
    cls = EMBEDDING_TYPES.get(type_name)
    if cls is None:
        known = ", ".join(sorted(set(EMBEDDING_TYPES) | set(_MODULE_FOR_TYPE)))
        raise EmbeddingConfigError(f"unknown embedding type {type_name!r} (known types: {known})")
    return cls


def embeddings_from_config(
    config: dict[str, Any] | list[dict[str, Any]], resource_dir: Path | None = None
) -> Embeddings:
    """Rebuild an embedding (recursively for stacked and document embeddings) from its config.

    ``resource_dir`` is the folder ``save_resources`` wrote to (a saved model's folder); without it
    the embedding is built from its original source (a training spec). A list of configs (a
    spec's ``"embeddings"``) builds their ``StackedEmbeddings`` (or the single one)."""
    if isinstance(config, list):
        if len(config) == 1:
            return embeddings_from_config(config[0], resource_dir)
        return embeddings_from_config({"type": "stacked", "embeddings": config}, resource_dir)
    if not isinstance(config, dict):
        raise EmbeddingConfigError(f"an embedding config must be a JSON object, got {type(config).__name__}")
    type_name = config.get("type")
    if not isinstance(type_name, str):
        raise EmbeddingConfigError(f"embedding config has no string 'type': {config!r}")
    cls = embedding_class(type_name)
    built = cls.from_config(config, Path(resource_dir) if resource_dir is not None else None)
    known = set(built.to_config()) | cls.legacy_config_keys
    unknown = sorted(set(config) - known)
    if unknown:
        raise EmbeddingConfigError(
            f"unknown {type_name!r} embedding config keys {unknown} (known: {', '.join(sorted(known))})"
        )
    return built
