"""TextClassifier on tiny data: single-label (softmax) and multi-label (sigmoid) training,
predictions with scores and distributions, evaluation and test.tsv."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import TextClassifier
from engine.data import Corpus, Sentence
from engine.embeddings.document import DocumentPoolEmbeddings
from engine.models.base import distribution_key
from engine.training import ModelTrainer, TrainerConfigError
from tests.engine.test_sequence_tagger import LookupEmbeddings, one_thread, vocabulary  # noqa: F401

SINGLE = [
    ("what is the capital of france", "LOC"),
    ("where is berlin", "LOC"),
    ("who wrote hamlet", "HUM"),
    ("who is the president", "HUM"),
    ("how many people live here", "NUM"),
    ("how many legs has a spider", "NUM"),
]
MULTI = [
    ("great food and friendly staff", ["food", "service"]),
    ("the pasta was cold", ["food"]),
    ("the waiter was rude", ["service"]),
    ("cheap and tasty pizza", ["food", "price"]),
    ("very expensive", ["price"]),
    ("rude staff and high prices", ["service", "price"]),
]


def single_sentences() -> list[Sentence]:
    sentences = []
    for text, label in SINGLE:
        sentence = Sentence(text.split())
        sentence.add_label("question", label)
        sentences.append(sentence)
    return sentences


def multi_sentences() -> list[Sentence]:
    sentences = []
    for text, labels in MULTI:
        sentence = Sentence(text.split())
        for label in labels:
            sentence.add_label("aspect", label)
        sentences.append(sentence)
    return sentences


def make_classifier(sentences: list[Sentence], label_type: str, **options: object) -> TextClassifier:
    torch.manual_seed(0)
    document = DocumentPoolEmbeddings(LookupEmbeddings(vocabulary(sentences), dim=16), pooling="mean")
    dictionary = Corpus(sentences, sentences, sentences).make_label_dictionary(label_type)
    return TextClassifier(document, dictionary, label_type, **options)  # type: ignore[arg-type]


def fit(model: TextClassifier, sentences: list[Sentence], steps: int = 100) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    losses = []
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss, count = model.forward_loss(sentences)
        (loss / count).backward()
        optimizer.step()
        losses.append(float(loss.detach()) / count)
    return losses


def test_single_label_classifier_fits_and_predicts_with_scores() -> None:
    sentences = single_sentences()
    classifier = make_classifier(sentences, "question")
    assert not classifier.multi_label
    loss, count = classifier.forward_loss(sentences)
    assert count == len(sentences)
    losses = fit(classifier, sentences)
    assert losses[-1] < losses[0] / 5
    fresh = [Sentence(s.to_plain_string().split()) for s in sentences]
    classifier.predict(fresh, mini_batch_size=4, return_probabilities_for_all_classes=True)
    for gold, predicted in zip(sentences, fresh, strict=True):
        labels = predicted.get_labels("question")
        assert [lb.value for lb in labels] == [gold.get_labels("question")[0].value]
        distribution = predicted.metadata[distribution_key("question")]
        assert set(distribution) == {"LOC", "HUM", "NUM"}
        assert abs(sum(distribution.values()) - 1.0) < 1e-5
        assert labels[0].score == pytest.approx(max(distribution.values()))
    result = classifier.evaluate(sentences)
    assert result.main_score_name == "accuracy" and result.main_score == 1.0
    assert result.per_class["LOC"].support == 2


def test_multi_label_classifier_uses_sigmoid_and_threshold() -> None:
    sentences = multi_sentences()
    classifier = make_classifier(sentences, "aspect")
    assert classifier.multi_label  # taken from the dictionary: sentences have several labels
    loss, count = classifier.forward_loss(sentences)
    assert count == len(sentences)
    fit(classifier, sentences, steps=150)
    classifier.predict(sentences, label_name="pred", return_probabilities_for_all_classes=True)
    for sentence in sentences:
        gold = sorted(lb.value for lb in sentence.get_labels("aspect"))
        assert sorted(lb.value for lb in sentence.get_labels("pred")) == gold
        distribution = sentence.metadata["pred_distribution"]
        for label in sentence.get_labels("pred"):
            assert label.score >= 0.5 and label.score == pytest.approx(distribution[label.value])
    result = classifier.evaluate(sentences, "aspect")
    assert result.main_score_name == "micro_f1" and result.main_score == 1.0
    assert result.accuracy == 1.0
    strict = make_classifier(sentences, "aspect", multi_label_threshold=0.99)
    strict.load_state_dict(classifier.state_dict())
    strict.predict(sentences, label_name="strict")
    for sentence in sentences:
        distribution = sentence.metadata["pred_distribution"]
        expected = sorted(name for name, p in distribution.items() if p >= 0.99)
        assert sorted(lb.value for lb in sentence.get_labels("strict")) == expected


def test_the_multi_label_threshold_decides_which_labels_are_predicted() -> None:
    # A threshold left unused (0.5 always) predicted the same labels whatever the setting.
    sentences = multi_sentences()
    low = make_classifier(sentences, "aspect", multi_label_threshold=0.01)
    high = make_classifier(sentences, "aspect", multi_label_threshold=0.99)
    high.load_state_dict(low.state_dict())
    low.predict(sentences, label_name="low")
    high.predict(sentences, label_name="high")
    for sentence in sentences:
        assert sorted(lb.value for lb in sentence.get_labels("low")) == ["food", "price", "service"]
        assert sentence.get_labels("high") == []


def test_a_multi_label_batch_loss_is_the_sum_of_its_sentences_losses() -> None:
    # A mean over the classes and sentences made the loss (and so the step) depend on the batch.
    sentences = multi_sentences()
    classifier = make_classifier(sentences, "aspect")
    loss, count = classifier.forward_loss(sentences)
    singles = [classifier.forward_loss([sentence]) for sentence in sentences]
    assert count == sum(c for _, c in singles) == len(sentences)
    assert float(loss) == pytest.approx(sum(float(single) for single, _ in singles), rel=1e-5)


def test_explicit_single_label_on_a_multi_label_dictionary() -> None:
    classifier = make_classifier(multi_sentences(), "aspect", multi_label=False)
    assert not classifier.multi_label
    sentence = Sentence(["cold", "pasta"])
    classifier.predict(sentence)
    assert len(sentence.get_labels("aspect")) == 1


def test_evaluate_keeps_gold_and_writes_text_gold_predicted(tmp_path: Path) -> None:
    sentences = single_sentences()
    classifier = make_classifier(sentences, "question")
    out = tmp_path / "test.tsv"
    result = classifier.evaluate(sentences, out_path=out, mini_batch_size=4)
    assert result.loss > 0
    assert all(set(s.labels) == {"question"} and len(s.labels["question"]) == 1 for s in sentences)
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(sentences)
    assert rows[0][0] == "what is the capital of france" and rows[0][1] == "LOC"
    assert rows[0][2] in {"LOC", "HUM", "NUM"}


def test_unknown_gold_labels_are_left_out_of_the_loss() -> None:
    sentences = single_sentences()
    classifier = make_classifier(sentences, "question")
    odd = Sentence(["why", "?"])
    odd.add_label("question", "DESC")
    _, count = classifier.forward_loss([*sentences, odd])
    assert count == len(sentences)


def test_invalid_arguments_are_rejected() -> None:
    sentences = single_sentences()
    with pytest.raises(ValueError, match="multi_label_threshold"):
        make_classifier(sentences, "question", multi_label_threshold=1.5)
    with pytest.raises(TypeError, match="document embeddings"):
        TextClassifier(
            LookupEmbeddings(["a"]), Corpus(sentences).make_label_dictionary("question"), "question"
        )  # type: ignore[arg-type]


def test_a_single_label_classifier_of_one_class_is_not_trained(tmp_path: Path) -> None:
    sentences = [s for s in single_sentences() if s.get_labels("question")[0].value == "LOC"]
    assert sentences
    # models saved before this check still load and predict; training one is refused
    model = make_classifier(sentences, "question")
    with pytest.raises(TrainerConfigError, match="at least two classes; 'question' has only 'LOC'"):
        ModelTrainer(model, Corpus(sentences)).train(tmp_path, max_epochs=1, callbacks=[])
    # yes/no for the one label is a real task
    yes_no = make_classifier(sentences, "question", multi_label=True)
    assert (
        ModelTrainer(yes_no, Corpus(sentences)).train(tmp_path, max_epochs=1, callbacks=[])["epochs_done"]
        == 1
    )
