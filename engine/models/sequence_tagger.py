"""BiLSTM-CRF sequence tagger (Huang et al. 2015; Lample et al. 2016), as in the Flair tutorial.

    embeddings -> dropout, word dropout, locked dropout -> [reprojection] -> [BiLSTM]
               -> dropout, locked dropout -> linear -> tag scores -> [CRF]

Word dropout acts on the embeddings only (as in Flair): zeroing whole BiLSTM output vectors would
only blind the tag layer to a token's context. The reprojection starts as the identity, so the
BiLSTM first sees the pretrained vectors undistorted; PyTorch's default init scrambles them and
learning starts measurably slower (GloVe 50d, CoNLL-03 dev F1 after epochs 1-3, seeds 1 and 2:
0.666/0.647, 0.758/0.759, 0.784/0.787 with it; 0.710/0.673, 0.774/0.780, 0.809/0.806 with the
identity).

Two kinds of label type:
- ``token`` labels (``upos``): one tag per token, predicted as is.
- ``span`` labels (``ner``): the label dictionary holds the span types (``PER``, ``LOC``); the
  tagger trains on tags of ``tag_format`` (``BIOES`` or ``BIO``: ``O``, ``B-PER``, ``I-PER``,
  ``E-PER``, ``S-PER``...) and decodes predicted tags back into spans
  (:mod:`engine.tag_schemes`).
Which kind: ``label_kind`` if given, else the dictionary's ``label_kind`` attribute if it has one,
else ``span`` for the usual span type names (:data:`SPAN_TYPE_NAMES`) and ``token`` otherwise.
Gold values missing from the dictionary (types too rare for it, dev-only tags) are trained and
scored for loss as ``O``.

Predictions. Token kind: ``token.labels[label_name]`` with the tag's probability. Span kind:
``sentence.spans[label_name]``; a span's score is the mean of its tokens' probabilities of their
predicted tags. The probability of a tag is its CRF marginal P(y_t = tag | sentence) (forward-
backward) with a CRF, its softmax probability without one. With
``return_probabilities_for_all_classes``, ``sentence.metadata[f"{label_name}_distribution"]`` is
a list with one ``{tag: probability}`` dict per token (over the internal tags).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.data import Dictionary, Sentence
from engine.dropout import LockedDropout, WordDropout
from engine.embeddings.base import Embeddings, TokenEmbeddings
from engine.models.base import Model, distribution_key, register_model
from engine.models.crf import CRF
from engine.tag_schemes import spans_to_tags, tags_to_spans

TAG_FORMATS = ("BIOES", "BIO")
LABEL_KINDS = ("span", "token")
SPAN_TYPE_NAMES = frozenset({"ner", "np", "chunk", "chunks", "entity", "entities", "frame", "srl"})
OUTSIDE = "O"


# Cost of one CPU LSTM call over a padded group, in row-steps: T_max * (rows + STEP_OVERHEAD) +
# CALL_OVERHEAD. Measured for hidden 256 on a 2-core Zen 4 EPYC (torch 2.13, one thread): per step
# ~10 us + ~7 us per row; per call ~0.1 ms.
STEP_OVERHEAD_ROWS = 1.5
CALL_OVERHEAD_ROW_STEPS = 15.0
MAX_GROUP = 64


def length_groups(lengths: list[int]) -> list[list[int]]:
    """Split a batch into groups of similar length (indices, longest first) so that padded LSTM
    work is smallest. On a CPU the LSTM is compute-bound from a few rows up: a random batch of 16
    CoNLL sentences padded to its longest does ~2.5x the real work. Dynamic programme over the
    sorted lengths (groups are contiguous there), with groups of at most ``MAX_GROUP`` rows
    (beyond that a row costs no less), so O(n * MAX_GROUP)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    longest = [lengths[i] for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - MAX_GROUP), j):
            cost = best[i] + longest[i] * (j - i + STEP_OVERHEAD_ROWS) + CALL_OVERHEAD_ROW_STEPS
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


class BiLSTM(nn.Module):
    """Bidirectional LSTM over padded batches: per layer a forward LSTM over the tokens and a
    backward LSTM over each sentence reversed *within its length*, so padding (always at the end)
    never reaches a real token in either direction. The result equals a packed bidirectional
    ``nn.LSTM``; running two plain LSTMs on padded input takes PyTorch's fused CPU kernel, about
    twice as fast as packed sequences for inference. On the CPU a batch of mixed lengths runs as
    groups of similar length (``length_groups``): each sentence's result is the same."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        sizes = [input_size] + [2 * hidden_size] * (num_layers - 1)
        self.forward_layers = nn.ModuleList(nn.LSTM(n, hidden_size, batch_first=True) for n in sizes)
        self.backward_layers = nn.ModuleList(nn.LSTM(n, hidden_size, batch_first=True) for n in sizes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.shape[0] < 2:
            return self._padded(x, lengths)
        sizes = lengths.tolist()
        groups = length_groups(sizes)
        if len(groups) == 1:
            return self._padded(x, lengths)
        time = x.shape[1]
        parts = []
        for group in groups:
            index = torch.tensor(group)
            longest = sizes[group[0]]
            part = self._padded(x[index, :longest], lengths[index])
            parts.append(F.pad(part, (0, 0, 0, time - longest)))
        order = torch.tensor([i for group in groups for i in group])
        return torch.cat(parts).index_select(0, torch.argsort(order))

    def _padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device)[None, :]
        last = lengths.to(x.device)[:, None] - 1
        reverse = torch.where(positions <= last, last - positions, positions).unsqueeze(-1)
        for i, (forward, backward) in enumerate(zip(self.forward_layers, self.backward_layers, strict=True)):
            if i:
                x = self.dropout(x)
            ahead = forward(x)[0]
            flipped = x.gather(1, reverse.expand(-1, -1, x.shape[2]))
            behind = backward(flipped)[0]
            x = torch.cat([ahead, behind.gather(1, reverse.expand(-1, -1, behind.shape[2]))], dim=-1)
        return x


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


@register_model
class SequenceTagger(Model):
    def __init__(
        self,
        embeddings: TokenEmbeddings,
        tag_dictionary: Dictionary,
        tag_type: str,
        hidden_size: int = 256,
        use_crf: bool = True,
        use_rnn: bool = True,
        rnn_layers: int = 1,
        reproject_embeddings: bool = True,
        dropout: float = 0.0,
        word_dropout: float = 0.05,
        locked_dropout: float = 0.5,
        tag_format: str = "BIOES",
        label_kind: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(embeddings, TokenEmbeddings):
            raise TypeError(f"a SequenceTagger needs token embeddings, got {type(embeddings).__name__}")
        if tag_format.upper() not in TAG_FORMATS:
            raise ValueError(f"tag_format must be one of {TAG_FORMATS}, got {tag_format!r}")
        if hidden_size < 1 or rnn_layers < 1:
            raise ValueError(f"hidden_size and rnn_layers must be >= 1, got {hidden_size} and {rnn_layers}")
        if len(tag_dictionary) == 0:
            raise ValueError(f"the tag dictionary for {tag_type!r} is empty")
        kind = label_kind or getattr(tag_dictionary, "label_kind", None)
        if kind is None:
            kind = "span" if tag_type.lower() in SPAN_TYPE_NAMES else "token"
        if kind not in LABEL_KINDS:
            raise ValueError(f"label_kind must be one of {LABEL_KINDS}, got {kind!r}")
        self.embeddings = embeddings
        self.label_dictionary = tag_dictionary
        self.label_type = tag_type
        self.tag_kind = kind
        self.tag_format = tag_format.upper()
        self.hidden_size = hidden_size
        self.use_crf = use_crf
        self.use_rnn = use_rnn
        self.rnn_layers = rnn_layers
        self.reproject_embeddings = reproject_embeddings
        self.dropout_rate = _check_probability("dropout", dropout)
        self.word_dropout_rate = _check_probability("word_dropout", word_dropout)
        self.locked_dropout_rate = _check_probability("locked_dropout", locked_dropout)
        self.tag_dictionary = self._internal_tags(tag_dictionary)
        self._tags = self.tag_dictionary.get_items()
        self._outside = self.tag_dictionary.item2idx.get(OUTSIDE, 0)

        size = embeddings.embedding_length
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.word_dropout = WordDropout(word_dropout)
        self.locked_dropout = LockedDropout(locked_dropout)
        self.reprojection = nn.Linear(size, size) if reproject_embeddings else None
        self.rnn = BiLSTM(size, hidden_size, rnn_layers, dropout=0.5) if use_rnn else None
        if use_rnn:
            size = 2 * hidden_size
        self.linear = nn.Linear(size, len(self.tag_dictionary))
        self.crf = CRF(len(self.tag_dictionary)) if use_crf else None
        self._init_weights()

    def _init_weights(self) -> None:
        # measured on CoNLL-03, see the module docstring; without a BiLSTM the reprojection and
        # the tag layer are just two stacked linear maps, left at PyTorch's default init
        if self.reprojection is not None and self.rnn is not None:
            nn.init.eye_(self.reprojection.weight)
            nn.init.zeros_(self.reprojection.bias)

    def _internal_tags(self, labels: Dictionary) -> Dictionary:
        tags = Dictionary(add_unk=False)
        tags.add_item(OUTSIDE)
        if self.tag_kind == "token":
            for item in labels.get_items():
                tags.add_item(item)
            return tags
        prefixes = "BIES" if self.tag_format == "BIOES" else "BI"
        for item in labels.get_items():
            if item not in (OUTSIDE, Dictionary.UNK):
                for prefix in prefixes:
                    tags.add_item(f"{prefix}-{item}")
        return tags

    @property
    def label_kind(self) -> str:
        return self.tag_kind

    # network ------------------------------------------------------------------------------------
    def _features(self, sentences: list[Sentence]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tag scores ``[B, T, tags]`` and the token mask ``[B, T]``."""
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        x = self.embeddings.embed(sentences)
        x = self.locked_dropout(self.word_dropout(self.dropout(x)))
        if self.reprojection is not None:
            x = self.reprojection(x)
        if self.rnn is not None:
            x = self.rnn(x, lengths)
        x = self.locked_dropout(self.dropout(x))
        mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        # float32 scores: the CRF's sums of exponentials overflow in float16 under autocast
        return self.linear(x).float(), mask.to(x.device)

    def _gold_tags(self, sentences: list[Sentence], time: int) -> torch.Tensor:
        """Gold tag indices ``[B, T]`` (padding: ``O``)."""
        index = self.tag_dictionary.item2idx
        rows = []
        for sentence in sentences:
            if self.tag_kind == "span":
                spans = [(s.start, s.end, s.label.value) for s in sentence.get_spans(self.label_type)]
                tags = spans_to_tags(spans, len(sentence), self.tag_format)
            else:
                tags = [t.get_tag(self.label_type) for t in sentence.tokens]
            row = [index.get(tag, self._outside) for tag in tags]
            rows.append(row + [self._outside] * (time - len(row)))
        return torch.tensor(rows, dtype=torch.long)

    def _loss(self, features: torch.Tensor, mask: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        if self.crf is not None:
            return self.crf.neg_log_likelihood(features, gold, mask).sum()
        return F.cross_entropy(features[mask], gold[mask], reduction="sum")

    def forward_loss(self, sentences: list[Sentence]) -> tuple[torch.Tensor, int]:
        sentences = [s for s in sentences if len(s) > 0]
        if not sentences:
            return torch.zeros((), device=self.device, requires_grad=True), 0
        self._check_gold(sentences)
        features, mask = self._features(sentences)
        gold = self._gold_tags(sentences, features.shape[1]).to(features.device)
        return self._loss(features, mask, gold), int(mask.sum())

    def _check_gold(self, sentences: list[Sentence]) -> None:
        # A token-kind tagger handed span data (or the reverse) would silently learn all-O.
        has_spans = any(self.label_type in s.spans for s in sentences)
        has_tokens = any(self.label_type in t.labels for s in sentences for t in s.tokens[:1])
        if self.tag_kind == "token" and has_spans and not has_tokens:
            raise ValueError(
                f"{self.label_type!r} holds span labels but this tagger was built for token labels; "
                "pass label_kind='span'"
            )
        if self.tag_kind == "span" and has_tokens and not has_spans:
            raise ValueError(
                f"{self.label_type!r} holds token labels but this tagger was built for span labels; "
                "pass label_kind='token'"
            )

    # prediction -------------------------------------------------------------------------------
    def _predict_batch(
        self, sentences: list[Sentence], label_name: str, return_probabilities: bool, with_loss: bool
    ) -> tuple[float, int]:
        for sentence in sentences:
            if len(sentence) == 0:
                self._clear(sentence, label_name)
        sentences = [s for s in sentences if len(s) > 0]
        if not sentences:
            return 0.0, 0
        features, mask = self._features(sentences)
        if self.crf is not None:
            paths, _ = self.crf.viterbi_decode(features, mask)
            probabilities = self.crf.marginals(features, mask)
        else:
            probabilities = features.softmax(dim=-1)
            paths = probabilities.argmax(dim=-1)
        confidences = probabilities.gather(2, paths.unsqueeze(-1)).squeeze(-1)
        # one conversion per batch; the loop below is over plain Python lists
        path_rows, confidence_rows = paths.tolist(), confidences.tolist()
        distributions = probabilities.tolist() if return_probabilities else None
        tags = self._tags
        for i, sentence in enumerate(sentences):
            n = len(sentence)
            predicted = [tags[k] for k in path_rows[i][:n]]
            scores = confidence_rows[i][:n]
            if self.tag_kind == "span":
                sentence.set_spans(
                    label_name,
                    [
                        (s, e, kind, sum(scores[s:e]) / (e - s))
                        for s, e, kind in tags_to_spans(predicted, self.tag_format)
                    ],
                )
            else:
                for token, tag, score in zip(sentence.tokens, predicted, scores, strict=True):
                    token.set_label(label_name, tag, score)
            if distributions is not None:
                sentence.metadata[distribution_key(label_name)] = [
                    dict(zip(tags, row, strict=True)) for row in distributions[i][:n]
                ]
            else:
                # An earlier call's distribution (perhaps another model's) must not be left
                # beside these tags as if it belonged to them, as the text classifier does.
                sentence.metadata.pop(distribution_key(label_name), None)
        if not with_loss:
            return 0.0, 0
        gold = self._gold_tags(sentences, features.shape[1]).to(features.device)
        return float(self._loss(features, mask, gold)), int(mask.sum())

    def _clear(self, sentence: Sentence, label_name: str) -> None:
        if self.tag_kind == "span":
            sentence.set_spans(label_name, [])
        sentence.metadata.pop(distribution_key(label_name), None)

    def _write_predictions(
        self, path: Path, sentences: list[Sentence], gold_type: str, predicted_type: str
    ) -> None:
        """test.tsv: a line ``token gold predicted`` per token, a blank line after each sentence.

        Span labels are written as tags of ``tag_format``. The three fields are separated by single
        spaces, so a space inside a token (tab-separated files and CoNLL-U forms allow them, e.g.
        ``New York``) or inside a token label is written as U+00A0 (no-break space): every line
        splits at spaces into exactly three fields.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for sentence in sentences:
                if self.tag_kind == "span":
                    gold = self._span_tags(sentence, gold_type)
                    predicted = self._span_tags(sentence, predicted_type)
                else:
                    gold = [t.get_tag(gold_type) for t in sentence.tokens]
                    predicted = [t.get_tag(predicted_type) for t in sentence.tokens]
                for token, g, p in zip(sentence.tokens, gold, predicted, strict=True):
                    fields = (token.text, g, p)
                    handle.write(" ".join(f.replace(" ", "\u00a0") for f in fields) + "\n")
                handle.write("\n")

    def _span_tags(self, sentence: Sentence, label_type: str) -> list[str]:
        spans = [(s.start, s.end, s.label.value) for s in sentence.get_spans(label_type)]
        return spans_to_tags(spans, len(sentence), self.tag_format)

    # files ------------------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "use_crf": self.use_crf,
            "use_rnn": self.use_rnn,
            "rnn_layers": self.rnn_layers,
            "reproject_embeddings": self.reproject_embeddings,
            "dropout": self.dropout_rate,
            "word_dropout": self.word_dropout_rate,
            "locked_dropout": self.locked_dropout_rate,
            "tag_format": self.tag_format,
            "label_kind": self.tag_kind,
            "tags": self._tags,
        }

    @classmethod
    def from_parts(
        cls,
        embeddings: Embeddings,
        label_dictionary: Dictionary,
        label_type: str,
        hyperparameters: dict[str, Any],
    ) -> SequenceTagger:
        hp = dict(hyperparameters)
        saved_tags = hp.pop("tags", None)
        if not isinstance(embeddings, TokenEmbeddings):
            raise TypeError(f"a SequenceTagger needs token embeddings, got {type(embeddings).__name__}")
        _check_types(hp)
        model = cls(embeddings, label_dictionary, label_type, **hp)
        if saved_tags is not None and saved_tags != model._tags:
            raise ValueError("the saved tag list does not match the one rebuilt from the label dictionary")
        return model

    def extra_repr(self) -> str:
        return f"label_type={self.label_type!r}, kind={self.tag_kind}, tags={len(self._tags)}, format={self.tag_format}"


_HYPERPARAMETER_TYPES: dict[str, type | tuple[type, ...]] = {
    "hidden_size": int,
    "use_crf": bool,
    "use_rnn": bool,
    "rnn_layers": int,
    "reproject_embeddings": bool,
    "dropout": (int, float),
    "word_dropout": (int, float),
    "locked_dropout": (int, float),
    "tag_format": str,
    "label_kind": str,
}


def _check_types(hyperparameters: dict[str, Any]) -> None:
    for key, value in hyperparameters.items():
        expected = _HYPERPARAMETER_TYPES.get(key)
        if expected is None:
            raise ValueError(f"unknown SequenceTagger hyperparameter {key!r}")
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ValueError(f"hyperparameter {key!r} has the wrong type: {value!r}")
