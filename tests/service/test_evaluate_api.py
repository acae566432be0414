"""POST /models/{id}/evaluate: a served model scored on a split of an uploaded corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.service.fixtures import (
    CONLL_OPTIONS,
    CONLL_TRAIN,
    FASTTEXT_TRAIN,
    ApiSession,
    register_tiny_classifier,
    register_tiny_tagger,
)

pytestmark = pytest.mark.postgres


def test_the_scores_are_the_engines_on_that_split(api: ApiSession, tmp_path: Path) -> None:
    from engine.models.base import load_model
    from engine.readers import read_corpus_files

    owner = api.new_owner()
    tagger = register_tiny_tagger(owner, tmp_path)
    corpus = api.corpus(owner, test=CONLL_TRAIN)

    r = api.client.post(f"/models/{tagger}/evaluate", json={"corpus_id": corpus}, headers=owner.headers)
    assert r.status_code == 200, r.text
    body = r.json()

    local = tmp_path / "test.txt"
    local.write_text(CONLL_TRAIN)
    gold = read_corpus_files("column", {"train": local, "test": local}, CONLL_OPTIONS).test
    expected = load_model(tmp_path / "model-ner").evaluate(gold, gold_label_type="ner")
    assert (body["model_id"], body["corpus_id"], body["split"], body["label_type"]) == (
        tagger,
        corpus,
        "test",
        "ner",
    )
    assert body["sentences"] == len(gold) and body["main_score_name"] == "micro_f1"
    # The loss tells that the same weights saw the same sentences.
    assert body["loss"] == pytest.approx(expected.loss) and body["loss"] > 0
    for name in ("main_score", "micro_precision", "micro_recall", "micro_f1", "macro_f1", "accuracy"):
        assert body[name] == pytest.approx(getattr(expected, name)), name
    gold_spans: dict[str, int] = {}
    for sentence in gold:
        for span in sentence.get_spans("ner"):
            gold_spans[span.label.value] = gold_spans.get(span.label.value, 0) + 1
    assert {k: v["support"] for k, v in body["per_class"].items() if v["support"]} == gold_spans
    assert body["seconds"] >= 0


def test_a_token_tagger_scores_against_a_gold_type_of_another_name(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    pos_tagger = register_tiny_tagger(owner, tmp_path, "upos")  # token labels, named "upos"
    # gold "pos" tags, some of them the model's (NOUN, VERB, PUNCT)
    dev = CONLL_TRAIN.replace(" NNP ", " NOUN ").replace(" VBZ ", " VERB ").replace(". . ", ". PUNCT ")
    corpus = api.corpus(owner, dev=dev)

    r = api.client.post(
        f"/models/{pos_tagger}/evaluate",
        json={"corpus_id": corpus, "split": "dev", "label_type": "pos"},
        headers=owner.headers,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["label_type"], r.json()["main_score_name"]) == ("pos", "accuracy")
    dev_tokens = api.client.get(f"/corpora/{corpus}", headers=owner.headers).json()["statistics"]["dev"][
        "tokens"
    ]
    assert sum(row["support"] for row in r.json()["per_class"].values()) == dev_tokens

    # The corpus's "ner" labels are spans: no token tagger can be scored on them.
    r = api.client.post(
        f"/models/{pos_tagger}/evaluate",
        json={"corpus_id": corpus, "split": "dev", "label_type": "ner"},
        headers=owner.headers,
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body.label_type"
    assert "'ner' labels are span labels" in r.json()["detail"] and "token labels" in r.json()["detail"]


def test_what_cannot_be_scored_is_named(api: ApiSession, tmp_path: Path) -> None:
    alice, bob = api.new_owner("alice"), api.new_owner("bob")
    tagger = register_tiny_tagger(alice, tmp_path)
    classifier = register_tiny_classifier(alice, tmp_path)
    conll = api.corpus(alice)
    reviews = api.corpus(alice, train=FASTTEXT_TRAIN, format="fasttext", options=None)
    bobs = api.corpus(bob)

    def evaluate(model: str, body: dict[str, object], owner=alice):  # noqa: ANN001, ANN202
        return api.client.post(f"/models/{model}/evaluate", json=body, headers=owner.headers)

    for missing in ("no-such-corpus", bobs):
        r = evaluate(tagger, {"corpus_id": missing})
        assert r.status_code == 404 and "corpus" in r.json()["detail"]
    assert evaluate("no-such-model", {"corpus_id": conll}).status_code == 404
    assert evaluate(tagger, {"corpus_id": conll}, owner=bob).status_code == 404

    r = evaluate(classifier, {"corpus_id": conll})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.corpus_id"
    assert r.json()["detail"] == (
        f"corpus {conll} is a sequence tagging corpus; model {classifier} is a text classifier: "
        "score it on a text classification corpus"
    )

    r = evaluate(classifier, {"corpus_id": reviews})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.label_type"
    assert "has no 'sentiment' labels; it has class" in r.json()["detail"]

    r = evaluate(tagger, {"corpus_id": conll, "split": "validation"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.split"
    # a split too small to sample from has no sentences: no 0.0 scores for nothing
    one = api.corpus(
        alice, train="Paris B-LOC\nis O\nnice O\n", options={"column_map": {"0": "text", "1": "ner"}}
    )
    r = evaluate(tagger, {"corpus_id": one, "split": "test"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.split"
    assert r.json()["detail"] == f'corpus {one} has no test split; it has train (choose one with "split")'
    # gold labels the model cannot predict: every score would be 0
    other_types = "Anna B-person\nlives O\nin O\nParis B-place\n\n"
    wnut_like = api.corpus(
        alice, train=other_types, test=other_types, options={"column_map": {"0": "text", "1": "ner"}}
    )
    r = evaluate(tagger, {"corpus_id": wnut_like})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.corpus_id"
    assert r.json()["detail"].startswith(
        f"none of the 'ner' labels of corpus {wnut_like} (test: person, place) "
    )
    assert r.json()["detail"].endswith("every score would be 0")
    r = evaluate(tagger, {"corpus_id": conll, "mini_batch_size": 0, "extra": 1})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"body.mini_batch_size", "body.extra"}
    r = evaluate(tagger, {"corpus_id": conll, "mini_batch_size": True})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.mini_batch_size"


def test_a_stored_corpus_this_version_no_longer_reads_is_a_409_naming_its_split(
    api: ApiSession, tmp_path: Path
) -> None:
    # Readers refuse more than they did: a corpus an older version stored (a 1,500-character
    # token) answered 422 naming this server's temporary folder
    from service.db.models import Corpus
    from service.db.session import session_scope
    from service.storage import get_storage

    owner = api.new_owner()
    tagger = register_tiny_tagger(owner, tmp_path)
    corpus = api.corpus(owner, test=CONLL_TRAIN)
    with session_scope() as session:
        row = session.get(Corpus, corpus)
        assert row is not None
        test_key = row.files["test"]
    get_storage().put(test_key, (CONLL_TRAIN + "x" * 1500 + " NN O O\n").encode())
    r = api.client.post(f"/models/{tagger}/evaluate", json={"corpus_id": corpus}, headers=owner.headers)
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"corpus {corpus}: its test split, stored by an older Tagsmith, does not read")
    line = CONLL_TRAIN.count("\n") + 1
    assert f"line {line}: a token of 1500 characters" in detail[:200], detail[:200]
    assert detail.endswith("upload the corpus again, corrected")
    assert "/tmp" not in r.text and "tagsmith-" not in r.text
    r = api.client.post(f"/corpora/{corpus}/text", json={}, headers=owner.headers)
    assert r.status_code == 409 and "its test split" in r.json()["detail"], r.text


def test_a_stored_dev_split_is_scored_without_reading_train(api: ApiSession, tmp_path: Path) -> None:
    # Scoring on a stored dev split parsed every stored file (EWT's dev: 1.1 s, most of it train's):
    # a train file this version refuses no longer stops it, and the scores stay the same.
    from service.db.models import Corpus
    from service.db.session import session_scope
    from service.storage import get_storage

    owner = api.new_owner()
    tagger = register_tiny_tagger(owner, tmp_path)
    corpus = api.corpus(owner, dev=CONLL_TRAIN.replace("Peter", "Paul"), test=CONLL_TRAIN)

    def evaluate(split: str) -> Any:
        return api.client.post(
            f"/models/{tagger}/evaluate", json={"corpus_id": corpus, "split": split}, headers=owner.headers
        )

    def scores(split: str) -> dict[str, Any]:
        r = evaluate(split)
        assert r.status_code == 200, r.text
        return {k: v for k, v in r.json().items() if k != "seconds"}

    before = {split: scores(split) for split in ("dev", "test")}
    with session_scope() as session:
        row = session.get(Corpus, corpus)
        assert row is not None
        train_key = row.files["train"]
    get_storage().put(train_key, (CONLL_TRAIN + "x" * 1500 + " NN O O\n").encode())
    assert {split: scores(split) for split in ("dev", "test")} == before
    r = evaluate("train")
    assert r.status_code == 409 and "its train split" in r.json()["detail"], r.text


def test_a_split_read_past_the_time_limit_is_a_409_and_a_reader_that_ends_a_503(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The split is read in a reader process, under the uploads' time limit.
    import functools
    import time

    import httpx

    from service import corpus_reading
    from service.settings import reset_settings
    from tests.service import reader_hooks

    owner = api.new_owner()
    tagger = register_tiny_tagger(owner, tmp_path)
    corpus = api.corpus(owner, test=CONLL_TRAIN)

    def evaluate() -> httpx.Response:
        return api.client.post(
            f"/models/{tagger}/evaluate", json={"corpus_id": corpus}, headers=owner.headers
        )

    monkeypatch.setenv("TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS", "0.5")
    reset_settings()
    monkeypatch.setattr(corpus_reading, "test_hook", functools.partial(time.sleep, 120))
    started = time.monotonic()
    r = evaluate()
    assert time.monotonic() - started < 60, "the slow reader was waited for"
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == (
        f"corpus {corpus}: reading its files for the test split was stopped after 0.5 s "
        "(TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS); use a smaller corpus, or ask the operator to "
        "raise TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS"
    )

    monkeypatch.setattr(corpus_reading, "test_hook", reader_hooks.end_abruptly)
    r = evaluate()
    assert r.status_code == 503, r.text
    assert f"could not finish reading corpus {corpus} (its reader process ended" in r.json()["detail"]

    monkeypatch.setattr(corpus_reading, "test_hook", None)
    assert evaluate().status_code == 200
