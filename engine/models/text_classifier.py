"""Text classifier: a document embedding and one linear layer, as in the Flair tutorial.

    document embeddings -> linear -> softmax + cross-entropy       (single label)
                                  -> sigmoid + binary cross-entropy (multi-label)

Predictions go to ``sentence.labels[label_name]``: single-label, the most probable class with its
probability; multi-label, every class whose probability reaches ``multi_label_threshold`` (possibly
none), each with its probability. With ``return_probabilities_for_all_classes``,
``sentence.metadata[f"{label_name}_distribution"]`` is ``{class: probability}`` over all classes.
Gold labels missing from the dictionary are left out of the loss (single-label: the sentence is not
counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.data import Dictionary, Sentence
from engine.embeddings.base import DocumentEmbeddings, Embeddings
from engine.models.base import Model, distribution_key, register_model

IGNORE = -100


@register_model
class TextClassifier(Model):
    def __init__(
        self,
        document_embeddings: DocumentEmbeddings,
        label_dictionary: Dictionary,
        label_type: str,
        multi_label: bool | None = None,
        multi_label_threshold: float = 0.5,
    ) -> None:
        """``multi_label=None`` takes the dictionary's ``multi_label`` (set by
        ``Corpus.make_label_dictionary`` when a training sentence has several labels)."""
        super().__init__()
        if not isinstance(document_embeddings, DocumentEmbeddings):
            raise TypeError(
                f"a TextClassifier needs document embeddings, got {type(document_embeddings).__name__}"
            )
        if len(label_dictionary) == 0:
            raise ValueError(f"the label dictionary for {label_type!r} is empty")
        if not 0.0 < multi_label_threshold < 1.0:
            raise ValueError(f"multi_label_threshold must be in (0, 1), got {multi_label_threshold}")
        self.embeddings = document_embeddings
        self.label_dictionary = label_dictionary
        self.label_type = label_type
        self.is_multi_label = bool(label_dictionary.multi_label if multi_label is None else multi_label)
        self.multi_label_threshold = float(multi_label_threshold)
        self._classes = label_dictionary.get_items()
        self.decoder = nn.Linear(document_embeddings.embedding_length, len(label_dictionary))
        nn.init.xavier_uniform_(self.decoder.weight)

    @property
    def label_kind(self) -> str:
        return "sentence"

    @property
    def multi_label(self) -> bool:
        return self.is_multi_label

    def _scores(self, sentences: list[Sentence]) -> torch.Tensor:
        return self.decoder(self.embeddings.embed(sentences)).float()

    def _targets(self, sentences: list[Sentence], device: torch.device) -> torch.Tensor:
        index = self.label_dictionary.item2idx
        if self.is_multi_label:
            targets = torch.zeros(len(sentences), len(self._classes))
            for row, sentence in enumerate(sentences):
                for label in sentence.get_labels(self.label_type):
                    column = index.get(label.value)
                    if column is not None:
                        targets[row, column] = 1.0
            return targets.to(device)
        gold = []
        for sentence in sentences:
            labels = sentence.get_labels(self.label_type)
            gold.append(index.get(labels[0].value, IGNORE) if labels else IGNORE)
        return torch.tensor(gold, dtype=torch.long, device=device)

    def _loss(self, scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        if self.is_multi_label:
            return F.binary_cross_entropy_with_logits(scores, targets, reduction="sum"), scores.shape[0]
        count = int((targets != IGNORE).sum())
        if count == 0:
            return scores.sum() * 0.0, 0
        return F.cross_entropy(scores, targets, ignore_index=IGNORE, reduction="sum"), count

    def forward_loss(self, sentences: list[Sentence]) -> tuple[torch.Tensor, int]:
        if not sentences:
            return torch.zeros((), device=self.device, requires_grad=True), 0
        scores = self._scores(sentences)
        return self._loss(scores, self._targets(sentences, scores.device))

    def _predict_batch(
        self, sentences: list[Sentence], label_name: str, return_probabilities: bool, with_loss: bool
    ) -> tuple[float, int]:
        scores = self._scores(sentences)
        probabilities = torch.sigmoid(scores) if self.is_multi_label else scores.softmax(dim=-1)
        rows = probabilities.tolist()
        classes = self._classes
        for sentence, row in zip(sentences, rows, strict=True):
            sentence.labels.pop(label_name, None)
            if self.is_multi_label:
                for name, p in zip(classes, row, strict=True):
                    if p >= self.multi_label_threshold:
                        sentence.add_label(label_name, name, p)
            else:
                best = max(range(len(row)), key=row.__getitem__)
                sentence.set_label(label_name, classes[best], row[best])
            if return_probabilities:
                sentence.metadata[distribution_key(label_name)] = dict(zip(classes, row, strict=True))
            else:
                sentence.metadata.pop(distribution_key(label_name), None)
        if not with_loss:
            return 0.0, 0
        loss, count = self._loss(scores, self._targets(sentences, scores.device))
        return float(loss), count

    def _write_predictions(
        self, path: Path, sentences: list[Sentence], gold_type: str, predicted_type: str
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for sentence in sentences:
                text = sentence.to_original_text().replace("\t", " ").replace("\n", " ")
                gold = "|".join(lb.value for lb in sentence.get_labels(gold_type))
                predicted = "|".join(lb.value for lb in sentence.get_labels(predicted_type))
                handle.write(f"{text}\t{gold}\t{predicted}\n")

    def hyperparameters(self) -> dict[str, Any]:
        return {"multi_label": self.is_multi_label, "multi_label_threshold": self.multi_label_threshold}

    @classmethod
    def from_parts(
        cls,
        embeddings: Embeddings,
        label_dictionary: Dictionary,
        label_type: str,
        hyperparameters: dict[str, Any],
    ) -> TextClassifier:
        if not isinstance(embeddings, DocumentEmbeddings):
            raise TypeError(f"a TextClassifier needs document embeddings, got {type(embeddings).__name__}")
        unknown = set(hyperparameters) - {"multi_label", "multi_label_threshold"}
        if unknown:
            raise ValueError(f"unknown TextClassifier hyperparameters {sorted(unknown)}")
        multi = hyperparameters.get("multi_label")
        threshold = hyperparameters.get("multi_label_threshold", 0.5)
        if (
            not isinstance(multi, bool)
            or not isinstance(threshold, (int, float))
            or isinstance(threshold, bool)
        ):
            raise ValueError(f"invalid TextClassifier hyperparameters {hyperparameters!r}")
        return cls(
            embeddings,
            label_dictionary,
            label_type,
            multi_label=multi,
            multi_label_threshold=float(threshold),
        )

    def extra_repr(self) -> str:
        return (
            f"label_type={self.label_type!r}, classes={len(self._classes)}, multi_label={self.is_multi_label}"
        )
