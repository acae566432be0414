"""Tag schemes: decoding (incl. ill-formed input), encoding, conversion and detection."""

from __future__ import annotations

import random

import pytest

from engine.tag_schemes import (
    BIO,
    BIOES,
    IOB1,
    PLAIN,
    convert,
    detect_scheme,
    detect_scheme_from_sequences,
    looks_like_span_tags,
    normalize_scheme,
    spans_to_tags,
    tags_to_spans,
)


def test_decode_well_formed_sequences_of_each_scheme() -> None:
    assert tags_to_spans(["B-PER", "I-PER", "O", "B-LOC"], BIO) == [(0, 2, "PER"), (3, 4, "LOC")]
    assert tags_to_spans(["I-PER", "I-PER", "B-PER", "O", "I-LOC"], IOB1) == [
        (0, 2, "PER"),
        (2, 3, "PER"),
        (4, 5, "LOC"),
    ]
    assert tags_to_spans(["B-ORG", "I-ORG", "E-ORG", "S-LOC", "O"], BIOES) == [(0, 3, "ORG"), (3, 4, "LOC")]
    assert tags_to_spans(["PER", "PER", "O", "LOC", "ORG"], PLAIN) == [
        (0, 2, "PER"),
        (3, 4, "LOC"),
        (4, 5, "ORG"),
    ]
    assert tags_to_spans([], BIO) == []
    assert tags_to_spans(["O", "O"], BIOES) == []


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        # I- after O starts a new chunk
        (["O", "I-PER", "I-PER"], [(1, 3, "PER")]),
        (["I-PER"], [(0, 1, "PER")]),
        # a type change inside a chunk closes it and opens another
        (["B-PER", "I-LOC", "I-LOC"], [(0, 1, "PER"), (1, 3, "LOC")]),
        (["B-PER", "E-LOC"], [(0, 1, "PER"), (1, 2, "LOC")]),
        # E- without B- is a one-token chunk; I- after E- starts a new one
        (["O", "E-PER", "O"], [(1, 2, "PER")]),
        (["B-PER", "E-PER", "I-PER", "E-PER"], [(0, 2, "PER"), (2, 4, "PER")]),
        # S- always stands alone, B- always starts
        (["B-PER", "S-PER", "I-PER"], [(0, 1, "PER"), (1, 2, "PER"), (2, 3, "PER")]),
        (["I-PER", "B-PER", "I-PER"], [(0, 1, "PER"), (1, 3, "PER")]),
        # an unprefixed tag reads as I-TAG
        (["B-PER", "PER", "O"], [(0, 2, "PER")]),
    ],
)
def test_ill_formed_sequences_decode_like_conlleval(
    tags: list[str], spans: list[tuple[int, int, str]]
) -> None:
    # The rule is scheme-independent for prefixed schemes.
    for scheme in (BIO, IOB1, BIOES):
        assert tags_to_spans(tags, scheme) == spans


def test_encode_each_scheme() -> None:
    spans = [(0, 2, "PER"), (2, 3, "PER"), (4, 7, "LOC")]
    assert spans_to_tags(spans, 8, BIO) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "O"]
    assert spans_to_tags(spans, 8, IOB1) == ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-LOC", "I-LOC", "O"]
    assert spans_to_tags(spans, 8, BIOES) == ["B-PER", "E-PER", "S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "O"]
    assert spans_to_tags(spans, 8, PLAIN) == ["PER", "PER", "PER", "O", "LOC", "LOC", "LOC", "O"]
    assert spans_to_tags([], 3, BIOES) == ["O", "O", "O"]


def test_encode_rejects_bad_spans() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags([(0, 2, "A"), (1, 3, "B")], 4, BIO)
    with pytest.raises(ValueError, match="outside"):
        spans_to_tags([(2, 5, "A")], 4, BIO)
    with pytest.raises(ValueError, match="outside"):
        spans_to_tags([(2, 2, "A")], 4, BIO)


def _random_spans(rng: random.Random, length: int) -> list[tuple[int, int, str]]:
    spans = []
    i = 0
    while i < length:
        if rng.random() < 0.4:
            end = min(length, i + rng.randint(1, 4))
            spans.append((i, end, rng.choice("ABC")))
            i = end
        else:
            i += rng.randint(1, 2)
    return spans


def test_round_trip_for_every_scheme() -> None:
    rng = random.Random(7)
    for _ in range(300):
        length = rng.randint(0, 15)
        spans = _random_spans(rng, length)
        for scheme in (BIO, IOB1, BIOES):
            assert tags_to_spans(spans_to_tags(spans, length, scheme), scheme) == spans
        # plain tags merge touching spans of one type; everything else survives
        plain = tags_to_spans(spans_to_tags(spans, length, PLAIN), PLAIN)
        assert {t for _, _, t in plain} == {t for _, _, t in spans}
        assert sum(e - s for s, e, _ in plain) == sum(e - s for s, e, _ in spans)


def test_convert_between_schemes() -> None:
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    assert convert(iob1, IOB1, BIO) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert convert(iob1, IOB1, BIOES) == ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]
    assert convert(convert(iob1, IOB1, BIOES), BIOES, IOB1) == iob1
    # ill-formed input comes out well-formed
    assert convert(["O", "I-PER", "I-LOC"], BIO, BIO) == ["O", "B-PER", "B-LOC"]
    assert convert(["LOC", "LOC", "O"], PLAIN, BIOES) == ["B-LOC", "E-LOC", "O"]


def test_scheme_names_and_aliases() -> None:
    assert normalize_scheme("iob2") == BIO
    assert normalize_scheme("IOBES") == BIOES
    assert normalize_scheme("io") == PLAIN
    with pytest.raises(ValueError, match="unknown tag scheme"):
        normalize_scheme("BILOU-X")


def test_detect_scheme_from_tag_sets() -> None:
    assert detect_scheme(["O", "B-PER", "I-PER"]) == BIO
    assert detect_scheme(["O", "B-PER", "E-PER", "S-LOC"]) == BIOES
    assert detect_scheme(["O", "I-PER", "I-LOC"]) == IOB1
    assert detect_scheme(["NOUN", "VERB", "O"]) == PLAIN
    assert detect_scheme(["O"]) == BIO
    assert detect_scheme(["B-PER", "NOUN"]) is None


def test_detect_iob1_from_sequences() -> None:
    iob1 = [["I-ORG", "O", "I-MISC", "O"], ["I-PER", "I-PER", "B-PER", "O"], ["I-LOC"]]
    bio = [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER", "B-PER", "O"], ["O", "I-LOC"]]
    assert detect_scheme_from_sequences(iob1) == IOB1
    assert detect_scheme_from_sequences(bio) == BIO
    assert detect_scheme_from_sequences([["S-PER", "O"]]) == BIOES


def test_a_tag_column_with_a_few_stray_values_still_looks_like_span_tags() -> None:
    # One typo among BIO tags: the column is meant as spans, the typo is an error to report.
    assert looks_like_span_tags({"B-ORG": 1, "O": 1, "B-MISC": 1, "o": 1, "B-PER": 1, "I-PER": 1})
    assert looks_like_span_tags({"O": 900, "B-PER": 60, "I-PER": 20, "B-": 1, "0": 2, "LOC": 1})
    # Many strays, but under 5% of the values.
    assert looks_like_span_tags({"O": 800, "B-PER": 100, "E-PER": 60, "PER": 40})


def test_token_labels_with_a_few_prefixed_values_do_not_look_like_span_tags() -> None:
    # POS tags, a few of which happen to look prefixed.
    assert not looks_like_span_tags({"NN": 400, "VB": 300, "DT": 250, "B-52": 2, "S-X": 1})
    # A tiny file: three POS tags and one prefixed value is no majority of tags.
    assert not looks_like_span_tags({"NNP": 1, "VBZ": 1, "JJ": 1, "B-X": 1})
    # Only O and unprefixed values is the plain scheme, not tags with strays.
    assert not looks_like_span_tags({"O": 10, "PER": 1})
    assert not looks_like_span_tags({"O": 10, "B-PER": 2, "o": 3})
    assert not looks_like_span_tags({})
