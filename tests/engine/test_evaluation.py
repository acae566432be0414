"""compute_scores on hand-checked cases: exact spans, token accuracy, single- and multi-label."""

from __future__ import annotations

import pytest

from engine.evaluation import compute_scores


def test_spans_count_only_with_exact_boundaries_and_type() -> None:
    gold = [[((0, 0, 2), "PER"), ((0, 4, 5), "LOC")], [((1, 0, 1), "ORG")]]
    predicted = [[((0, 0, 2), "PER"), ((0, 4, 6), "LOC")], [((1, 0, 1), "PER")]]
    result = compute_scores(gold, predicted, "span", loss=0.5)
    # tp 1 (PER 0-2); fp 2 (LOC 4-6, PER 0-1); fn 2 (LOC 4-5, ORG 0-1)
    assert result.micro_precision == pytest.approx(1 / 3)
    assert result.micro_recall == pytest.approx(1 / 3)
    assert result.main_score == result.micro_f1 == pytest.approx(1 / 3)
    assert result.main_score_name == "micro_f1"
    assert result.accuracy == pytest.approx(1 / 5)
    assert result.per_class["PER"].precision == pytest.approx(0.5)
    assert result.per_class["PER"].recall == 1.0
    assert result.per_class["PER"].support == 1
    assert result.per_class["LOC"].f1 == 0.0 and result.per_class["ORG"].support == 1
    assert result.macro_f1 == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert result.loss == 0.5
    assert result.to_dict()["main_score"] == result.main_score
    assert result.to_full_dict()["per_class"]["PER"]["support"] == 1
    assert "PER" in result.report()


def test_token_accuracy_counts_gold_tokens() -> None:
    gold = [[((0, 0), "DET"), ((0, 1), "NOUN"), ((0, 2), "VERB")], [((1, 0), "NOUN")]]
    predicted = [[((0, 0), "DET"), ((0, 1), "VERB"), ((0, 2), "VERB")], [((1, 0), "NOUN")]]
    result = compute_scores(gold, predicted, "token")
    assert result.main_score_name == "accuracy"
    assert result.main_score == result.accuracy == pytest.approx(3 / 4)
    assert result.micro_f1 == pytest.approx(3 / 4)
    assert result.per_class["VERB"].precision == pytest.approx(0.5)
    assert result.per_class["NOUN"].recall == pytest.approx(0.5)


def test_token_accuracy_counts_a_token_left_unpredicted_as_wrong() -> None:
    # Accuracy over the predicted tokens (or the micro F1) scored a tagger that skips tokens higher.
    gold = [[((0, 0), "DET"), ((0, 1), "NOUN")]]
    result = compute_scores(gold, [[((0, 0), "DET")]], "token")
    assert result.main_score == result.accuracy == pytest.approx(0.5)
    assert result.micro_f1 == pytest.approx(2 / 3)
    wrong = compute_scores(gold, [[((0, 0), "DET"), ((0, 1), "VERB")]], "token")
    assert wrong.main_score == wrong.accuracy == pytest.approx(0.5)


def test_single_and_multi_label_sentences() -> None:
    single = compute_scores([[((0,), "A")], [((1,), "B")]], [[((0,), "A")], [((1,), "A")]], "sentence")
    assert single.main_score == single.accuracy == 0.5
    gold = [[((0, "a"), "a"), ((0, "b"), "b")], [((1, "c"), "c")]]
    predicted = [[((0, "a"), "a")], [((1, "c"), "c")]]
    multi = compute_scores(gold, predicted, "sentence", multi_label=True)
    assert multi.main_score_name == "micro_f1"
    assert multi.micro_precision == 1.0 and multi.micro_recall == pytest.approx(2 / 3)
    assert multi.accuracy == 0.5  # one of two sentences has exactly its gold set


def test_empty_inputs_and_bad_arguments() -> None:
    empty = compute_scores([], [], "span")
    assert empty.main_score == 0.0 and empty.macro_f1 == 0.0
    with pytest.raises(ValueError, match="kind"):
        compute_scores([], [], "document")
    with pytest.raises(ValueError, match="gold sentences"):
        compute_scores([[]], [], "token")
