"""The engine's data model: tokens, sentences, spans, labels, dictionaries and corpora.

Label kinds. Every label type on a sentence has exactly one kind:
- ``token``: one tag per token (``upos``, ``pos``), stored on ``Token.labels``;
- ``span``: labelled token ranges (``ner``), stored in ``Sentence.spans``; readers decode
  BIO/BIOES/IOB1 columns into spans, models encode spans back into a tag scheme for training;
- ``sentence``: zero or more labels of the whole sentence (classification), ``Sentence.labels``.

Embeddings computed for a sentence are kept in ``Sentence.embeddings`` (name -> tensor), which the
storage modes of the trainer keep or clear between epochs.
"""

from __future__ import annotations

import random
import reprlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

LabelKind = Literal["token", "span", "sentence"]


@dataclass(slots=True)
class Label:
    value: str
    score: float = 1.0
    # What it labels (a Span or Token), as in Flair, where ``Sentence.get_labels`` returns it.
    data_point: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "score": self.score}

    def __reduce__(self) -> tuple[Any, ...]:
        # Value and score only: ``data_point`` points back at what holds the label (a token's is
        # set again by ``Sentence.get_labels``, a span's when the span is built), and pickling it
        # dragged the whole sentence along with each label.
        return (Label, (self.value,) if self.score == 1.0 else (self.value, self.score))


@dataclass(slots=True, eq=False)
class Token:
    """A token. ``idx`` is its 0-based position; ``start_pos``/``end_pos`` are character offsets
    into the sentence's original text when it was tokenized from raw text (None otherwise)."""

    text: str
    idx: int = 0
    start_pos: int | None = None
    end_pos: int | None = None
    whitespace_after: bool = True
    labels: dict[str, Label] = field(default_factory=dict)

    def set_label(self, label_type: str, value: str, score: float = 1.0) -> None:
        self.labels[label_type] = Label(value, score)

    def get_label(self, label_type: str) -> Label | None:
        return self.labels.get(label_type)

    def get_tag(self, label_type: str, default: str = "O") -> str:
        label = self.labels.get(label_type)
        return label.value if label is not None else default

    def __reduce__(self) -> tuple[Any, ...]:
        # A flat tuple, not the slots' state dict of Label objects: the reader processes send
        # whole splits back to the API (``service.corpus_reading``), a pickle per token.
        labels = tuple((name, label.value, label.score) for name, label in self.labels.items())
        return (_token, (self.text, self.idx, self.start_pos, self.end_pos, self.whitespace_after, labels))

    def __repr__(self) -> str:
        return f"Token[{self.idx}]: {self.text!r}"


def _token(
    text: str,
    idx: int,
    start_pos: int | None,
    end_pos: int | None,
    whitespace_after: bool,
    labels: tuple[tuple[str, str, float], ...],
) -> Token:
    """A token from ``Token.__reduce__``'s tuple."""
    return Token(
        text, idx, start_pos, end_pos, whitespace_after, {name: Label(v, s) for name, v, s in labels}
    )


@dataclass(slots=True, eq=False)
class Span:
    """Tokens ``start`` (inclusive) to ``end`` (exclusive) of ``sentence``, with one label."""

    sentence: Sentence
    start: int
    end: int
    label: Label

    def __post_init__(self) -> None:
        self.label.data_point = self

    # State, not __reduce__ arguments: the span exists (and is remembered) before its sentence
    # is restored, so a span pickled or deep-copied on its own, whose sentence lists it again,
    # comes back as one object; as arguments, a second span was built, and the label pointed at it.
    def __getstate__(self) -> tuple[Any, ...]:
        return (self.sentence, self.start, self.end, self.label)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.sentence, self.start, self.end, self.label = state
        self.label.data_point = self  # as __post_init__ does (the label's pickle drops it)

    @property
    def tokens(self) -> list[Token]:
        return self.sentence.tokens[self.start : self.end]

    @property
    def text(self) -> str:
        """The span as written: the slice of the sentence's original text when the sentence was
        tokenized from it (two spaces or a line break between the words stay as they were, so
        ``text[start:end] == span.text``), else its tokens joined as the sentence joins them."""
        start, end, original = self.start_pos, self.end_pos, self.sentence.text
        if start is not None and end is not None and original is not None:
            return original[start:end]
        parts: list[str] = []
        for token in self.tokens[:-1]:
            parts.append(token.text + (" " if token.whitespace_after else ""))
        parts.append(self.tokens[-1].text)
        return "".join(parts)

    @property
    def start_pos(self) -> int | None:
        return self.tokens[0].start_pos

    @property
    def end_pos(self) -> int | None:
        return self.tokens[-1].end_pos

    @property
    def value(self) -> str:
        return self.label.value

    @property
    def tag(self) -> str:  # Flair's name
        return self.label.value

    @property
    def score(self) -> float:
        return self.label.score

    def get_label(self, label_type: str | None = None) -> Label:
        """The span's label (Flair's ``span.get_label("ner")``; a span has one)."""
        return self.label

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "start_token": self.start,
            "end_token": self.end,
            "start": self.start_pos,
            "end": self.end_pos,
            "label": self.label.value,
            "confidence": self.label.score,
        }

    def __repr__(self) -> str:
        return f"Span[{self.start}:{self.end}]: {self.text!r} -> {self.label.value} ({self.label.score:.4f})"


class Sentence:
    """A sequence of tokens with token, span and sentence labels.

    ``Sentence("I love Berlin .")`` tokenizes raw text (keeping character offsets);
    ``Sentence(["I", "love", "Berlin", "."])`` takes tokens as given.
    ``previous_sentence``/``next_sentence`` link sentences of the same document (None at a
    document boundary or when the source has no document structure).
    """

    def __init__(self, text: str | Sequence[str] = (), use_tokenizer: bool = True) -> None:
        self.tokens: list[Token] = []
        self.spans: dict[str, list[Span]] = {}
        self.labels: dict[str, list[Label]] = {}
        self.embeddings: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}
        self.text: str | None = None
        self.id: str | None = None
        self.document_id: str | None = None
        self.previous_sentence: Sentence | None = None
        self.next_sentence: Sentence | None = None
        if isinstance(text, str):
            self.text = text
            from engine.tokenization import tokenize, tokenize_whitespace

            self._add_token_tuples(tokenize(text) if use_tokenizer else tokenize_whitespace(text))
        else:
            for word in text:
                self.add_token(word)

    @classmethod
    def from_token_tuples(cls, text: str, tokens: Iterable[tuple[str, int, int, bool]]) -> Sentence:
        """A sentence over ``text`` with tokens already found in it: (word, start, end,
        whitespace_after) as ``engine.tokenization`` gives them."""
        sentence = cls()
        sentence.text = text
        sentence._add_token_tuples(tokens)
        return sentence

    def _add_token_tuples(self, tokens: Iterable[tuple[str, int, int, bool]]) -> None:
        for word, start, end, ws in tokens:
            self.add_token(word, start_pos=start, end_pos=end, whitespace_after=ws)

    # tokens -----------------------------------------------------------------
    def add_token(
        self,
        text: str,
        start_pos: int | None = None,
        end_pos: int | None = None,
        whitespace_after: bool = True,
    ) -> Token:
        token = Token(text, len(self.tokens), start_pos, end_pos, whitespace_after)
        self.tokens.append(token)
        return token

    def __len__(self) -> int:
        return len(self.tokens)

    def __iter__(self) -> Iterator[Token]:
        return iter(self.tokens)

    def __getitem__(self, index: int) -> Token:
        return self.tokens[index]

    def to_plain_string(self) -> str:
        return "".join(t.text + (" " if t.whitespace_after else "") for t in self.tokens).rstrip()

    def to_original_text(self) -> str:
        return self.text if self.text is not None else self.to_plain_string()

    # labels -----------------------------------------------------------------
    def add_label(self, label_type: str, value: str, score: float = 1.0) -> None:
        """Add a sentence-level label (several per type for multi-label classification)."""
        self.labels.setdefault(label_type, []).append(Label(value, score))

    def set_label(self, label_type: str, value: str, score: float = 1.0) -> None:
        self.labels[label_type] = [Label(value, score)]

    def get_labels(self, label_type: str) -> list[Label]:
        """Every label of ``label_type`` in the sentence, whatever it labels, as in Flair: the
        sentence's own (classes), its spans' or its tokens'; ``label.data_point`` is the sentence,
        span or token. (It returned sentence labels only: a Flair user's ``get_labels("ner")``
        was ``[]`` on a sentence with entities.)"""
        if label_type in self.labels:
            for label in self.labels[label_type]:
                label.data_point = self
            return self.labels[label_type]
        if label_type in self.spans:
            return [span.label for span in self.spans[label_type]]
        found = []
        for token in self.tokens:
            token_label = token.labels.get(label_type)
            if token_label is not None:
                token_label.data_point = token
                found.append(token_label)
        return found

    def add_span(self, start: int, end: int, label_type: str, value: str, score: float = 1.0) -> Span:
        if not 0 <= start < end <= len(self.tokens):
            raise ValueError(f"span [{start}, {end}) outside a sentence of {len(self.tokens)} tokens")
        span = Span(self, start, end, Label(value, score))
        self.spans.setdefault(label_type, []).append(span)
        return span

    def get_spans(self, label_type: str) -> list[Span]:
        return self.spans.get(label_type, [])

    def set_spans(self, label_type: str, spans: Iterable[tuple[int, int, str, float]]) -> None:
        """Replace the spans of ``label_type`` by (start, end, value, score) tuples."""
        self.spans[label_type] = [Span(self, s, e, Label(v, sc)) for s, e, v, sc in spans]

    def remove_labels(self, label_type: str) -> None:
        self.spans.pop(label_type, None)
        self.labels.pop(label_type, None)
        for token in self.tokens:
            token.labels.pop(label_type, None)

    def label_types(self) -> dict[str, LabelKind]:
        kinds: dict[str, LabelKind] = {}
        for token in self.tokens:
            for name in token.labels:
                kinds.setdefault(name, "token")
        for name in self.spans:
            kinds[name] = "span"
        for name in self.labels:
            kinds[name] = "sentence"
        return kinds

    def to_tagged_string(self, label_type: str | None = None) -> str:
        """``George <B-PER> Washington <E-PER> went ...``-style rendering, Flair-like:
        token tags after each token, spans as ``["George Washington"/PER]``, sentence labels
        appended as ``→ [label (score)]``."""
        kinds = self.label_types()
        types = [label_type] if label_type is not None else list(kinds)
        span_types = [t for t in types if kinds.get(t) == "span"]
        token_types = [t for t in types if kinds.get(t) == "token"]
        words: list[str] = []
        for token in self.tokens:
            tags = [token.labels[t].value for t in token_types if t in token.labels]
            words.append(token.text + "".join(f" <{tag}>" for tag in tags))
        out = " ".join(words)
        for t in span_types:
            spans = ", ".join(f'"{s.text}"/{s.label.value}' for s in self.get_spans(t))
            if spans:
                out += f" → [{spans}]"
        for t in types:
            if kinds.get(t) == "sentence":
                labels = ", ".join(f"{lb.value} ({lb.score:.4f})" for lb in self.labels[t])
                out += f" → {t}: [{labels}]"
        return out

    def clear_embeddings(self, keep: Iterable[str] = ()) -> None:
        keep_set = set(keep)
        self.embeddings = {k: v for k, v in self.embeddings.items() if k in keep_set}

    def __repr__(self) -> str:
        return f"Sentence[{len(self.tokens)}]: {self.to_tagged_string()!r}"


class Dictionary:
    """Bidirectional item <-> index map with counts; optional ``<unk>`` at index 0."""

    UNK = "<unk>"

    def __init__(self, add_unk: bool = False, multi_label: bool = False) -> None:
        self.item2idx: dict[str, int] = {}
        self.idx2item: list[str] = []
        self.counts: Counter[str] = Counter()
        self.add_unk = add_unk
        self.multi_label = multi_label
        # What the values label ("token", "span" or "sentence"); set by make_label_dictionary
        # so a model knows whether to encode spans into a tag scheme.
        self.label_kind: LabelKind | None = None
        if add_unk:
            self.add_item(self.UNK)

    def add_item(self, item: str, count: int = 1) -> int:
        self.counts[item] += count
        idx = self.item2idx.get(item)
        if idx is None:
            idx = len(self.idx2item)
            self.item2idx[item] = idx
            self.idx2item.append(item)
        return idx

    def get_idx_for_item(self, item: str) -> int:
        idx = self.item2idx.get(item)
        if idx is not None:
            return idx
        if self.add_unk:
            return 0
        raise KeyError(f"{item!r} is not in the dictionary and it has no {self.UNK}")

    def get_idx_for_items(self, items: Iterable[str]) -> list[int]:
        return [self.get_idx_for_item(i) for i in items]

    def get_item_for_index(self, idx: int) -> str:
        return self.idx2item[idx]

    def get_items(self) -> list[str]:
        return list(self.idx2item)

    def __contains__(self, item: object) -> bool:
        return item in self.item2idx

    def __len__(self) -> int:
        return len(self.idx2item)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Dictionary)
            and self.idx2item == other.idx2item
            and self.add_unk == other.add_unk
        )

    def __repr__(self) -> str:
        shown = ", ".join(self.idx2item[:30])
        more = "" if len(self) <= 30 else f", ... ({len(self)} items)"
        return f"Dictionary[{len(self)}]: {shown}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.idx2item,
            "counts": [self.counts[i] for i in self.idx2item],
            "add_unk": self.add_unk,
            "multi_label": self.multi_label,
            "label_kind": self.label_kind,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dictionary:
        d = cls(add_unk=False, multi_label=bool(data.get("multi_label", False)))
        counts = data.get("counts") or [0] * len(data["items"])
        for item, count in zip(data["items"], counts, strict=True):
            d.add_item(str(item), int(count))
        d.add_unk = bool(data.get("add_unk", False))
        d.label_kind = data.get("label_kind")
        if d.add_unk and (not d.idx2item or d.idx2item[0] != cls.UNK):
            raise ValueError(f"a dictionary with add_unk must have {cls.UNK} at index 0")
        return d


def _label_values(sentence: Sentence, label_type: str) -> tuple[LabelKind | None, list[str]]:
    if label_type in sentence.labels:
        return "sentence", [lb.value for lb in sentence.labels[label_type]]
    if label_type in sentence.spans:
        return "span", [s.label.value for s in sentence.spans[label_type]]
    values = [t.labels[label_type].value for t in sentence.tokens if label_type in t.labels]
    return ("token" if values else None), values


# Flair's values: True samples a missing test split, then a missing dev split, from train;
# "only_dev" / "only_test" sample that one; False none.
SampleMissingSplits = bool | Literal["only_dev", "only_test"]
SAMPLE_MISSING_SPLITS: tuple[SampleMissingSplits, ...] = (True, False, "only_dev", "only_test")


def _split_off(train: list[Sentence], seed: int) -> tuple[list[Sentence], list[Sentence]]:
    """A seeded tenth of ``train`` (at least one sentence), and the rest."""
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    taken = set(order[: max(1, len(train) // 10)])
    return [s for i, s in enumerate(train) if i in taken], [s for i, s in enumerate(train) if i not in taken]


class Corpus:
    """Train, dev and test splits. A missing split is sampled from train as Flair does
    (``sample_missing_splits``): a seeded 10% becomes test, then 10% of the rest becomes dev."""

    def __init__(
        self,
        train: list[Sentence],
        dev: list[Sentence] | None = None,
        test: list[Sentence] | None = None,
        name: str = "corpus",
        sample_missing_splits: SampleMissingSplits = True,
        seed: int = 42,
        skipped: int = 0,
    ) -> None:
        if sample_missing_splits not in SAMPLE_MISSING_SPLITS:
            raise ValueError(
                f"sample_missing_splits must be True, False, 'only_dev' or 'only_test', got {sample_missing_splits!r}"
            )
        self.name = name
        self.skipped = skipped
        train = list(train)
        if test is None and sample_missing_splits in (True, "only_test") and len(train) >= 2:
            test, train = _split_off(train, seed)
        if dev is None and sample_missing_splits in (True, "only_dev") and len(train) >= 2:
            dev, train = _split_off(train, seed)
        self.train: list[Sentence] = train
        self.dev: list[Sentence] = list(dev or [])
        self.test: list[Sentence] = list(test or [])

    def splits(self) -> dict[str, list[Sentence]]:
        return {"train": self.train, "dev": self.dev, "test": self.test}

    def all_sentences(self) -> Iterator[Sentence]:
        for split in (self.train, self.dev, self.test):
            yield from split

    def downsample(
        self,
        percentage: float = 0.1,
        seed: int = 42,
        downsample_train: bool = True,
        downsample_dev: bool = True,
        downsample_test: bool = True,
    ) -> Corpus:
        """Keep a seeded ``percentage`` of each chosen split (at least one sentence); in place."""
        if not 0.0 < percentage <= 1.0:
            raise ValueError(f"downsample percentage must be in (0, 1], got {percentage}")
        rng = random.Random(seed)

        def sample(split: list[Sentence]) -> list[Sentence]:
            if not split:
                return split
            n = max(1, round(len(split) * percentage))
            keep = set(rng.sample(range(len(split)), n))
            return [s for i, s in enumerate(split) if i in keep]

        if downsample_train:
            self.train = sample(self.train)
        if downsample_dev:
            self.dev = sample(self.dev)
        if downsample_test:
            self.test = sample(self.test)
        return self

    def label_kinds(self) -> dict[str, LabelKind]:
        kinds: dict[str, LabelKind] = {}
        for sentence in self.all_sentences():
            for name, kind in sentence.label_types().items():
                kinds.setdefault(name, kind)
        return kinds

    def has_documents(self) -> bool:
        """True when the source marked document boundaries (so sentences have neighbours)."""
        return any(s.document_id is not None for s in self.all_sentences())

    def statistics(self) -> dict[str, Any]:
        def split_stats(split: list[Sentence]) -> dict[str, Any]:
            labels: dict[str, Counter[str]] = {}
            for sentence in split:
                for name in sentence.label_types():
                    _, values = _label_values(sentence, name)
                    labels.setdefault(name, Counter()).update(values)
            return {
                "sentences": len(split),
                "tokens": sum(len(s) for s in split),
                "labels": {name: dict(c.most_common()) for name, c in labels.items()},
            }

        return {
            "name": self.name,
            "label_types": self.label_kinds(),
            "documents": len({s.document_id for s in self.all_sentences() if s.document_id is not None}),
            "skipped_sentences": self.skipped,
            **{name: split_stats(split) for name, split in self.splits().items()},
        }

    def make_label_dictionary(self, label_type: str, min_count: int = 1, add_unk: bool = False) -> Dictionary:
        """Dictionary of the label values of ``label_type`` in train (span types: the entity
        types, not the tags). Sentence labels that occur several times on one sentence make
        the dictionary multi-label."""
        counts: Counter[str] = Counter()
        kind: LabelKind | None = None
        multi = False
        for sentence in self.train:
            k, values = _label_values(sentence, label_type)
            if k is not None:
                kind = k
            if k == "sentence" and len(values) > 1:
                multi = True
            counts.update(values)
        if kind is None:
            available = ", ".join(sorted(self.label_kinds())) or "none"
            raise ValueError(
                f"label type {label_type!r} not found in the training split (available: {available})"
            )
        dictionary = Dictionary(add_unk=add_unk, multi_label=multi)
        dictionary.label_kind = kind
        for value, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if count >= min_count:
                dictionary.add_item(value, count)
        return dictionary

    def __repr__(self) -> str:
        return f"Corpus {self.name!r}: {len(self.train)} train + {len(self.dev)} dev + {len(self.test)} test sentences"


class MultiCorpus(Corpus):
    """Several corpora trained as one: splits are concatenated, label dictionaries are joined."""

    def __init__(self, corpora: Sequence[Corpus], name: str = "multicorpus") -> None:
        if not corpora:
            raise ValueError("a MultiCorpus needs at least one corpus")
        self.corpora = list(corpora)
        super().__init__(
            train=[s for c in corpora for s in c.train],
            dev=[s for c in corpora for s in c.dev],
            test=[s for c in corpora for s in c.test],
            name=name,
            sample_missing_splits=False,
            skipped=sum(c.skipped for c in corpora),
        )


def sentence_list(sentences: object, method: str) -> list[Sentence]:
    """``sentences`` as a list, a single Sentence as a list of one. Text or token lists are a
    TypeError saying how to make a Sentence: they failed deep inside the embeddings with
    "'str' object has no attribute 'tokens'". (``object``: this checks what untyped callers pass.)"""
    if isinstance(sentences, Sentence):
        return [sentences]
    if isinstance(sentences, str):
        raise TypeError(
            f"{method} takes a Sentence or a list of them, not text: "
            f"{method}(Sentence({reprlib.repr(sentences)}))"
        )
    if not isinstance(sentences, Iterable):
        raise TypeError(f"{method} takes a Sentence or a list of them, not a {type(sentences).__name__}")
    items = list(sentences)
    for index, item in enumerate(items):
        if not isinstance(item, Sentence):
            raise TypeError(
                f"{method} takes a Sentence or a list of them; item {index} is a {type(item).__name__}: "
                f"wrap it as Sentence({reprlib.repr(item)})"
            )
    return items
