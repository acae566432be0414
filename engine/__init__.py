"""Tagsmith's ML library: data, readers, embeddings, models, trainer, evaluation, plots.

Usable alone, the way the Flair tutorial uses Flair::

    from engine import ColumnCorpus, WordEmbeddings, SequenceTagger, ModelTrainer

Names are imported lazily so that ``import engine`` stays cheap (no torch for the data layer).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # data model
    "Label": "engine.data",
    "Token": "engine.data",
    "Span": "engine.data",
    "Sentence": "engine.data",
    "Dictionary": "engine.data",
    "Corpus": "engine.data",
    "MultiCorpus": "engine.data",
    # readers
    "CorpusFormatError": "engine.readers.errors",
    "ReaderOptionError": "engine.readers.errors",
    "read_corpus_files": "engine.readers",
    "ColumnCorpus": "engine.readers.column",
    "read_column_file": "engine.readers.column",
    "ConlluCorpus": "engine.readers.conllu",
    "read_conllu_file": "engine.readers.conllu",
    "ClassificationCorpus": "engine.readers.classification",
    "read_fasttext_file": "engine.readers.classification",
    "read_table_file": "engine.readers.classification",
    "split_sentences": "engine.tokenization",
    "tokenize": "engine.tokenization",
    "sentences_from_text": "engine.tokenization",
    # embeddings
    "WordEmbeddings": "engine.embeddings.word",
    "CharacterEmbeddings": "engine.embeddings.character",
    "TransformerWordEmbeddings": "engine.embeddings.transformer",
    "TransformerDocumentEmbeddings": "engine.embeddings.transformer",
    "DocumentPoolEmbeddings": "engine.embeddings.document",
    "DocumentRNNEmbeddings": "engine.embeddings.document",
    "StackedEmbeddings": "engine.embeddings.stacked",
    "FlairEmbeddings": "engine.embeddings.flair",
    # models
    "SequenceTagger": "engine.models.sequence_tagger",
    "TextClassifier": "engine.models.text_classifier",
    "load_model": "engine.models.base",
    "LanguageModel": "engine.language_model.model",
    "LanguageModelTrainer": "engine.language_model.trainer",
    # training
    "ModelTrainer": "engine.training.trainer",
    "TrainerCallback": "engine.training.callbacks",
    "Plotter": "engine.plotting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
