"""The readers on the real corpora in ../shared/data, checked against counts taken from the raw files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from engine.data import Corpus, MultiCorpus
from engine.readers import ColumnCorpus, ConlluCorpus, read_column_file, read_conllu_file, read_corpus_files

UPOS = {
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
}  # fmt: skip


def raw_entity_counts(path: Path) -> tuple[int, int, Counter[str]]:
    """Sentences, tokens and entities per type, straight from the file.

    An entity starts at a B- tag, or at an I- tag whose predecessor is not part of an entity of
    the same type (the CoNLL evaluation's reading of a stray I-).
    """
    text = path.read_text(encoding="utf-8")
    sentences = sum(1 for block in text.split("\n\n") if block.strip())
    tokens = 0
    entities: Counter[str] = Counter()
    previous = "O"
    for line in text.splitlines():
        if not line.strip():
            previous = "O"
            continue
        tag = line.split()[-1]
        tokens += 1
        if tag.startswith("B-") or (tag.startswith("I-") and previous[2:] != tag[2:]):
            entities[tag[2:]] += 1
        previous = tag
    return sentences, tokens, entities


@pytest.fixture(scope="module")
def ewt_train(shared_data: Path) -> Corpus:
    return ConlluCorpus(
        train_file=shared_data / "ud_english_ewt" / "train.conllu", sample_missing_splits=False
    )


def test_ewt_train_counts(shared_data: Path, ewt_train: Corpus) -> None:
    path = shared_data / "ud_english_ewt" / "train.conllu"
    raw_words = sum(
        1 for line in path.read_text(encoding="utf-8").splitlines() if line.split("\t", 1)[0].isdigit()
    )
    sentences = ewt_train.train
    assert len(sentences) == 12_544
    assert sum(len(s) for s in sentences) == 204_577 == raw_words
    assert ewt_train.skipped == 0
    upos = ewt_train.make_label_dictionary("upos")
    assert len(upos) == 17 and set(upos.get_items()) == UPOS
    # multi-word tokens are kept as metadata, with their surface form
    mwts = [m for s in sentences for m in s.metadata.get("multiword_tokens", [])]
    ranges = [line for line in path.read_text(encoding="utf-8").splitlines() if "-" in line.split("\t", 1)[0]]
    assert len(mwts) == len([line for line in ranges if not line.startswith("#")])
    assert all(s.id and s.text for s in sentences)
    assert ewt_train.has_documents()


def test_conll03_train_counts_and_entities(shared_data: Path) -> None:
    path = shared_data / "conll03" / "train.txt"
    raw_sentences, raw_tokens, raw_entities = raw_entity_counts(path)
    schemes: dict[str, str] = {}
    sentences, skipped = read_column_file(path, {0: "text", 1: "ner"}, schemes=schemes)
    assert (len(sentences), raw_sentences) == (14_041, 14_041)
    assert sum(len(s) for s in sentences) == 203_621 == raw_tokens
    assert skipped == 0 and schemes == {"ner": "BIO"}
    read = Counter(span.value for s in sentences for span in s.get_spans("ner"))
    assert read == raw_entities
    assert read == {"PER": 6_600, "LOC": 7_140, "ORG": 6_321, "MISC": 3_440}
    assert 23_000 < sum(read.values()) < 24_000
    assert all(s.document_id is None for s in sentences)  # this copy has no -DOCSTART- lines


def test_conll03_folder_and_wnut17(shared_data: Path) -> None:
    corpus = ColumnCorpus(shared_data / "conll03", {0: "text", 1: "ner"})
    # no test file: a seeded tenth of train is the test split, as in Flair
    assert (len(corpus.train), len(corpus.dev), len(corpus.test)) == (12_637, 3_250, 1_404)
    assert corpus.make_label_dictionary("ner").get_items() == ["LOC", "PER", "ORG", "MISC"]
    wnut = read_corpus_files(
        "column",
        {"train": shared_data / "wnut17" / "train.conll", "dev": shared_data / "wnut17" / "dev.conll"},
        sample_missing_splits=False,
    )
    assert len(wnut.train) == 3_394 and len(wnut.dev) == 1_009
    _, _, raw = raw_entity_counts(shared_data / "wnut17" / "train.conll")
    assert Counter(span.value for s in wnut.train for span in s.get_spans("ner")) == raw
    assert len(raw) == 6


def test_trec6_coarse_classes(shared_data: Path) -> None:
    corpus = read_corpus_files(
        "trec", {"train": shared_data / "trec6" / "train.txt"}, sample_missing_splits=False
    )
    assert len(corpus.train) == 5_452 and corpus.skipped == 0
    counts = Counter(s.get_labels("class")[0].value for s in corpus.train)
    assert counts == {"ENTY": 1250, "HUM": 1223, "DESC": 1162, "NUM": 896, "LOC": 835, "ABBR": 86}
    assert corpus.statistics()["train"]["labels"]["class"] == dict(counts)


def test_multicorpus_english_and_german_share_one_upos_dictionary(
    shared_data: Path, ewt_train: Corpus
) -> None:
    german, skipped = read_conllu_file(shared_data / "ud_german_gsd" / "dev.conllu", fields=["upos"])
    assert len(german) == 799 and skipped == 0
    gsd = Corpus(german, name="gsd", sample_missing_splits=False)
    multi = MultiCorpus([ewt_train, gsd])
    assert len(multi.train) == 12_544 + 799
    dictionary = multi.make_label_dictionary("upos")
    assert len(dictionary) == 17 and set(dictionary.get_items()) == UPOS
    german_tags = {t.get_tag("upos") for s in german for t in s}
    assert german_tags <= UPOS
