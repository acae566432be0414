from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from service.logic.models import register_model
from tests.service.fixtures import (
    ApiSession,
    Owner,
    register_tiny_classifier,
    register_tiny_tagger,
    save_tiny_tagger,
    strict_json,
)

pytestmark = pytest.mark.postgres


def _predict(api: ApiSession, owner: Owner, model_id: str, body: dict[str, Any]) -> Any:
    return api.client.post(f"/models/{model_id}/predict", json=body, headers=owner.headers)


def test_raw_texts_are_split_tokenized_and_tagged_with_offsets(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    text = "George Washington went to Washington. He liked it there!"
    r = _predict(api, owner, model_id, {"texts": [text, "Berlin is big."]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_id"], body["task"], body["label_type"]) == (model_id, "sequence_tagging", "ner")
    sentences = body["sentences"]
    assert [s["index"] for s in sentences] == [0, 0, 1]
    for s in sentences:
        source = [text, "Berlin is big."][s["index"]]
        assert source[s["start"] : s["end"]] == s["text"]
        for token in s["tokens"]:
            assert source[token["start"] : token["end"]] == token["text"]
            assert token["tag"] == "O" or token["tag"][:2] in ("B-", "I-", "E-", "S-")
        assert isinstance(s["spans"], list)
        for span in s["spans"]:
            assert source[span["start"] : span["end"]] == span["text"]
            assert span["label"] in ("PER", "LOC", "ORG") and 0.0 <= span["confidence"] <= 1.0
            assert all(
                t["tag"].endswith(span["label"]) for t in s["tokens"][span["start_token"] : span["end_token"]]
            )
    assert [t["text"] for t in sentences[1]["tokens"]] == ["He", "liked", "it", "there", "!"]
    assert sentences[1]["start"] == text.index("He")

    r = _predict(api, owner, model_id, {"texts": [text], "return_probabilities_for_all_classes": True})
    for token in r.json()["sentences"][0]["tokens"]:
        assert 0.0 < token["confidence"] <= 1.0
        assert {d["value"] for d in token["all_tags"]} >= {"O", "S-PER", "B-LOC"}


def test_the_whitespace_tokenizer_keeps_social_media_tokens_whole(api: ApiSession, tmp_path: Path) -> None:
    # A model trained on pre-tokenized tweets (WNUT-17) saw "@user" and URLs whole; segtok splits them.
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    text = "@anna_b loves https://x.co/a?b=1 &amp; Berlin!\nNext line"

    def tokens(body: dict[str, Any]) -> list[list[tuple[str, int, int]]]:
        r = _predict(api, owner, model_id, {"texts": [text], **body})
        assert r.status_code == 200, r.text
        return [[(t["text"], t["start"], t["end"]) for t in s["tokens"]] for s in r.json()["sentences"]]

    whole = tokens({"tokenizer": "whitespace"})
    assert [[w for w, _, _ in s] for s in whole] == [
        ["@anna_b", "loves", "https://x.co/a?b=1", "&amp;", "Berlin!"],
        ["Next", "line"],
    ]
    assert all(text[start:end] == word for s in whole for word, start, end in s)
    assert len(tokens({})[0]) > len(whole[0])  # segtok, the default, splits them
    one = tokens({"tokenizer": "whitespace", "split_sentences": False})
    assert [w for w, _, _ in one[0]] == [w for s in whole for w, _, _ in s]


def test_pre_tokenized_sentences_and_all_classes(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path, "pos")
    r = _predict(
        api,
        owner,
        model_id,
        {"sentences": [["I", "run", "."], ["New York", "!"]], "return_probabilities_for_all_classes": True},
    )
    assert r.status_code == 200, r.text
    sentences = r.json()["sentences"]
    assert [[t["text"] for t in s["tokens"]] for s in sentences] == [["I", "run", "."], ["New York", "!"]]
    token = sentences[0]["tokens"][0]
    assert token["start"] is None and sentences[0]["start"] is None
    assert token["tag"] in ("NOUN", "VERB", "PUNCT", "O") and 0.0 < token["confidence"] <= 1.0
    assert {d["value"] for d in token["all_tags"]} >= {"NOUN", "VERB", "PUNCT"}
    # With a CRF the tag comes from the best path; its confidence is that tag's marginal.
    assert {d["value"]: d["score"] for d in token["all_tags"]}[token["tag"]] == pytest.approx(
        token["confidence"]
    )
    assert sum(d["score"] for d in token["all_tags"]) == pytest.approx(1.0, abs=1e-4)
    assert "spans" not in sentences[0] or sentences[0]["spans"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"texts": []}, "body.texts"),
        ({"sentences": []}, "body.sentences"),
        ({"texts": ["x"] * 9}, "body.texts"),
        ({"texts": ["ok", "y" * 101]}, "body.texts.1"),
        ({"texts": ["ok", "   "]}, "body.texts.1"),
        # blank to the tokenizer: invisible characters only (they vanished from the answer)
        ({"texts": ["\u200b"]}, "body.texts.0"),
        ({"texts": ["ok", "\x00\x01"]}, "body.texts.1"),
        ({"texts": ["ok", "\u200e", "ok"]}, "body.texts.1"),
        ({"texts": ["\ufeff\u2060 \u202a\u2029"], "tokenizer": "whitespace"}, "body.texts.0"),
        ({"sentences": [["a"], ["a", "\u200b"]]}, "body.sentences.1"),
        ({"sentences": [["\u200f\x00"]]}, "body.sentences.0"),
        ({"sentences": [["a", ""]]}, "body.sentences.0"),
        ({"texts": ["a"], "sentences": [["a"]]}, "body"),
        ({}, "body"),
        ({"texts": ["a"], "task": "text_classification"}, "body.task"),
        ({"texts": "not a list"}, "body.texts"),
        ({"texts": [7]}, "body.texts.0"),
        (
            {"texts": ["a"], "return_probabilities_for_all_classes": "yes"},
            "body.return_probabilities_for_all_classes",
        ),
        ({"texts": ["a"], "tokenizer": "spacy"}, "body.tokenizer"),
        ({"sentences": [["a"]], "tokenizer": "whitespace"}, "body"),
    ],
)
def test_bad_predict_requests_are_422(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any], field: str
) -> None:
    from service.settings import reset_settings

    monkeypatch.setenv("TAGSMITH_PREDICT_MAX_BATCH", "8")
    monkeypatch.setenv("TAGSMITH_PREDICT_MAX_TEXT_CHARS", "100")
    reset_settings()
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    r = _predict(api, owner, model_id, body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == field


def test_the_length_limit_counts_a_pre_tokenized_sentence_as_its_text(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import reset_settings

    monkeypatch.setenv("TAGSMITH_PREDICT_MAX_TEXT_CHARS", "100")
    reset_settings()
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    at_limit = "y" * 49 + " " + "z" * 50
    assert _predict(api, owner, model_id, {"texts": [at_limit]}).status_code == 200
    assert _predict(api, owner, model_id, {"sentences": [at_limit.split()]}).status_code == 200
    assert _predict(api, owner, model_id, {"sentences": [["y" * 100]]}).status_code == 200
    r = _predict(api, owner, model_id, {"sentences": [["y" * 50, "z" * 50]]})
    assert r.status_code == 422 and r.json()["errors"][0]["message"] == "101 characters; the limit is 100"


def test_unknown_model_and_a_model_that_cannot_predict(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    assert _predict(api, owner, "missing", {"texts": ["a"]}).status_code == 404
    folder = tmp_path / "lm"
    save_tiny_tagger(folder, "ner", ["PER"], "span")
    lm_id = register_model(
        owner.id, folder, name="lm", task="language_model", label_type="text", labels=[]
    ).id
    r = _predict(api, owner, lm_id, {"texts": ["a"]})
    assert r.status_code == 422
    assert r.json()["detail"].startswith(
        f"model {lm_id} is a language model, which has no labels to predict;"
    )
    assert r.json()["errors"][0]["message"] == "a language model cannot predict"


def test_a_missing_or_damaged_artifact_is_said_as_download_says_it(api: ApiSession, tmp_path: Path) -> None:
    # Both answered 503 without Retry-After (clients retried forever), and showed server paths.
    from service.settings import get_settings
    from service.storage import get_storage

    owner = api.new_owner()
    missing, damaged = register_tiny_tagger(owner, tmp_path), register_tiny_tagger(owner, tmp_path, "pos")
    get_storage().delete(f"models/{missing}")
    r = _predict(api, owner, missing, {"texts": ["a b"]})
    download = api.client.get(f"/models/{missing}/download", headers=owner.headers)
    assert (r.status_code, download.status_code) == (404, 404)
    assert (
        r.json()["detail"]
        == download.json()["detail"]
        == f"the files of model {missing} are missing from storage"
    )

    (get_settings().storage_root / "models" / damaged / "model.safetensors").write_bytes(b"not tensors")
    r = _predict(api, owner, damaged, {"texts": ["a b"]})
    assert r.status_code == 500 and r.json()["type"].endswith("/model-damaged")
    assert r.json()["detail"].startswith(f"model {damaged} cannot be loaded: model.safetensors: ")
    assert str(get_settings().resolved_data_dir) not in r.text and "model-cache" not in r.text


@pytest.mark.parametrize("threads", [1, 2])
def test_concurrent_requests_are_batched_and_the_cache_is_bounded(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    from service.logic.predict import ModelCache, model_info, predict
    from service.metrics import PREDICT_BATCH_SIZE
    from service.schemas.api import PredictRequest
    from service.settings import get_settings, reset_settings

    monkeypatch.setenv("TAGSMITH_MODEL_CACHE_SIZE", "1")
    monkeypatch.setenv("TAGSMITH_PREDICT_BATCH_WAIT_MS", "20")
    monkeypatch.setenv("TAGSMITH_PREDICT_THREADS", str(threads))
    reset_settings()
    owner = api.new_owner()
    ner, pos = register_tiny_tagger(owner, tmp_path, "ner"), register_tiny_tagger(owner, tmp_path, "pos")
    settings = get_settings()

    def batch_count() -> float:
        return next(
            s.value for m in PREDICT_BATCH_SIZE.collect() for s in m.samples if s.name.endswith("_count")
        )

    async def scenario() -> tuple[list[dict[str, Any]], float, ModelCache]:
        cache = ModelCache(settings)
        request = PredictRequest(texts=["Anna lives in Berlin ."])
        await predict(cache, owner.id, ner, request, settings)  # load, and one batch of 1
        before = batch_count()
        results = await asyncio.gather(*(predict(cache, owner.id, ner, request, settings) for _ in range(12)))
        batches = batch_count() - before
        await predict(cache, owner.id, pos, request, settings)
        return list(results), batches, cache

    results, batches, cache = asyncio.run(scenario())
    assert len(results) == 12 and all(r["sentences"][0]["text"] == "Anna lives in Berlin ." for r in results)
    assert batches <= 2 + threads, f"12 concurrent requests took {batches} model calls"
    assert [e.info.id for e in cache.entries.values()] == [pos]
    assert model_info(owner.id, ner).label_type == "ner"
    cache.close()


def test_deleted_model_stops_predicting(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    assert _predict(api, owner, model_id, {"texts": ["Hi there ."]}).status_code == 200
    assert api.client.delete(f"/models/{model_id}", headers=owner.headers).status_code == 204
    assert _predict(api, owner, model_id, {"texts": ["Hi there ."]}).status_code == 404


def test_classifier_labels_and_all_classes(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    model_id = register_tiny_classifier(owner, tmp_path)
    text = "I loved it. The ending was great!"
    r = _predict(api, owner, model_id, {"texts": [text, "meh"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["task"], body["label_type"]) == ("text_classification", "sentiment")
    # Classifiers take each text whole unless asked to split.
    assert [s["text"] for s in body["sentences"]] == [text, "meh"]
    first = body["sentences"][0]
    assert len(first["labels"]) == 1 and first["labels"][0]["value"] in ("positive", "negative", "neutral")
    assert "spans" not in first and all("tag" not in t for t in first["tokens"])
    assert first["tokens"][0] == {"text": "I", "start": 0, "end": 1}

    r = _predict(api, owner, model_id, {"texts": [text], "return_probabilities_for_all_classes": True})
    s = r.json()["sentences"][0]
    assert [d["value"] for d in s["all_labels"]][0] == s["labels"][0]["value"]
    assert sorted(d["value"] for d in s["all_labels"]) == ["negative", "neutral", "positive"]
    assert sum(d["score"] for d in s["all_labels"]) == pytest.approx(1.0, abs=1e-4)

    split = _predict(api, owner, model_id, {"texts": [text], "split_sentences": True}).json()["sentences"]
    assert [(x["text"], x["start"]) for x in split] == [("I loved it.", 0), ("The ending was great!", 12)]


@pytest.mark.parametrize("texts", [["\u200b"], ["\x00\x01"], ["Fine", "\u200e\u2060"]])
def test_a_classifier_refuses_texts_of_invisible_characters(
    api: ApiSession, tmp_path: Path, texts: list[str]
) -> None:
    owner = api.new_owner()
    model_id = register_tiny_classifier(owner, tmp_path)
    r = _predict(api, owner, model_id, {"texts": texts})
    assert r.status_code == 422, r.text
    assert [(e["field"], e["message"]) for e in r.json()["errors"]] == [
        (f"body.texts.{len(texts) - 1}", "empty")
    ]


def test_unicode_line_breaks_split_and_format_characters_are_no_tokens(
    api: ApiSession, tmp_path: Path
) -> None:
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    text = "\u200fAnna lives in Ber\u2060lin\u2029Second\x85line\rthird \u200e"
    r = _predict(api, owner, model_id, {"texts": [text]})
    assert r.status_code == 200, r.text
    sentences = r.json()["sentences"]
    assert [(s["text"], s["start"]) for s in sentences] == [
        ("Anna lives in Ber\u2060lin", 1),
        ("Second", 23),
        ("line", 30),
        ("third", 35),
    ]
    assert [t["text"] for t in sentences[0]["tokens"]] == ["Anna", "lives", "in", "Ber\u2060lin"]
    for s in sentences:
        assert text[s["start"] : s["end"]] == s["text"]
        for token in s["tokens"]:
            assert text[token["start"] : token["end"]] == token["text"]


def test_wrong_task_guard(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    classifier = register_tiny_classifier(owner, tmp_path)
    tagger = register_tiny_tagger(owner, tmp_path)
    r = _predict(api, owner, classifier, {"texts": ["a"], "task": "sequence_tagging"})
    assert r.status_code == 422 and "text_classification" in r.json()["detail"]
    assert _predict(api, owner, tagger, {"texts": ["a"], "task": "sequence_tagging"}).status_code == 200


def test_the_fast_path_answers_exactly_as_the_documented_route(api: ApiSession, tmp_path: Path) -> None:
    """``service.predict_fastpath`` serves predict ahead of FastAPI's router; an app without it
    (the plain route) must give the same bodies, statuses and problem documents."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.metrics import HTTP_REQUESTS
    from service.predict_fastpath import PredictFastPath

    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    plain_app = create_app(run_migrations=False)
    plain_app.user_middleware = [m for m in plain_app.user_middleware if m.cls is not PredictFastPath]
    cases: list[tuple[str, Any, dict[str, str]]] = [
        (model_id, {"texts": ["Anna lives in Berlin. She works in Paris ."]}, owner.headers),
        (
            model_id,
            {"sentences": [["New York", "!"]], "return_probabilities_for_all_classes": True},
            owner.headers,
        ),
        # over INLINE_CHARS and TOKENS_PER_PART: the answer is serialised in parts
        (model_id, {"texts": [f"Anna lives in Berlin {i} . " * 8 for i in range(200)]}, owner.headers),
        (
            model_id,
            {"texts": ["@anna loves http://x.co &amp; Paris"], "tokenizer": "whitespace"},
            owner.headers,
        ),
        (model_id, {"texts": ["ok", "  "]}, owner.headers),  # 422 naming body.texts.1
        (model_id, {"texts": "not a list"}, owner.headers),  # 422 from the schema
        (model_id, {"texts": ["a"], "extra": 1}, owner.headers),  # 422: unknown field
        ("missing", {"texts": ["a"]}, owner.headers),  # 404
        (model_id, {"texts": ["a"]}, {}),  # 401
        (model_id, {"texts": ["a"]}, api.new_owner("other").headers),  # 404 for another owner
    ]
    with TestClient(plain_app) as plain:
        for target, body, headers in cases:
            fast_r = api.client.post(f"/models/{target}/predict", json=body, headers=headers)
            plain_r = plain.post(f"/models/{target}/predict", json=body, headers=headers)
            assert (fast_r.status_code, fast_r.json()) == (plain_r.status_code, plain_r.json()), body
            assert fast_r.headers["content-type"] == plain_r.headers["content-type"]
        for client in (api.client, plain):
            # The two parsers word it differently; both say it is not JSON and where.
            malformed = client.post(
                f"/models/{model_id}/predict",
                content=b"{not json",
                headers={**owner.headers, "content-type": "application/json"},
            )
            assert malformed.status_code == 422
            assert malformed.headers["content-type"].startswith("application/problem+json")
            assert malformed.json()["detail"].startswith("the body is not valid JSON: ")
            assert "line 1" in malformed.json()["detail"]
            assert [(e["field"], e["type"]) for e in malformed.json()["errors"]] == [("body", "json_invalid")]
    # requests it serves are counted under the route's template, as routed ones are
    counter = HTTP_REQUESTS.labels("POST", "/models/{model_id}/predict", "200")
    before = counter._value.get()
    assert api.client.post(f"/models/{model_id}/predict", json=cases[0][1], headers=owner.headers).is_success
    assert counter._value.get() == before + 1


def test_the_precision_setting_serves_bfloat16_predictions(
    service_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from engine.data import Sentence
    from engine.models.base import load_model
    from service.app import create_app
    from service.settings import reset_settings

    monkeypatch.setenv("TAGSMITH_PREDICT_PRECISION", "bfloat16")
    reset_settings()
    text = "what a great little film"
    with TestClient(create_app()) as client:
        session = ApiSession(client=client)
        owner = session.new_owner()
        model_id = register_tiny_classifier(owner, tmp_path)
        r = _predict(session, owner, model_id, {"texts": [text]})
        assert r.status_code == 200, r.text
        served = r.json()["sentences"][0]["labels"][0]
    model = load_model(tmp_path / "classifier-False")
    scores = {}
    for precision in ("float32", "bfloat16"):
        sentence = Sentence(text)
        model.predict(sentence, precision=precision)
        label = sentence.get_labels("sentiment")[0]
        scores[precision] = (label.value, label.score)
    assert abs(scores["float32"][1] - scores["bfloat16"][1]) > 1e-6, "the two precisions must differ here"
    assert served["value"] == scores["bfloat16"][0]
    assert served["score"] == pytest.approx(scores["bfloat16"][1], abs=1e-6)


def test_another_owner_is_refused_while_the_model_row_is_cached(api: ApiSession, tmp_path: Path) -> None:
    # The row cache (filled by Alice's predict) answered Bob's predict without checking its owner.
    alice, bob = api.new_owner("alice"), api.new_owner("bob")
    model_id = register_tiny_tagger(alice, tmp_path)
    assert _predict(api, alice, model_id, {"texts": ["Anna lives in Berlin ."]}).status_code == 200
    r = _predict(api, bob, model_id, {"texts": ["Anna lives in Berlin ."]})
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == f"model {model_id} not found"
    r = _predict(
        api, bob, model_id, {"sentences": [["Anna", "lives"]], "return_probabilities_for_all_classes": True}
    )
    assert r.status_code == 404, r.text


def test_a_multi_label_answer_lists_its_labels_most_likely_first(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    # every label above the threshold, in the order negative, neutral, positive
    model_id = register_tiny_classifier(owner, tmp_path, multi_label=True, bias=[1.0, 3.0, 2.0])
    r = _predict(api, owner, model_id, {"texts": ["any text at all"]})
    assert r.status_code == 200, r.text
    answer = r.json()["sentences"][0]["labels"]
    assert [label["value"] for label in answer] == ["negative", "neutral", "positive"]
    assert [label["score"] for label in answer] == sorted((label["score"] for label in answer), reverse=True)


def test_the_sentence_limit_counts_sentences_after_splitting(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PREDICT_MAX_BATCH counts texts; one text of many short sentences made thousands of them.
    from service import limits

    monkeypatch.setattr(limits, "PREDICT_MAX_SENTENCES", 4)
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    two = "Anna sings. Bob runs."
    r = _predict(api, owner, model_id, {"texts": [two, two]})
    assert r.status_code == 200, r.text
    assert len(r.json()["sentences"]) == 4
    r = _predict(api, owner, model_id, {"texts": [two, two, "Carl waits."]})
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert error["field"] == "body.texts"
    assert error["message"] == (
        "the first 3 of 3 texts split into 5 sentences; at most 4 per request: send fewer or shorter texts"
    )
    # Unsplit, each text is one sentence.
    assert _predict(api, owner, model_id, {"texts": [two] * 4, "split_sentences": False}).status_code == 200
    r = _predict(api, owner, model_id, {"sentences": [["a"]] * 5})
    assert r.status_code == 422 and r.json()["errors"][0]["message"] == "at most 4 sentences per request"


def test_the_probability_limit_counts_tokens_times_the_tags_the_answer_lists(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import limits

    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    text = "George Washington went to Washington"  # 5 tokens
    r = _predict(api, owner, model_id, {"texts": [text], "return_probabilities_for_all_classes": True})
    assert r.status_code == 200, r.text
    tags = len(r.json()["sentences"][0]["tokens"][0]["all_tags"])
    assert tags == 4 * 3 + 1  # a span tagger's internal tags: BIOES x 3 labels, and O

    monkeypatch.setattr(limits, "PREDICT_MAX_PROBABILITY_CELLS", 5 * tags)
    body = {"texts": [text], "return_probabilities_for_all_classes": True}
    assert _predict(api, owner, model_id, body).status_code == 200
    body = {"texts": [text + " today"], "return_probabilities_for_all_classes": True}
    r = _predict(api, owner, model_id, body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    error = r.json()["errors"][0]
    assert error["field"] == "body.return_probabilities_for_all_classes"
    assert error["message"] == (
        f"{6 * tags} probabilities (6 tokens x {tags} tags) exceed the limit of {5 * tags}: "
        "send fewer or shorter texts, or leave return_probabilities_for_all_classes off"
    )
    # Without the probabilities the same request is answered.
    assert _predict(api, owner, model_id, {"texts": [text + " today"]}).status_code == 200


def test_a_crf_taggers_requests_are_limited_by_tokens_times_its_tags_squared(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Decoding compares every tag with every tag at each token: a 512-tag CRF took 489 s for a
    # request within the other limits.
    from service import limits

    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    tags = 4 * 3 + 1  # BIOES x 3 labels, and O
    monkeypatch.setattr(limits, "PREDICT_MAX_CRF_WORK", 5 * tags * tags)
    assert (
        _predict(api, owner, model_id, {"texts": ["George Washington went to Washington"]}).status_code == 200
    )
    r = _predict(api, owner, model_id, {"texts": ["George Washington went", "to Washington today"]})
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert error["field"] == "body.texts"
    assert error["message"] == (
        f"6 tokens; this model's CRF ({tags} tags) decodes at most 5 a request: send fewer or shorter texts"
    )
    r = _predict(api, owner, model_id, {"sentences": [["a", "b", "c"], ["d", "e", "f"]]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.sentences"
    # A tagger without a CRF decodes each token on its own: no such limit.
    no_crf = register_tiny_tagger(owner, tmp_path, label_type="upos", use_crf=False)
    assert _predict(api, owner, no_crf, {"sentences": [["a", "b", "c"], ["d", "e", "f"]]}).status_code == 200


def test_the_probability_limit_counts_a_classifiers_sentences_times_classes(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import limits

    monkeypatch.setattr(limits, "PREDICT_MAX_PROBABILITY_CELLS", 6)
    owner = api.new_owner()
    model_id = register_tiny_classifier(owner, tmp_path)
    body: dict[str, Any] = {"texts": ["great film", "awful"], "return_probabilities_for_all_classes": True}
    r = _predict(api, owner, model_id, body)
    assert r.status_code == 200, r.text
    assert [len(s["all_labels"]) for s in r.json()["sentences"]] == [3, 3]
    body["texts"].append("fine")
    r = _predict(api, owner, model_id, body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["message"] == (
        "9 probabilities (3 sentences x 3 classes) exceed the limit of 6: "
        "send fewer or shorter texts, or leave return_probabilities_for_all_classes off"
    )


def test_a_score_that_is_not_a_number_is_null_in_valid_json(api: ApiSession, tmp_path: Path) -> None:
    # pydantic-core wrote NaN, which is no JSON: a browser's JSON.parse failed on the whole answer.
    owner = api.new_owner()
    model = register_tiny_classifier(owner, tmp_path, bias=[float("nan"), 0.0, 0.0])
    for body in ({"texts": ["a b"]}, {"texts": ["a b " * 40] * 40}):  # small, and large (in parts)
        r = api.client.post(f"/models/{model}/predict", json=body, headers=owner.headers)
        assert r.status_code == 200, r.text
        answer = strict_json(r.text)
        assert {label["score"] for s in answer["sentences"] for label in s["labels"]} == {None}
