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
