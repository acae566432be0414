"""Character language models: the model, its trainer and plain-text corpora (issue 8).

Train one::

    corpus = write_text_corpus(lines, "lm-corpus")          # or TextCorpus.open(folder)
    model = LanguageModel(corpus.characters(), is_forward=True, hidden_size=1024)
    LanguageModelTrainer(model, corpus).train("runs/forward", max_epochs=10)
    LanguageModel.load("runs/forward/best-lm").generate_text("The ", 100)

and use it as contextual string embeddings: ``engine.embeddings.flair.FlairEmbeddings``.
"""

from engine.language_model.corpus import (
    LanguageModelCorpusError,
    TextCorpus,
    corpus_texts,
    write_text_corpus,
)
from engine.language_model.model import LanguageModel, LanguageModelError, is_language_model_folder
from engine.language_model.trainer import LanguageModelTrainer, TrainingArgs

__all__ = [
    "LanguageModel",
    "LanguageModelCorpusError",
    "LanguageModelError",
    "LanguageModelTrainer",
    "TextCorpus",
    "TrainingArgs",
    "corpus_texts",
    "is_language_model_folder",
    "write_text_corpus",
]
