from __future__ import annotations

import base64
import json
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from service.db.models import Job, JobBatchLoss, JobEpochMetric
from service.db.session import session_scope
from tests.service.fixtures import (
    FASTTEXT_TRAIN,
    ApiSession,
    Owner,
    follow_pages,
    register_tiny_tagger,
    strict_json,
)

pytestmark = pytest.mark.postgres


def _submit(api: ApiSession, owner: Owner, spec: dict[str, Any]) -> Any:
    return api.client.post("/jobs", json=spec, headers=owner.headers)


def _fields(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return [e["field"] for e in response.json()["errors"]]


def test_submit_answers_202_with_url_and_resolved_spec(api: ApiSession) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    r = _submit(
        api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner", "trainer": {"max_epochs": 2}}
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == job["url"]
    assert job["url"].endswith(f"/jobs/{job['id']}")
    assert job["status"] == "queued" and job["queue"] == "cpu" and job["max_epochs"] == 2
    assert job["spec"]["name"] == "sequence_tagging-ner"
    assert job["spec"]["embeddings"] == [
        {"type": "word", "name": "glove", "fine_tune": False},
        {"type": "character", "char_embedding_dim": 25, "hidden_size_char": 25, "characters": "corpus"},
    ]
    assert job["spec"]["trainer"]["learning_rate"] == 0.1
    assert api.enqueued == [(job["id"], "cpu")]
    with session_scope() as session:
        assert session.get(Job, job["id"]).celery_task_id == "task-1"


def test_label_type_defaults_when_unambiguous(api: ApiSession) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner, train=FASTTEXT_TRAIN, format="fasttext")
    r = _submit(api, owner, {"task": "text_classification", "corpus": {"ids": [corpus_id]}})
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["label_type"] == "class"
    assert r.json()["spec"]["embeddings"][0]["type"] == "document_rnn"
    # The stored spec names a classifier's options, not a tagger's ("use_crf": true was there).
    assert r.json()["spec"]["model"] == {"multi_label": None, "multi_label_threshold": 0.5}
    # A tagging corpus with pos and ner needs an explicit choice.
    tagging = api.corpus(owner)
    assert _fields(_submit(api, owner, {"corpus": {"ids": [tagging]}})) == ["body.label_type"]


def test_more_labels_than_a_served_model_may_have_are_refused_at_submission(api: ApiSession) -> None:
    # A 300-type CRF tagger answered one predict of 64 sentences in 27.9 s, with +1.5 GB.
    owner = api.new_owner()
    many_types = "".join(f"w{i} B-T{i}\nx O\n\n" for i in range(130))  # BIOES: 521 CRF tags
    tagging = api.corpus(
        owner, train=many_types, options={"column_map": {"0": "text", "1": "ner"}}, dev="w0 B-T0\n\n"
    )
    r = _submit(api, owner, {"corpus": {"ids": [tagging]}, "label_type": "ner"})
    assert _fields(r) == ["body.label_type"]
    assert r.json()["detail"] == (
        "'ner' has 130 span labels make 521 CRF tags; a CRF may have at most 512 (its prediction cost grows "
        "with the square of its tags: at most 127 span labels with BIOES); "
        'train without it: "model": {"use_crf": false}'
    )
    r = _submit(api, owner, {"corpus": {"ids": [tagging]}, "label_type": "ner", "model": {"use_crf": False}})
    assert r.status_code == 202, r.text
    # more values than the corpus's statistics keep (the most common 1001): counted all the same
    classes = "".join(f"__label__c{i} text number {i}\n" for i in range(1500))
    classifying = api.corpus(owner, train=classes, format="fasttext", dev="__label__c0 text\n")
    r = _submit(api, owner, {"task": "text_classification", "corpus": {"ids": [classifying]}})
    assert _fields(r) == ["body.label_type"]
    assert r.json()["detail"] == "'class' has 1500 labels; a model may have at most 1000"


def test_without_a_fitting_label_type_the_error_says_what_the_task_needs_and_each_corpus_has(
    api: ApiSession,
) -> None:
    owner = api.new_owner()
    tagging = api.corpus(owner)
    r = _submit(api, owner, {"task": "text_classification", "corpus": {"ids": [tagging]}})
    assert _fields(r) == ["body.label_type"]
    detail = r.json()["detail"]
    assert detail.startswith("a text classifier needs sentence labels and none fits; ")
    assert f"corpus {tagging} (tiny) has ner (span), pos (token)" in detail
    text = api.corpus(owner, train="one line of text\nanother\n", format="text", name="lm-text")
    r = _submit(api, owner, {"corpus": {"ids": [text]}})
    assert _fields(r) == ["body.label_type"]
    assert r.json()["detail"] == (
        "a sequence tagger needs token or span labels and none fits; "
        f"corpus {text} (lm-text) is a text corpus for language models: no labels"
    )
    # several fitting types: the choice is listed
    r = _submit(api, owner, {"corpus": {"ids": [tagging]}})
    assert r.json()["errors"][0]["message"] == "choose the label type to learn: ner, pos"


def test_gpu_device_goes_to_the_gpu_queue_and_multi_corpus(api: ApiSession) -> None:
    owner = api.new_owner()
    a, b = api.corpus(owner), api.corpus(owner, name="second")
    r = _submit(api, owner, {"corpus": {"ids": [a, b]}, "label_type": "pos", "trainer": {"device": "gpu"}})
    assert r.status_code == 202, r.text
    assert r.json()["queue"] == "gpu"
    assert api.enqueued[-1][1] == "gpu"


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        ({"corpus": {"ids": []}}, ["body.corpus.ids"]),
        ({"corpus": {"ids": ["x"]}, "trainer": {"max_epochs": 0}}, ["body.trainer.max_epochs"]),
        ({"corpus": {"ids": ["x"]}, "trainer": {"learning_rate": -1}}, ["body.trainer.learning_rate"]),
        ({"corpus": {"ids": ["x"]}, "trainer": {"optimizer": "lbfgs"}}, ["body.trainer.optimizer"]),
        ({"corpus": {"ids": ["x"], "downsample": 1.5}}, ["body.corpus.downsample"]),
        ({"corpus": {"ids": ["x"]}, "embeddings": [{"type": "elmo"}]}, ["body.embeddings.0"]),
        (
            {"corpus": {"ids": ["x"]}, "embeddings": [{"type": "word", "name": "word2vec"}]},
            ["body.embeddings.0.name"],
        ),
        ({"corpus": {"ids": ["x"]}, "model": {"hidden_size": 8, "colour": "red"}}, ["body.model.colour"]),
        ({"corpus": {"ids": ["x"]}, "task": "parsing"}, ["body.task"]),
        (
            {"corpus": {"ids": ["x"]}, "embeddings": [{"type": "transformer_document"}]},
            ["body.embeddings"],
        ),
        (
            {"corpus": {"ids": ["x"]}, "task": "text_classification", "embeddings": [{"type": "word"}]},
            ["body.embeddings"],
        ),
        (
            {"corpus": {"ids": ["x"]}, "trainer": {"mini_batch_size": 4, "mini_batch_chunk_size": 8}},
            ["body.trainer.mini_batch_chunk_size"],
        ),
        ({"corpus": {"ids": ["x", "x"]}}, ["body.corpus"]),
        # JSON types are kept: a boolean is no number, a number no boolean, a string neither.
        ({"corpus": {"ids": ["x"]}, "trainer": {"max_epochs": True}}, ["body.trainer.max_epochs"]),
        ({"corpus": {"ids": ["x"]}, "trainer": {"seed": False}}, ["body.trainer.seed"]),
        ({"corpus": {"ids": ["x"]}, "trainer": {"learning_rate": "0.1"}}, ["body.trainer.learning_rate"]),
        ({"corpus": {"ids": ["x"]}, "model": {"use_crf": 0}}, ["body.model.use_crf"]),
        ({"corpus": {"ids": ["x"]}, "trainer": {"shuffle": "yes"}}, ["body.trainer.shuffle"]),
        ({"corpus": {"ids": [7]}}, ["body.corpus.ids.0"]),
    ],
)
def test_invalid_spec_fields_and_combinations(
    api: ApiSession, spec: dict[str, Any], fields: list[str]
) -> None:
    owner = api.new_owner()
    assert _fields(_submit(api, owner, spec)) == fields
    assert api.enqueued == []


def _job_rows() -> int:
    with session_scope() as session:
        return session.query(Job).count()


@pytest.mark.parametrize(
    ("path", "fields", "field"),
    [
        ("/jobs", '"trainer": {"min_learning_rate": Infinity}', "body.trainer.min_learning_rate"),
        ("/jobs", '"trainer": {"learning_rate": NaN}', "body.trainer.learning_rate"),
        ("/jobs", f'"trainer": {{"seed": {2**32}}}', "body.trainer.seed"),
        ("/jobs", f'"trainer": {{"seed": {10**30}}}', "body.trainer.seed"),
        ("/jobs/language-model", '"max_seconds": Infinity', "body.max_seconds"),
        ("/jobs/language-model", f'"seed": {2**64}', "body.seed"),
    ],
)
def test_non_finite_numbers_and_seeds_no_run_takes_are_422(
    api: ApiSession, path: str, fields: str, field: str
) -> None:
    # Python's JSON accepts NaN and Infinity; an infinite min_learning_rate was stored (PostgreSQL's
    # JSON refuses it) and a seed past torch's range made a job that failed at its first epoch.
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    head = (
        f'"corpus": {{"ids": ["{corpus_id}"]}}, "label_type": "ner"'
        if path == "/jobs"
        else f'"corpus_id": "{corpus_id}"'
    )
    r = api.client.post(
        path,
        content="{" + head + ", " + fields + "}",
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert _fields(r) == [field]
    assert _job_rows() == 0 and api.enqueued == []


@pytest.mark.parametrize("path", ["/jobs", "/jobs/language-model"])
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"corpus": {"ids": ["x"]},\n "label_type" "ner"}', "Expecting ':' delimiter at line 2, column 15"),
        (b'{"corpus": {"ids": ["x"]}, "seed": ' + b"9" * 5000 + b"}", "a number has too many digits"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"name": "\xff"}', "not UTF-8 (byte 10)"),
    ],
)
def test_a_body_that_is_not_json_is_a_422_problem_saying_why_and_where(
    api: ApiSession, path: str, body: bytes, reason: str
) -> None:
    # Syntax errors answered "JSON decode error" at the field "body.<offset>"; JSON that Python
    # refuses otherwise answered FastAPI's 400 "There was an error parsing the body".
    owner = api.new_owner()
    r = api.client.post(path, content=body, headers={**owner.headers, "Content-Type": "application/json"})
    assert _fields(r) == ["body"]
    assert r.json()["detail"] == f"the body is not valid JSON: {reason}"
    assert r.json()["errors"][0]["type"] == "json_invalid"
    assert _job_rows() == 0 and api.enqueued == []


@pytest.mark.parametrize("media_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_json_body_sent_as_another_media_type_says_so(api: ApiSession, media_type: str) -> None:
    # curl -d without -H "Content-Type: application/json" sends a form: the answer was
    # "Input should be a valid dictionary or object to extract fields from".
    owner = api.new_owner()
    r = api.client.post(
        "/jobs", content=b'{"corpus": {"ids": ["x"]}}', headers={**owner.headers, "Content-Type": media_type}
    )
    assert _fields(r) == ["body"]
    assert r.json()["errors"][0]["message"] == (
        f"send the body as JSON with Content-Type: application/json (this one is {media_type})"
    )
    assert _job_rows() == 0 and api.enqueued == []


def test_a_blank_name_is_refused_and_a_padded_one_trimmed(api: ApiSession) -> None:
    owner = api.new_owner()
    tagger = {"corpus": {"ids": [api.corpus(owner)]}, "label_type": "ner"}
    r = _submit(api, owner, {**tagger, "name": "   "})
    assert _fields(r) == ["body.name"] and "must not be blank" in r.json()["detail"]
    r = _submit(api, owner, {**tagger, "name": "  my tagger "})
    assert r.status_code == 202 and r.json()["name"] == "my tagger"
    # invisible characters are blank too, and come off the ends of a name
    r = _submit(api, owner, {**tagger, "name": "\u00a0\u200b"})
    assert _fields(r) == ["body.name"] and "must not be blank" in r.json()["detail"]
    r = _submit(api, owner, {**tagger, "name": "\u200emy tagger\u200b"})
    assert r.status_code == 202 and r.json()["name"] == "my tagger"
    # a right-to-left override would show "tagger-\u202egnp.exe" as "tagger-exe.png"
    r = _submit(api, owner, {**tagger, "name": "tagger-\u202egnp.exe"})
    assert (
        _fields(r) == ["body.name"]
        and "must not contain direction controls (found U+202E)" in r.json()["detail"]
    )


def test_model_options_of_the_other_task_are_refused_not_ignored(api: ApiSession) -> None:
    owner = api.new_owner()
    tagger = {"corpus": {"ids": [api.corpus(owner)]}, "label_type": "ner"}
    r = _submit(api, owner, {**tagger, "model": {"multi_label": True}})
    assert _fields(r) == ["body.model"]
    assert "multi_label: classifier option(s), which a sequence tagger does not have" in r.json()["detail"]
    classes = api.corpus(owner, train=FASTTEXT_TRAIN, format="fasttext")
    classifier = {"task": "text_classification", "corpus": {"ids": [classes]}}
    r = _submit(api, owner, {**classifier, "model": {"hidden_size": 64, "use_crf": False}})
    assert _fields(r) == ["body.model"]
    assert (
        "hidden_size, use_crf: tagger option(s), which a text classifier does not have" in r.json()["detail"]
    )
    assert _job_rows() == 0
    # the defaults written out are no mistake: a stored spec names every option
    assert _submit(api, owner, {**classifier, "model": {"hidden_size": 256}}).status_code == 202


def test_token_embeddings_inside_a_document_embedding_are_checked(api: ApiSession) -> None:
    # use_context inside document_pool was accepted on a corpus without documents, and a nested
    # flair model's error pointed at the wrong list.
    owner = api.new_owner()
    classes = api.corpus(owner, train=FASTTEXT_TRAIN, format="fasttext")
    inner = [
        {"type": "word"},
        {"type": "transformer", "use_context": True},
        {"type": "flair", "model": "nope"},
    ]
    spec = {
        "task": "text_classification",
        "corpus": {"ids": [classes]},
        "embeddings": [{"type": "document_pool", "embeddings": inner}],
    }
    r = _submit(api, owner, spec)
    assert _fields(r) == [
        "body.embeddings.0.embeddings.1.use_context",
        "body.embeddings.0.embeddings.2.model",
    ]
    assert "document boundaries" in r.json()["detail"]
    assert _job_rows() == 0 and api.enqueued == []


@pytest.mark.parametrize("count", [-5, 513, 10**100])
def test_a_use_context_count_out_of_range_is_422(api: ApiSession, count: int) -> None:
    # A huge count passed and had every sentence encode its whole document again.
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    spec = {
        "corpus": {"ids": [corpus_id]},
        "label_type": "ner",
        "embeddings": [{"type": "transformer", "use_context": count}],
    }
    r = _submit(api, owner, spec)
    assert _fields(r) == ["body.embeddings.0.use_context"]
    assert f"token count from 0 to 512, got {count}" in r.json()["detail"]
    assert _job_rows() == 0


@pytest.mark.parametrize(
    ("embedding", "layers", "shown"),
    [
        ("transformer", -1, "-1"),
        ("transformer", "-1, -2", "'-1, -2'"),
        ("transformer_document", [-1, -2], "[-1, -2]"),
    ],
)
def test_layers_not_written_as_a_string_of_indices_are_422_saying_how_to_write_them(
    api: ApiSession, embedding: str, layers: object, shown: str
) -> None:
    # The answers were "Input should be a valid string" for a number and the pattern itself,
    # '^(all|-?\d+(,-?\d+)*)$', for a space after a comma.
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    spec = {"corpus": {"ids": [corpus_id]}, "embeddings": [{"type": embedding, "layers": layers}]}
    r = _submit(api, owner, spec)
    assert _fields(r) == ["body.embeddings.0.layers"]
    assert r.json()["errors"][0]["message"] == (
        "must be a string: 'all', or layer indices joined by commas without spaces, such as '-1' or "
        f"'-1,-2,-3,-4'; got {shown}"
    )
    assert _job_rows() == 0


def test_use_context_on_a_corpus_read_as_one_document_per_file(api: ApiSession) -> None:
    # A column file without -DOCSTART- lines (the shared CoNLL-03 copy) can still give FLERT context.
    owner = api.new_owner()
    one_document = api.corpus(
        owner,
        train="EU B-ORG\nrejects O\n\nPeter B-PER\n",
        options={"column_map": {"0": "text", "1": "ner"}, "whole_file_document": True},
    )
    spec = {
        "corpus": {"ids": [one_document]},
        "label_type": "ner",
        "embeddings": [{"type": "transformer", "use_context": True}],
    }
    r = _submit(api, owner, spec)
    assert r.status_code == 202, r.text


def test_checks_against_the_corpora(api: ApiSession) -> None:
    owner = api.new_owner()
    tagging = api.corpus(owner)
    classes = api.corpus(owner, train=FASTTEXT_TRAIN, format="fasttext")
    no_docs = api.corpus(
        owner, train="EU B-ORG\nrejects O\n\nPeter B-PER\n", options={"column_map": {"0": "text", "1": "ner"}}
    )

    r = _submit(api, owner, {"corpus": {"ids": [tagging, "missing-id"]}, "label_type": "ner"})
    assert _fields(r) == ["body.corpus.ids.1"]
    assert "missing-id" in r.json()["detail"]

    r = _submit(api, owner, {"corpus": {"ids": [tagging]}, "label_type": "sentiment"})
    assert _fields(r) == ["body.label_type"]
    assert "has no label type 'sentiment'" in r.json()["errors"][0]["message"]
    assert "ner (span)" in r.json()["errors"][0]["message"]

    r = _submit(api, owner, {"corpus": {"ids": [classes]}, "label_type": "class"})
    assert _fields(r) == ["body.label_type"]
    assert "sequence tagger needs token or span labels" in r.json()["errors"][0]["message"]

    r = _submit(
        api,
        owner,
        {
            "corpus": {"ids": [no_docs]},
            "label_type": "ner",
            "embeddings": [{"type": "transformer", "use_context": True}],
        },
    )
    assert _fields(r) == ["body.embeddings.0.use_context"]
    assert "document boundaries" in r.json()["detail"]
    assert '"whole_file_document": true' in r.json()["detail"]

    r = _submit(
        api,
        owner,
        {
            "corpus": {"ids": [tagging]},
            "label_type": "ner",
            "embeddings": [{"type": "flair", "model": "nope"}],
        },
    )
    assert _fields(r) == ["body.embeddings.0.model"]

    # A classifier of one class learns nothing: said at submission, not after a run.
    one_class = api.corpus(owner, train="__label__pos I love it\n__label__pos great fun\n", format="fasttext")
    classifier = {"task": "text_classification", "corpus": {"ids": [one_class]}, "label_type": "class"}
    r = _submit(api, owner, classifier)
    assert _fields(r) == ["body.label_type"]
    assert "'class' has one class only in the training data ('pos')" in r.json()["detail"]
    assert api.enqueued == []
    with session_scope() as session:
        assert session.query(Job).count() == 0
    # A tagger of a label type with no spans in train would fail at its start.
    all_o = api.corpus(
        owner, train="Paris O\nis O\n\nBerlin O\nrocks O\n", options={"column_map": {"0": "text", "1": "ner"}}
    )
    r = _submit(api, owner, {"corpus": {"ids": [all_o]}, "label_type": "ner"})
    assert _fields(r) == ["body.label_type"]
    assert (
        f"the train split of {all_o} (" in r.json()["detail"] and "has no 'ner' labels" in r.json()["detail"]
    )
    # ...unless it learns yes/no for that class, or another corpus adds a class
    r = _submit(api, owner, {**classifier, "model": {"multi_label": True}})
    assert r.status_code == 202, r.text
    r = _submit(api, owner, {**classifier, "corpus": {"ids": [one_class, classes]}})
    assert r.status_code == 202, r.text


def test_list_filter_and_get(api: ApiSession) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    ids = [
        _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}).json()["id"]
        for _ in range(3)
    ]
    api.client.post(f"/jobs/{ids[0]}/cancel", headers=owner.headers)
    listed = api.client.get("/jobs", headers=owner.headers).json()["items"]
    assert sorted(j["id"] for j in listed) == sorted(ids)
    queued = api.client.get("/jobs?status=queued", headers=owner.headers).json()["items"]
    assert sorted(j["id"] for j in queued) == sorted(ids[1:])
    assert [
        j["id"] for j in api.client.get("/jobs?status=cancelled", headers=owner.headers).json()["items"]
    ] == ids[:1]
    r = api.client.get("/jobs?status=sleeping", headers=owner.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.status"
    one = api.client.get(f"/jobs/{ids[1]}", headers=owner.headers).json()
    for key in ("epoch", "batch", "percent", "eta_seconds", "learning_rate", "best_dev_score", "error"):
        assert key in one
    assert api.client.get("/jobs/unknown", headers=owner.headers).status_code == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "query.limit"), ("limit=1001", "query.limit"), ("offset=-1", "query.offset")]
    + [(f"offset={2**63}", "query.offset"), ("offset=99999999999999999999", "query.offset")],
)
def test_pagination_out_of_range_is_422(api: ApiSession, query: str, field: str) -> None:
    # An offset past a signed 64-bit integer reached the database driver and answered 500.
    owner = api.new_owner()
    for listing in ("/jobs", "/corpora", "/models"):
        assert _fields(api.client.get(f"{listing}?{query}", headers=owner.headers)) == [field], listing
        r = api.client.get(f"{listing}?offset={2**63 - 1}", headers=owner.headers)
        assert r.status_code == 200 and r.json()["items"] == []


def test_corpora_and_models_are_listed_newest_first_a_page_at_a_time(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    corpora = [api.corpus(owner, name=f"c{i}") for i in range(3)]
    models = [register_tiny_tagger(owner, tmp_path / str(i)) for i in range(3)]
    for listing, ids in (("/corpora", corpora), ("/models", models)):
        page = api.client.get(f"{listing}?limit=2", headers=owner.headers).json()["items"]
        rest = api.client.get(f"{listing}?limit=2&offset=2", headers=owner.headers).json()["items"]
        assert [item["id"] for item in page + rest] == ids[::-1], listing


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def test_following_next_lists_each_job_once_while_jobs_are_created(api: ApiSession) -> None:
    owner = api.new_owner()
    spec = {"corpus": {"ids": [api.corpus(owner)]}, "label_type": "ner"}

    def submit() -> str:
        return str(_submit(api, owner, spec).json()["id"])

    ids = [submit() for _ in range(5)]
    walked = follow_pages(api.client, "/jobs?limit=2", owner.headers, between=lambda page: submit())
    # the jobs created during the walk are newer than its first page: none shows, none is repeated
    assert _ids(walked) == ids[::-1]

    # offset paging, the bug: a job created between two pages pushes the last one seen onto the next
    first = api.client.get("/jobs?limit=2", headers=owner.headers).json()["items"]
    submit()
    second = api.client.get("/jobs?limit=2&offset=2", headers=owner.headers).json()["items"]
    assert second[0]["id"] == first[-1]["id"]


def test_next_keeps_the_filters_and_limit_and_is_null_on_the_last_page(api: ApiSession) -> None:
    owner = api.new_owner()
    spec = {"corpus": {"ids": [api.corpus(owner)]}, "label_type": "ner"}
    ids = [_submit(api, owner, spec).json()["id"] for _ in range(5)]
    api.client.post(f"/jobs/{ids[2]}/cancel", headers=owner.headers)
    queued = [job_id for job_id in ids[::-1] if job_id != ids[2]]

    body = api.client.get("/jobs?status=queued&limit=2&offset=0", headers=owner.headers).json()
    assert _ids(body["items"]) == queued[:2]
    path, _, query = body["next"].partition("?")
    params = dict(pair.split("=", 1) for pair in query.split("&"))
    assert path == "/jobs" and set(params) == {"status", "limit", "cursor"}  # no offset next to a cursor
    assert (params["status"], params["limit"]) == ("queued", "2")
    assert _ids(follow_pages(api.client, body["next"], owner.headers)) == queued[2:]
    # a page that ends exactly at the last job is the last page
    for url in ("/jobs?limit=5", f"/jobs?limit=2&cursor={params['cursor']}&status=queued"):
        assert api.client.get(url, headers=owner.headers).json()["next"] is None, url
    # paging that starts at an offset goes on by cursor from there
    assert _ids(follow_pages(api.client, "/jobs?limit=2&offset=1", owner.headers)) == ids[::-1][1:]


def test_jobs_created_at_the_same_instant_are_each_listed_once(api: ApiSession) -> None:
    owner = api.new_owner()
    spec = {"corpus": {"ids": [api.corpus(owner)]}, "label_type": "ner"}
    ids = [_submit(api, owner, spec).json()["id"] for _ in range(7)]
    # No microseconds (an isoformat() without them drops ".000000"), a microsecond later, and a
    # time given in another zone: a cursor that lost any of them would skip or repeat jobs.
    tie = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    a_microsecond_later = datetime(2024, 5, 6, 7, 8, 9, 1, tzinfo=UTC)
    later = datetime(2024, 5, 6, 9, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))  # 07:08:09.123456Z
    times = [tie, later, tie, a_microsecond_later, later, tie, later]
    with session_scope() as session:
        for job_id, created_at in zip(ids, times, strict=True):
            session.get(Job, job_id).created_at = created_at
    created = dict(zip(ids, times, strict=True))
    expected = sorted(ids)  # then newest first; a stable sort keeps id order within a time
    expected.sort(key=created.__getitem__, reverse=True)
    assert _ids(api.client.get("/jobs", headers=owner.headers).json()["items"]) == expected
    for limit in (1, 2, 3, 4):
        assert _ids(follow_pages(api.client, f"/jobs?limit={limit}", owner.headers)) == expected, limit


def test_a_cursor_that_does_not_decode_is_422_naming_it(api: ApiSession) -> None:
    owner = api.new_owner()
    for name in ("a", "b"):
        api.corpus(owner, name=name)
    corpora_cursor = (
        api.client.get("/corpora?limit=1", headers=owner.headers).json()["next"].split("cursor=")[1]
    )

    def encoded(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    for listing in ("jobs", "corpora", "models"):
        good = {"l": listing, "t": "2024-05-06T07:08:09.000000+00:00", "i": "x"}
        garbage = [
            "garbage!!",
            "",
            "é",
            corpora_cursor[:-4],  # tampered: cut short
            base64.urlsafe_b64encode(b"\xff\xfe").decode(),
            encoded("not an object"),
            encoded([good["t"], good["i"]]),
            encoded({**good, "extra": 1}),
            encoded({**good, "i": 7}),
            encoded({**good, "t": "yesterday"}),
            encoded({**good, "t": "2024-05-06T07:08:09"}),  # naive: which zone?
            encoded({**good, "t": "0001-01-01T00:00:00+14:00"}),  # before year 1 in UTC
            encoded({**good, "t": "9999-12-31T23:00:00-05:00"}),  # after year 9999 in UTC
            encoded({**good, "i": "\ud800"}),  # no database takes these (a 500)
            encoded({**good, "i": "a\u0000"}),
        ]
        for cursor in garbage:
            r = api.client.get(f"/{listing}", params={"cursor": cursor}, headers=owner.headers)
            assert _fields(r) == ["query.cursor"], (listing, cursor)
            assert "not a cursor of this listing" in r.json()["errors"][0]["message"]
        # well formed: a position in the listing, even one no page gave
        r = api.client.get(f"/{listing}", params={"cursor": encoded(good)}, headers=owner.headers)
        assert r.status_code == 200 and r.json() == {"items": [], "next": None}
        assert _fields(
            api.client.get(f"/{listing}", params={"cursor": "a" * 600}, headers=owner.headers)
        ) == ["query.cursor"]
    # another listing's cursor
    r = api.client.get("/jobs", params={"cursor": corpora_cursor}, headers=owner.headers)
    assert _fields(r) == ["query.cursor"]
    assert r.json()["errors"][0]["message"].startswith("a cursor of corpora, not of jobs")


def test_a_cursor_with_an_offset_is_422_naming_the_offset(api: ApiSession) -> None:
    owner = api.new_owner()
    for name in ("a", "b"):
        api.corpus(owner, name=name)
    next_page = api.client.get("/corpora?limit=1", headers=owner.headers).json()["next"]
    r = api.client.get(f"{next_page}&offset=1", headers=owner.headers)
    assert _fields(r) == ["query.offset"]
    assert "cursor or offset, not both" in r.json()["detail"]
    assert len(api.client.get(f"{next_page}&offset=0", headers=owner.headers).json()["items"]) == 1


def _record_progress(job_id: str, status: str = "running") -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        job.status = status
        job.epoch, job.batch, job.batches_per_epoch, job.percent = 2, 1, 3, 77.0
        job.learning_rate, job.best_dev_score, job.eta_seconds = 0.05, 0.8, 12.0
        if status == "completed":
            job.finished_at = datetime.now(UTC)
        for epoch in (1, 2):
            session.add(
                JobEpochMetric(
                    job_id=job_id,
                    epoch=epoch,
                    train_loss=2.0 / epoch,
                    dev_loss=2.5 / epoch,
                    dev_main_score=0.4 * epoch,
                    learning_rate=0.1 / epoch,
                    is_best=True,
                    bad_epochs=0,
                    seconds=1.5,
                )
            )
            for batch in (1, 2, 3):
                session.add(
                    JobBatchLoss(
                        job_id=job_id, epoch=epoch, batch=batch, loss=3.0 / (epoch + batch), learning_rate=0.1
                    )
                )


def test_metrics_and_curves(api: ApiSession) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    job_id = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}).json()["id"]
    empty = api.client.get(f"/jobs/{job_id}/curves.png", headers=owner.headers)
    assert empty.status_code == 200 and empty.content.startswith(b"\x89PNG")
    _record_progress(job_id)
    metrics = api.client.get(f"/jobs/{job_id}/metrics", headers=owner.headers).json()
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["epochs"][1]["dev_main_score"] == pytest.approx(0.8)
    assert [(b["epoch"], b["batch"]) for b in metrics["batches"]] == [
        (1, 1),
        (1, 2),
        (1, 3),
        (2, 1),
        (2, 2),
        (2, 3),
    ]
    epochs_only = api.client.get(f"/jobs/{job_id}/metrics?batches=false", headers=owner.headers).json()
    assert epochs_only == {**metrics, "batches": []}
    png = api.client.get(f"/jobs/{job_id}/curves.png", headers=owner.headers)
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG") and len(png.content) > len(empty.content) // 2
    job = api.client.get(f"/jobs/{job_id}", headers=owner.headers).json()
    assert (job["epoch"], job["batch"], job["percent"], job["best_dev_score"]) == (2, 1, 77.0, 0.8)


def test_a_job_from_before_the_points_were_bounded_answers_at_most_200_an_epoch(api: ApiSession) -> None:
    # Workers once wrote a row per batch: 525,000 rows made a 38 MB answer in 8.9 s.
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    job_id = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}).json()["id"]
    with session_scope() as session:
        session.add_all(
            JobBatchLoss(job_id=job_id, epoch=1, batch=b, loss=float(b), learning_rate=0.1 - b / 1e5)
            for b in range(1, 1001)
        )
        session.add_all(
            JobBatchLoss(job_id=job_id, epoch=2, batch=b, loss=1.0, learning_rate=0.05) for b in (1, 2)
        )
        session.add_all(  # a diverging epoch: its NaN is stored as NULL
            JobBatchLoss(
                job_id=job_id, epoch=3, batch=b, loss=float("nan") if b == 7 else 2.0, learning_rate=0.1
            )
            for b in range(1, 301)
        )
    batches = api.client.get(f"/jobs/{job_id}/metrics", headers=owner.headers).json()["batches"]
    first = [b for b in batches if b["epoch"] == 1]
    # 1,000 batches: a point per 5, the mean of their losses, the rate of the last of them
    assert [b["batch"] for b in first] == list(range(5, 1001, 5))
    assert first[0]["loss"] == pytest.approx((1 + 2 + 3 + 4 + 5) / 5)
    assert first[-1]["loss"] == pytest.approx(998.0) and first[-1]["learning_rate"] == pytest.approx(0.09)
    # an epoch within the bound is answered as stored
    assert [(b["batch"], b["loss"]) for b in batches if b["epoch"] == 2] == [(1, 1.0), (2, 1.0)]
    third = {b["batch"]: b["loss"] for b in batches if b["epoch"] == 3}
    assert len(third) == 150 and third[8] is None and {third[6], third[10], third[300]} == {2.0}


def test_a_diverged_runs_nan_and_infinite_losses_answer_null(api: ApiSession) -> None:
    # JSON has no NaN: PostgreSQL kept a diverging run's NaN losses, and the job's event stream
    # wrote them as NaN, which a browser's JSON.parse refuses; rows stored so by older versions
    # read as null too. (On SQLite the write itself failed: tests/worker/test_progress.py.)
    from sqlalchemy import text

    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    job_id = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}).json()["id"]
    nan, inf = float("nan"), float("inf")
    with session_scope() as session:
        session.add(JobBatchLoss(job_id=job_id, epoch=1, batch=1, loss=nan, learning_rate=0.1))
        session.add(JobBatchLoss(job_id=job_id, epoch=1, batch=2, loss=1.5, learning_rate=inf))
        session.add(JobEpochMetric(job_id=job_id, epoch=1, train_loss=inf, dev_loss=nan, is_best=False))
        job_row = session.get(Job, job_id)
        job_row.train_loss, job_row.status = nan, "failed"
    with session_scope() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("UPDATE jobs SET best_dev_score = 'NaN', learning_rate = '-Infinity'"))
            session.execute(text("UPDATE job_epoch_metrics SET dev_f1 = 'NaN'"))
            session.execute(text("UPDATE job_batch_losses SET loss = 'Infinity' WHERE batch = 1"))
    job = api.client.get(f"/jobs/{job_id}", headers=owner.headers).json()
    assert (job["train_loss"], job["best_dev_score"], job["learning_rate"]) == (None, None, None)
    metrics = api.client.get(f"/jobs/{job_id}/metrics", headers=owner.headers).json()
    assert [(b["loss"], b["learning_rate"]) for b in metrics["batches"]] == [(None, 0.1), (1.5, None)]
    epoch = metrics["epochs"][0]
    assert (epoch["train_loss"], epoch["dev_loss"], epoch["dev_f1"]) == (None, None, None)
    png = api.client.get(f"/jobs/{job_id}/curves.png", headers=owner.headers)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert api.client.get("/jobs", headers=owner.headers).status_code == 200
    with api.client.stream("GET", f"/jobs/{job_id}/events", headers=owner.headers) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    events = [strict_json(d) for d in data]
    assert (events[0]["train_loss"], events[0]["dev_loss"]) == (None, None)
    assert events[-1]["train_loss"] is None


def test_events_stream_until_the_job_ends(api: ApiSession) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    job_id = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}).json()["id"]
    _record_progress(job_id, status="completed")
    with api.client.stream("GET", f"/jobs/{job_id}/events", headers=owner.headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    events = [block.split("\n")[0] for block in text.strip().split("\n\n")]
    assert events == ["event: epoch", "event: epoch", "event: end"]
    assert '"status":"completed"' in text


def test_cancel_and_resume(api: ApiSession) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    job_id = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}).json()["id"]
    r = api.client.post(f"/jobs/{job_id}/resume", headers=owner.headers)
    assert r.status_code == 409
    # Cancelled in epoch 3 of 4: the resumed run starts again from the checkpoint of epoch 2.
    with session_scope() as session:
        job = session.get(Job, job_id)
        job.epoch, job.max_epochs, job.batch, job.percent, job.eta_seconds = 2, 4, 40, 62.5, 60.0
        job.checkpoint_key = f"jobs/{job_id}/checkpoints/epoch-0002-run1"
    r = api.client.post(f"/jobs/{job_id}/cancel", headers=owner.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert api.client.post(f"/jobs/{job_id}/cancel", headers=owner.headers).status_code == 409
    r = api.client.post(f"/jobs/{job_id}/resume", headers=owner.headers)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.json()["cancel_requested"] is False
    progress = {k: r.json()[k] for k in ("epoch", "batch", "percent", "eta_seconds")}
    assert progress == {"epoch": 2, "batch": 0, "percent": 50.0, "eta_seconds": None}
    assert [q for q, _ in api.enqueued] == [job_id, job_id]
    # A running job (held by a worker) only gets the flag; the worker stops it.
    with session_scope() as session:
        job = session.get(Job, job_id)
        job.status, job.lease_owner = "running", "worker-1"
        job.lease_expires_at = datetime(2999, 1, 1, tzinfo=UTC)
    r = api.client.post(f"/jobs/{job_id}/cancel", headers=owner.headers)
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True


def test_resuming_a_failed_job_starts_its_storage_retries_afresh(api: ApiSession) -> None:
    # A job that failed after running out of storage retries kept its count and retry time on
    # resume: the reaper held it back, and its first storage hiccup failed it again at once.
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    job_id = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}).json()["id"]
    with session_scope() as session:
        job = session.get(Job, job_id)
        job.status, job.error, job.storage_retries = "failed", "storage unavailable", 10
        job.retry_at = datetime(2999, 1, 1, tzinfo=UTC)
    r = api.client.post(f"/jobs/{job_id}/resume", headers=owner.headers)
    assert r.status_code == 202, r.text
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.storage_retries, job.retry_at, job.error) == ("queued", 0, None, None)


def test_a_job_whose_corpus_was_deleted_is_not_resumed(api: ApiSession) -> None:
    # A finished job no longer holds its corpus; resuming it used to queue a run that failed.
    owner = api.new_owner()
    kept, deleted = api.corpus(owner), api.corpus(owner)
    spec = {"corpus": {"ids": [kept, deleted]}, "label_type": "ner"}
    job_id = _submit(api, owner, spec).json()["id"]
    assert api.client.post(f"/jobs/{job_id}/cancel", headers=owner.headers).status_code == 200
    assert api.client.delete(f"/corpora/{deleted}", headers=owner.headers).status_code == 204
    r = api.client.post(f"/jobs/{job_id}/resume", headers=owner.headers)
    assert r.status_code == 409, r.text
    assert (
        r.json()["detail"]
        == f"job {job_id} cannot be resumed: corpus {deleted} deleted since it was submitted"
    )
    assert api.client.get(f"/jobs/{job_id}", headers=owner.headers).json()["status"] == "cancelled"
    assert [q for q, _ in api.enqueued] == [job_id]


def test_a_spec_stored_by_an_older_version_resumes_or_says_which_field_stops_it(api: ApiSession) -> None:
    # Older versions stored a classifier spec with tagger options (and ignored them), or a
    # transformer by a path: resuming such a job answered 500
    owner = api.new_owner()
    classes = api.corpus(owner, train=FASTTEXT_TRAIN, format="fasttext")
    job_id = _submit(api, owner, {"task": "text_classification", "corpus": {"ids": [classes]}}).json()["id"]
    assert api.client.post(f"/jobs/{job_id}/cancel", headers=owner.headers).status_code == 200
    with session_scope() as session:
        job = session.get(Job, job_id)
        job.spec = {**job.spec, "model": {**job.spec["model"], "hidden_size": 64, "use_crf": True}}
    r = api.client.post(f"/jobs/{job_id}/resume", headers=owner.headers)
    assert r.status_code == 202, r.text
    assert api.client.post(f"/jobs/{job_id}/cancel", headers=owner.headers).status_code == 200
    # names that newer versions refuse (a direction control, only invisible characters)
    for name in ("tagger-\u202egnp.exe", "\u200b"):
        with session_scope() as session:
            job = session.get(Job, job_id)
            job.spec = {**job.spec, "name": name}
        r = api.client.post(f"/jobs/{job_id}/resume", headers=owner.headers)
        assert r.status_code == 202, r.text
        assert api.client.post(f"/jobs/{job_id}/cancel", headers=owner.headers).status_code == 200
    with session_scope() as session:
        job = session.get(Job, job_id)
        embedding = {"type": "transformer_document", "model": "/nonexistent/minilm"}
        job.spec = {**job.spec, "embeddings": [embedding]}
    r = api.client.post(f"/jobs/{job_id}/resume", headers=owner.headers)
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"job {job_id} cannot be resumed: the job's spec, stored by an older Tagsmith")
    assert "embeddings.0.transformer_document.model" in detail and "\n" not in detail


def test_an_unreachable_queue_leaves_the_job_queued_for_the_reaper_to_send(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It answered 503 and failed the job: each retry of the client made one more failed job, and a
    # resumed job went from cancelled to failed. A worker's reaper sends a queued job that has no
    # message once the broker answers (tests/worker/test_lease.py).
    from service import queue

    def broken(job_id: str, queue_name: str) -> str:
        raise ConnectionError("no broker")

    monkeypatch.setattr(queue, "enqueue_job", broken)
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    r = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    job = api.client.get(f"/jobs/{job_id}", headers=owner.headers).json()
    assert (job["status"], job["error"]) == ("queued", None)
    assert api.client.post(f"/jobs/{job_id}/cancel", headers=owner.headers).status_code == 200
    r = api.client.post(f"/jobs/{job_id}/resume", headers=owner.headers)
    assert r.status_code == 202, r.text
    assert api.client.get(f"/jobs/{job_id}", headers=owner.headers).json()["status"] == "queued"


def test_an_api_without_a_broker_url_keeps_the_job_queued_and_sends_nothing(
    service_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Without TAGSMITH_BROKER_URL Celery fell back to amqp://localhost: the job message went to a
    # RabbitMQ on the API's machine (or into connection retries), never to a Tagsmith worker.
    from fastapi.testclient import TestClient

    from service import queue
    from service.app import create_app

    with pytest.raises(queue.NoBroker, match="TAGSMITH_BROKER_URL is not set"):
        queue.enqueue_job("some-job", "cpu")
    with TestClient(create_app()) as client:
        api = ApiSession(client=client)
        owner = api.new_owner()
        corpus_id = api.corpus(owner)
        with caplog.at_level("WARNING", logger="service.logic.jobs"):
            r = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        job = client.get(f"/jobs/{job_id}", headers=owner.headers).json()
        assert (job["status"], job["note"]) == ("queued", queue.NO_BROKER)
    with session_scope() as session:
        assert session.get(Job, job_id).celery_task_id is None
    assert f"job {job_id} stays queued: TAGSMITH_BROKER_URL is not set" in caplog.text


def test_events_follow_a_running_job(api: ApiSession, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import reset_settings

    monkeypatch.setenv("TAGSMITH_EVENTS_POLL_SECONDS", "0.05")
    reset_settings()
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    job_id = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}).json()["id"]
    seen: list[str] = []
    with api.client.stream("GET", f"/jobs/{job_id}/events", headers=owner.headers) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                seen.append(line[7:])
                if seen == ["progress"]:
                    _record_progress(job_id)  # running, two epochs done
                elif seen[-1] == "epoch" and seen.count("epoch") == 2:
                    with session_scope() as session:
                        session.get(Job, job_id).status = "failed"
    assert seen[0] == "progress" and seen[-1] == "end"
    assert seen.count("epoch") == 2 and "progress" in seen[1:]


def _database_away_for(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """The stream's job read fails as a lost connection does while ``outage["polls"]`` > 0 (one
    per failed poll)."""
    from sqlalchemy.exc import OperationalError

    from service.logic import jobs as job_logic

    outage = {"polls": 0.0}
    real_get_job = job_logic.get_job

    def get_job(owner_id: str, job_id: str) -> Job:
        if outage["polls"] > 0:
            outage["polls"] -= 1
            raise OperationalError("SELECT jobs", {}, Exception("connection refused"))
        return real_get_job(owner_id, job_id)

    monkeypatch.setattr(job_logic, "get_job", get_job)
    return outage


def test_events_ride_out_a_database_outage(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A 6 s database cut ended the stream mid-transfer, with no event and ~100 lines of chained
    # tracebacks in the log.
    from service.settings import reset_settings

    monkeypatch.setenv("TAGSMITH_EVENTS_POLL_SECONDS", "0.05")
    reset_settings()
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    job_id = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}).json()["id"]
    outage = _database_away_for(monkeypatch)
    seen: list[str] = []
    with (
        caplog.at_level("INFO", logger="service.logic.job_events"),
        api.client.stream("GET", f"/jobs/{job_id}/events", headers=owner.headers) as r,
    ):
        for line in r.iter_lines():
            if line.startswith(":"):
                seen.append(line)
            elif line.startswith("event: "):
                seen.append(line[7:])
                if seen == ["progress"]:
                    outage["polls"] = 6  # the database goes away for a while...
                    _record_progress(job_id)  # ...and the job goes on: running, two epochs done
                elif seen[-1] == "epoch" and seen.count("epoch") == 2:
                    with session_scope() as session:
                        session.get(Job, job_id).status = "failed"
    assert outage["polls"] == 0
    assert seen[:2] == ["progress", ": database unavailable, retrying"], seen
    events = [s for s in seen if not s.startswith(":")]
    assert events[-1] == "end" and events.count("epoch") == 2 and "progress" in events[1:], seen
    lines = [m for m in caplog.messages if f"events of job {job_id}" in m]
    assert len(lines) == 2, caplog.messages
    assert "database unavailable (connection refused); polling on" in lines[0]
    assert "database back after" in lines[1]


def test_events_end_with_an_error_when_the_database_stays_away(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.logic import job_events
    from service.settings import reset_settings

    monkeypatch.setenv("TAGSMITH_EVENTS_POLL_SECONDS", "0.05")
    reset_settings()
    monkeypatch.setattr(job_events, "OUTAGE_LIMIT_S", 0.5)
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    job_id = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}).json()["id"]
    outage = _database_away_for(monkeypatch)
    lines: list[str] = []
    with api.client.stream("GET", f"/jobs/{job_id}/events", headers=owner.headers) as r:
        for line in r.iter_lines():
            lines.append(line)
            if line == "event: progress":
                outage["polls"] = float("inf")  # from now on
    blocks = "\n".join(lines).strip().split("\n\n")
    assert [block.split("\n")[0] for block in blocks] == [
        "event: progress",
        ": database unavailable, retrying",
        "event: error",
    ], lines
    assert blocks[-1] == (
        "event: error\n"
        'data: {"error":"database-unavailable",'
        '"detail":"the database has been unavailable for 0.5 s; connect again later"}'
    )


def test_transformers_are_named_never_paths_and_checked_on_submit(api: ApiSession) -> None:
    # A path let any user make a worker read any folder on its machine, and a layer the model
    # lacks was accepted and then failed in the worker.
    from service.settings import get_settings
    from tests.engine.test_embeddings_transformer import build_tiny_bert

    root = get_settings().transformers_root
    build_tiny_bert(root / "tiny-bert")  # 2 layers: 3 hidden states
    (root / "half-copied").mkdir()  # no config.json: not a model
    (root / "pickled").mkdir()  # weights only in a pickle, which is never loaded
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(root / "tiny-bert" / name, root / "pickled")
    (root / "pickled" / "pytorch_model.bin").write_bytes(b"not loaded")
    owner = api.new_owner()
    classes = api.corpus(owner, train=FASTTEXT_TRAIN, format="fasttext")

    def spec(**embedding: Any) -> dict[str, Any]:
        return {
            "task": "text_classification",
            "corpus": {"ids": [classes]},
            "embeddings": [{"type": "transformer_document", **embedding}],
        }

    for path in ("/etc", str(root / "tiny-bert"), "../tiny-bert", "tiny-bert/", ".", ".."):
        r = _submit(api, owner, spec(model=path))
        assert _fields(r) == ["body.embeddings.0.model"], path
        assert "no paths" in r.json()["detail"]

    for name in ("bert-large-cased", "half-copied"):
        r = _submit(api, owner, spec(model=name))
        assert _fields(r) == ["body.embeddings.0.model"]
        assert f"no transformer {name!r}" in r.json()["detail"]
        assert "available: minilm, all-minilm-l6-v2, pickled, tiny-bert " in r.json()["detail"]

    r = _submit(api, owner, spec(model="pickled"))
    assert _fields(r) == ["body.embeddings.0.model"]
    assert "folder 'pickled' has no model.safetensors" in r.json()["detail"]
    assert str(root) not in r.json()["detail"]

    r = _submit(api, owner, spec(model="tiny-bert", layers="-1,-4"))
    assert _fields(r) == ["body.embeddings.0.layers"]
    assert "layer -4 out of range for a model with 3 hidden states" in r.json()["detail"]

    # nested in a document embedding, a word-level transformer is checked the same way
    pooled = {
        "task": "text_classification",
        "corpus": {"ids": [classes]},
        "embeddings": [
            {
                "type": "document_pool",
                "embeddings": [{"type": "transformer", "model": "tiny-bert", "layers": "3"}],
            }
        ],
    }
    assert _fields(_submit(api, owner, pooled)) == ["body.embeddings.0.embeddings.0.layers"]
    # a tagger's transformer, once per mistake
    tagging = api.corpus(owner)
    tagger = {
        "corpus": {"ids": [tagging]},
        "label_type": "ner",
        "embeddings": [{"type": "transformer", "model": "nope"}],
    }
    assert _fields(_submit(api, owner, tagger)) == ["body.embeddings.0.model"]
    assert _job_rows() == 0 and api.enqueued == []

    for good in (spec(model="tiny-bert", layers="all"), spec(model="tiny-bert", layers="-3"), spec()):
        r = _submit(api, owner, good)
        assert r.status_code == 202, r.text
    assert _job_rows() == 3


def test_a_learning_rate_below_the_annealing_minimum_is_422(api: ApiSession) -> None:
    # The trainer stops annealing once the rate is below the minimum: such a job trained nothing.
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    base = {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}
    r = _submit(api, owner, {**base, "trainer": {"learning_rate": 1e-5}})
    assert _fields(r) == ["body.trainer"]
    assert "learning_rate 1e-05 is below min_learning_rate 0.0001" in r.json()["detail"]
    r = _submit(api, owner, {**base, "trainer": {"mode": "fine_tune", "scheduler": "anneal_on_plateau"}})
    assert _fields(r) == ["body.trainer"]
    assert _job_rows() == 0
    # fine-tuning's linear schedule has no minimum: 5e-5 below the default 1e-4 is fine
    assert _submit(api, owner, {**base, "trainer": {"mode": "fine_tune"}}).status_code == 202


def test_the_trainers_schedules_and_optimizer_options_reach_the_stored_spec(api: ApiSession) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    base = {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}
    chosen = {
        "optimizer": "adamw",
        "learning_rate": 0.001,
        "scheduler": "one_cycle",
        "weight_decay": 0.01,
        "max_grad_norm": None,
        "eval_batch_size": 8,
    }
    r = _submit(api, owner, {**base, "trainer": chosen})
    assert r.status_code == 202, r.text
    stored = api.client.get(r.headers["location"], headers=owner.headers).json()["spec"]["trainer"]
    assert {key: stored[key] for key in chosen} == chosen
    restarts = {"scheduler": "anneal_on_plateau", "anneal_with_restarts": True}
    assert _submit(api, owner, {**base, "trainer": restarts}).status_code == 202


@pytest.mark.parametrize(
    ("trainer", "field", "message"),
    [
        ({"anneal_with_restarts": True, "scheduler": "one_cycle"}, "body.trainer", "needs scheduler"),
        ({"mode": "fine_tune", "anneal_with_restarts": True}, "body.trainer", "not 'linear_warmup'"),
        ({"weight_decay": -0.1}, "body.trainer.weight_decay", "greater than or equal to 0"),
        ({"max_grad_norm": 0}, "body.trainer.max_grad_norm", "greater than 0"),
        ({"scheduler": "cosine"}, "body.trainer.scheduler", "one_cycle"),
        ({"eval_batch_size": 0}, "body.trainer.eval_batch_size", "greater than or equal to 1"),
    ],
)
def test_trainer_options_that_cannot_work_are_422(
    api: ApiSession, trainer: dict[str, object], field: str, message: str
) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    r = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner", "trainer": trainer})
    assert _fields(r) == [field], r.text
    assert message in r.text
    assert _job_rows() == 0


def test_deleting_a_finished_job_removes_its_rows_and_files_and_keeps_its_model(api: ApiSession) -> None:
    # Checkpoints of cancelled and failed jobs (kept for resume) and every job's files had no way out.
    from service.db.models import Model
    from service.settings import get_settings

    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    job_id = _submit(api, owner, {"corpus": {"ids": [corpus_id]}, "label_type": "ner"}).json()["id"]
    r = api.client.delete(f"/jobs/{job_id}", headers=owner.headers)
    assert r.status_code == 409 and "queued: cancel it first" in r.json()["detail"]

    _record_progress(job_id, status="running")
    assert api.client.delete(f"/jobs/{job_id}", headers=owner.headers).status_code == 409
    with session_scope() as session:
        session.get(Job, job_id).status = "cancelled"
        session.add(
            Model(
                id="m-of-deleted-job",
                owner_id=owner.id,
                job_id=job_id,
                name="kept",
                task="sequence_tagging",
                label_type="ner",
                labels=["PER"],
                storage_key="models/m-of-deleted-job",
                size_bytes=1,
                spec={},
            )
        )
    stored = get_settings().storage_root / "jobs" / job_id
    (stored / "checkpoints" / "epoch-0002-abc").mkdir(parents=True)
    (stored / "checkpoints" / "epoch-0002-abc" / "model.safetensors").write_bytes(b"weights")
    (stored / "files" / "epoch-0002-abc").mkdir(parents=True)

    other = api.new_owner("other")
    assert api.client.delete(f"/jobs/{job_id}", headers=other.headers).status_code == 404
    r = api.client.delete(f"/jobs/{job_id}", headers=owner.headers)
    assert r.status_code == 204, r.text
    assert api.client.get(f"/jobs/{job_id}", headers=owner.headers).status_code == 404
    assert api.client.delete(f"/jobs/{job_id}", headers=owner.headers).status_code == 404
    assert not stored.exists()
    with session_scope() as session:
        assert session.query(JobEpochMetric).filter_by(job_id=job_id).count() == 0
        assert session.query(JobBatchLoss).filter_by(job_id=job_id).count() == 0
    kept = api.client.get("/models/m-of-deleted-job", headers=owner.headers)
    assert kept.status_code == 200 and kept.json()["job_id"] == job_id


def test_a_job_that_trained_before_files_were_kept_says_so(api: ApiSession) -> None:
    # A job of an older Tagsmith trained two epochs but has no files: "it ended completed before
    # training began" was not true
    owner = api.new_owner()
    job_id = _submit(api, owner, {"corpus": {"ids": [api.corpus(owner)]}, "label_type": "ner"}).json()["id"]
    with session_scope() as session:
        job = session.get(Job, job_id)
        job.status, job.epoch, job.files_key = "completed", 2, None
    r = api.client.get(f"/jobs/{job_id}/files/training.log", headers=owner.headers)
    assert r.status_code == 404
    assert r.json()["detail"] == f"job {job_id} has no files: it ran on a Tagsmith that did not keep them"
