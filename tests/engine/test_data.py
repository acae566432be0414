"""The data model as a Flair user reads predictions back: get_labels of any kind, span labels."""

from __future__ import annotations

from engine.data import Sentence


def test_get_labels_returns_the_labels_of_a_type_whatever_they_label() -> None:
    # get_labels("ner") returned [] on a sentence with entities: only class labels were looked at.
    sentence = Sentence("George Washington went to Washington .")
    sentence.add_span(0, 2, "ner", "PER", 0.99)
    sentence.add_span(4, 5, "ner", "LOC", 0.9)
    for token, tag in zip(sentence, ["PROPN", "PROPN", "VERB", "ADP", "PROPN", "PUNCT"], strict=True):
        token.set_label("upos", tag)
    sentence.add_label("topic", "history", 0.7)

    entities = sentence.get_labels("ner")
    assert [(label.data_point.text, label.value, label.score) for label in entities] == [
        ("George Washington", "PER", 0.99),
        ("Washington", "LOC", 0.9),
    ]
    assert [span.tag for span in sentence.get_spans("ner")] == ["PER", "LOC"]
    assert sentence.get_spans("ner")[0].get_label("ner").value == "PER"
    tags = sentence.get_labels("upos")
    assert [(label.data_point.idx, label.value) for label in tags][:3] == [
        (0, "PROPN"),
        (1, "PROPN"),
        (2, "VERB"),
    ]
    (topic,) = sentence.get_labels("topic")
    assert topic.value == "history" and topic.data_point is sentence
    assert sentence.get_labels("sentiment") == []


def test_missing_splits_are_sampled_from_train_as_flair_does() -> None:
    import pytest

    from engine.data import Corpus

    def sentences(n: int, tag: str) -> list[Sentence]:
        return [Sentence(f"{tag} {i}") for i in range(n)]

    def sizes(corpus: Corpus) -> tuple[int, int, int]:
        return len(corpus.train), len(corpus.dev), len(corpus.test)

    # Flair's default: a tenth of train becomes test, then a tenth of the rest dev
    both = Corpus(sentences(100, "train"))
    assert sizes(both) == (81, 9, 10)
    assert {s.to_plain_string() for s in both.all_sentences()} == {f"train {i}" for i in range(100)}
    assert sizes(Corpus(sentences(100, "train"), sample_missing_splits="only_dev")) == (90, 10, 0)
    assert sizes(Corpus(sentences(100, "train"), sample_missing_splits="only_test")) == (90, 0, 10)
    assert sizes(Corpus(sentences(100, "train"), sample_missing_splits=False)) == (100, 0, 0)
    # given splits are kept whole, and train keeps what is not sampled
    given = Corpus(sentences(100, "train"), sentences(5, "dev"), sentences(7, "test"))
    assert sizes(given) == (100, 5, 7)
    assert sizes(Corpus(sentences(100, "train"), sentences(5, "dev"))) == (90, 5, 10)
    # seeded: the same sentences every time
    again = Corpus(sentences(100, "train"))
    assert [s.to_plain_string() for s in again.test] == [s.to_plain_string() for s in both.test]
    with pytest.raises(ValueError, match="only_dev"):
        Corpus(sentences(10, "train"), sample_missing_splits="dev")  # type: ignore[arg-type]


def test_a_sampled_dev_split_is_taken_out_of_train() -> None:
    # A sampled dev split that stayed in train (or left other sentences out) scored the model on
    # sentences it trained on.
    from engine.data import Corpus

    corpus = Corpus([Sentence(f"sentence {i}") for i in range(20)], sample_missing_splits="only_dev")
    train = [s.to_plain_string() for s in corpus.train]
    dev = [s.to_plain_string() for s in corpus.dev]
    assert (len(train), len(dev), len(corpus.test)) == (18, 2, 0)
    assert not set(train) & set(dev)
    assert set(train) | set(dev) == {f"sentence {i}" for i in range(20)}


def test_a_span_reads_as_written_between_its_offsets() -> None:
    # A span's text joined its tokens with one space: "New  York" (two spaces, a tab, a no-break
    # space) came back as "New York", which is not text[start:end], so a client that looked it
    # up or replaced it in the text found nothing.
    for gap in ["  ", "\t", "\u00a0", " \u200b "]:
        text = f"She flew to New{gap}York today ."
        sentence = Sentence(text)
        start = next(t.idx for t in sentence if t.text == "New")
        span = sentence.add_span(start, start + 2, "ner", "LOC")
        assert span.text == f"New{gap}York" == text[span.start_pos : span.end_pos]
    # Tokens given without a text have no offsets: joined as the sentence joins them.
    given = Sentence(["New", "York", "."])
    assert given.add_span(0, 2, "ner", "LOC").text == "New York"


def test_a_pickled_sentence_comes_back_with_its_labels_and_spans_pointing_at_it() -> None:
    # Reader processes send splits back pickled; a token's default pickling was a dict of Label
    # objects, each dragging its data point (and so its sentence) along.
    import pickle

    sentence = Sentence("George Washington went to Washington .")
    sentence.add_span(0, 2, "ner", "PER")
    sentence.add_span(4, 5, "ner", "LOC", 0.5)
    for token, tag in zip(sentence, ["PROPN", "PROPN", "VERB", "ADP", "PROPN", "PUNCT"], strict=True):
        token.set_label("upos", tag)
    sentence.add_label("topic", "history", 0.7)
    sentence.get_labels("upos")  # points each token's label at its token

    copy = pickle.loads(pickle.dumps(sentence, protocol=pickle.HIGHEST_PROTOCOL))
    assert copy.to_tagged_string() == sentence.to_tagged_string()
    assert [(t.text, t.idx, t.start_pos, t.end_pos, t.whitespace_after) for t in copy] == [
        (t.text, t.idx, t.start_pos, t.end_pos, t.whitespace_after) for t in sentence
    ]
    assert [(s.start, s.end, s.value, s.score) for s in copy.get_spans("ner")] == [
        (0, 2, "PER", 1.0),
        (4, 5, "LOC", 0.5),
    ]
    for label in copy.get_labels("ner"):
        assert label.data_point.sentence is copy
    assert [label.data_point for label in copy.get_labels("upos")] == copy.tokens
    assert [(label.value, label.score) for label in copy.get_labels("topic")] == [("history", 0.7)]


def test_a_span_pickled_or_copied_on_its_own_is_the_one_its_sentence_lists() -> None:
    # Rebuilt from __reduce__ arguments, a span whose sentence came along was built twice: the
    # sentence listed one, the label pointed at the other (deepcopy returned the other).
    import copy
    import pickle

    sentence = Sentence("George Washington went to Washington .")
    span = sentence.add_span(0, 2, "ner", "PER", 0.5)
    for copied in (pickle.loads(pickle.dumps(span)), copy.deepcopy(span)):
        assert copied.sentence.get_spans("ner") == [copied]
        assert copied.label.data_point is copied
        assert (copied.start, copied.end, copied.value, copied.score, copied.text) == (
            0,
            2,
            "PER",
            0.5,
            "George Washington",
        )
    both = pickle.loads(pickle.dumps([span, sentence]))
    assert both[1].get_spans("ner") == [both[0]] and both[0].label.data_point is both[0]
