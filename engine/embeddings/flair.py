"""Contextual string embeddings (Akbik et al. 2018) from a character language model.

The sentence is read as one string with the model's boundaries, ``"\\n" + text + " "``, where text
is the tokens joined by single spaces (``tokenized``, Flair's ``tokenized_lm``): a column file
knows no spacing and raw text at predict time does, so only this layout reads a token the same
way in training and in serving. Configs saved before this option (no ``tokenized`` key) keep the
layout they were trained with: the tokens joined by their own ``whitespace_after``.

A forward model's embedding of a word is its state after reading the word's last character; a
backward model reads the string right to left and gives its state after reading the word's first
character. So each direction has seen the word itself plus all the context on its side.

A batch is read ``chars_per_chunk`` characters at a time with the LSTM state carried over, and
only the states at word boundaries are kept, so long texts do not exhaust memory.

Without ``fine_tune`` the language model is frozen (always in eval mode, no gradients), the
output is a pure function of the text, and ``is_static`` lets the storage modes keep it.
The language model's weights are parameters of this module, so they are saved in the weights of
whatever model uses it (a tagger's ``model.safetensors``); its architecture and characters are
in ``to_config()``, which makes a saved tagger self-contained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.data import Sentence
from engine.embeddings.base import EmbeddingConfigError, TokenEmbeddings, register_embedding
from engine.language_model.model import END_MARKER, START_MARKER, LanguageModel, LanguageModelError
from engine.serialization import ModelFileError


def sentence_layout(sentence: Sentence, tokenized: bool = True) -> tuple[str, list[tuple[int, int]]]:
    """The string a sentence is read as and each token's [start, end) character range in it."""
    parts = [START_MARKER]
    offset = len(START_MARKER)
    spans: list[tuple[int, int]] = []
    last = len(sentence.tokens) - 1
    for i, token in enumerate(sentence.tokens):
        parts.append(token.text)
        spans.append((offset, offset + len(token.text)))
        offset += len(token.text)
        if (tokenized or token.whitespace_after) and i < last:
            parts.append(" ")
            offset += 1
    parts.append(END_MARKER)
    return "".join(parts), spans


@register_embedding("flair")
class FlairEmbeddings(TokenEmbeddings):
    def __init__(
        self,
        language_model: LanguageModel | str | Path,
        fine_tune: bool = False,
        chars_per_chunk: int = 512,
        name: str | None = None,
        tokenized: bool = True,
    ) -> None:
        """``language_model``: a model or the folder of a saved one (``LanguageModel.save``)."""
        super().__init__()
        if chars_per_chunk < 1:
            raise EmbeddingConfigError(
                f"flair embeddings chars_per_chunk must be positive, got {chars_per_chunk}"
            )
        if isinstance(language_model, str | Path):
            try:
                language_model = LanguageModel.load(language_model)
            except (LanguageModelError, ModelFileError) as error:
                raise EmbeddingConfigError(f"flair embeddings: {error}") from None
        if not isinstance(language_model, LanguageModel):
            raise EmbeddingConfigError(
                f"flair embeddings need a LanguageModel or its folder, got {type(language_model).__name__}"
            )
        self.language_model = language_model
        self.fine_tune = fine_tune
        self.chars_per_chunk = chars_per_chunk
        self.tokenized = tokenized
        self.name = name or f"flair:{language_model.direction}"
        if not fine_tune:
            language_model.requires_grad_(False)
            language_model.eval()

    @property
    def embedding_length(self) -> int:
        return self.language_model.hidden_size

    @property
    def is_static(self) -> bool:
        return not self.fine_tune

    def train(self, mode: bool = True) -> FlairEmbeddings:
        super().train(mode)
        if not self.fine_tune:
            self.language_model.eval()  # a frozen model never drops out
        return self

    def _embed(self, sentences: list[Sentence]) -> list[torch.Tensor]:
        lm = self.language_model
        texts: list[str] = []
        positions: list[list[int]] = []
        for sentence in sentences:
            text, spans = sentence_layout(sentence, self.tokenized)
            if lm.is_forward:
                texts.append(text)
                positions.append([end - 1 for _, end in spans])
            else:
                texts.append(text[::-1])
                positions.append([len(text) - 1 - start for start, _ in spans])
        with torch.set_grad_enabled(self.fine_tune and torch.is_grad_enabled()):
            return lm.states_at(texts, positions, self.chars_per_chunk)

    def to_config(self) -> dict[str, Any]:
        # The language model is inline (architecture and characters here, weights in the model's
        # safetensors). "model" only ever names where it came from, never a folder: the folder it
        # was loaded from is a worker's temporary path, kept out of saved models.
        return {
            "type": self.embedding_type,
            "name": self.name,
            "model": None,
            "fine_tune": self.fine_tune,
            "chars_per_chunk": self.chars_per_chunk,
            "tokenized": self.tokenized,
            "language_model": self.language_model.to_config(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], resource_dir: Path | None = None) -> FlairEmbeddings:
        """With ``resource_dir`` (a saved model's folder, perhaps an uploaded one) the language
        model is rebuilt from the config's inline ``language_model`` and its weights come with
        the model's; ``model`` is then never read as a folder (a config could otherwise make the
        server load any folder, such as another owner's stored model). Without ``resource_dir``
        (a spec the caller builds from its own files) ``model`` is a language model folder."""
        kwargs: dict[str, Any] = {
            "fine_tune": bool(config.get("fine_tune", False)),
            "chars_per_chunk": int(config.get("chars_per_chunk", 512)),
            "name": config.get("name"),
            # a saved model without the key was trained before the option, with its tokens' own spacing
            "tokenized": bool(config.get("tokenized", resource_dir is None)),
        }
        if resource_dir is not None:
            if not isinstance(config.get("language_model"), dict):
                raise EmbeddingConfigError(
                    f"flair embeddings {config.get('name')!r}: a saved model's config must hold the "
                    "'language_model' (its architecture and characters; the weights are in the model's "
                    "safetensors); 'model' is never loaded as a folder"
                )
            try:
                language_model = LanguageModel.from_config(config["language_model"])
            except LanguageModelError as error:
                raise EmbeddingConfigError(f"flair embeddings {config.get('name')!r}: {error}") from None
            return cls(language_model, **kwargs)
        source = config.get("model")
        if not isinstance(source, str) or not source:
            raise EmbeddingConfigError(
                f"flair embeddings config needs 'model', a language model folder: {config!r}"
            )
        return cls(source, **kwargs)
