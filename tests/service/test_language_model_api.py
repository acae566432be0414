"""Language-model corpora and jobs through the API (the queue is recorded, no worker runs):
text uploads, text made from a tagging corpus, the language-model job spec, flair embeddings
that reference language models, and the fine-tune defaults of a training spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.logic.models import register_model
from service.schemas.spec import TrainerOptions
from tests.service.fixtures import ApiSession, Owner

pytestmark = pytest.mark.postgres

TEXT = "The cat sat on the mat .\nA dog barked at the cat .\nBirds sing in the morning .\n"


def _text_corpus(api: ApiSession, owner: Owner, **splits: str) -> Any:
    return api.upload(owner, train=TEXT, format="text", options=None, name="lm-text", **splits)


def _lm_job(api: ApiSession, owner: Owner, spec: dict[str, Any]) -> Any:
    return api.client.post("/jobs/language-model", json=spec, headers=owner.headers)


def _fields(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    return [e["field"] for e in response.json()["errors"]]


def test_text_upload_stores_lines_without_labels(api: ApiSession) -> None:
    owner = api.new_owner()
    r = _text_corpus(api, owner, dev="One more line .\n")
    assert r.status_code == 201, r.text
    corpus = r.json()
    assert corpus["format"] == "text" and corpus["task"] == "language_model"
    assert corpus["label_types"] == {} and corpus["splits"] == ["train", "dev"]
    assert corpus["statistics"]["train"] == {"lines": 3, "characters": len(TEXT)}


def test_text_upload_errors_name_file_and_line(api: ApiSession) -> None:
    owner = api.new_owner()
    bad = api.client.post(
        "/corpora",
        data={"format": "text"},
        files={"train": ("mine.txt", b"good line\nsecond\n\xff\xfe broken\n")},
        headers=owner.headers,
    )
    assert bad.status_code == 422, bad.text
    error = bad.json()["errors"][0]
    assert error["field"] == "body.train" and error["line"] == 3 and error["file"] == "mine.txt"
    assert "UTF-8" in bad.json()["detail"]
    assert _fields(api.upload(owner, train="only one line\n", format="text", options=None)) == ["body.train"]
    assert _fields(api.upload(owner, train=TEXT, format="text", options={"x": 1})) == ["body.options"]


def test_text_corpus_from_a_tagging_corpus(api: ApiSession) -> None:
    owner = api.new_owner()
    tagging = api.corpus(owner)
    r = api.client.post(f"/corpora/{tagging}/text", json={"name": "tiny-text"}, headers=owner.headers)
    assert r.status_code == 201, r.text
    text = r.json()
    assert text["format"] == "text" and text["name"] == "tiny-text"
    assert text["options"] == {"from_corpus": tagging} and "train" in text["splits"]
    assert r.headers["location"].endswith(f"/corpora/{text['id']}")
    without_body = api.client.post(f"/corpora/{tagging}/text", headers=owner.headers)
    assert without_body.status_code == 201 and without_body.json()["name"] == "tiny-text"
    assert api.client.post("/corpora/missing/text", headers=owner.headers).status_code == 404
    other = api.new_owner("other")
    assert api.client.post(f"/corpora/{tagging}/text", headers=other.headers).status_code == 404
    again = api.client.post(f"/corpora/{text['id']}/text", headers=owner.headers)
    assert again.status_code == 422
    # a source too small names the corpus in the path: the request has no train field
    one = api.corpus(owner, train="Paris B-LOC\n", options={"column_map": {"0": "text", "1": "ner"}})
    r = api.client.post(f"/corpora/{one}/text", headers=owner.headers)
    assert _fields(r) == ["path.corpus_id"]
    assert r.json()["detail"] == f"corpus {one}'s train split has fewer than two sentences"


def test_a_text_corpus_is_read_in_a_reader_process_under_the_time_limit(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It read the whole source corpus in the API process, with no limit on how long.
    import functools
    import time

    from service import corpus_reading
    from service.settings import reset_settings
    from tests.service import reader_hooks

    owner = api.new_owner()
    tagging = api.corpus(owner)
    sentences = api.client.get(f"/corpora/{tagging}", headers=owner.headers).json()["statistics"]["train"]
    monkeypatch.setenv("TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS", "0.5")
    reset_settings()
    monkeypatch.setattr(corpus_reading, "test_hook", functools.partial(time.sleep, 120))
    r = api.client.post(f"/corpora/{tagging}/text", headers=owner.headers)
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith(
        f"corpus {tagging}: reading its files for its text was stopped after 0.5 s"
    )
    monkeypatch.setattr(corpus_reading, "test_hook", reader_hooks.end_abruptly)
    r = api.client.post(f"/corpora/{tagging}/text", headers=owner.headers)
    assert r.status_code == 503 and "its reader process ended" in r.json()["detail"], r.text
    assert [c["id"] for c in api.client.get("/corpora", headers=owner.headers).json()["items"]] == [tagging]
    monkeypatch.setattr(corpus_reading, "test_hook", None)
    r = api.client.post(f"/corpora/{tagging}/text", headers=owner.headers)
    assert r.status_code == 201, r.text
    assert r.json()["statistics"]["train"]["lines"] == sentences["sentences"]


def test_text_corpus_body_with_an_unknown_field_is_422(api: ApiSession) -> None:
    # A misspelt name ("nmae") was ignored and the corpus made under the default name.
    owner = api.new_owner()
    tagging = api.corpus(owner)
    r = api.client.post(f"/corpora/{tagging}/text", json={"nmae": "mine"}, headers=owner.headers)
    assert _fields(r) == ["body.nmae"]
    assert [c["id"] for c in api.client.get("/corpora", headers=owner.headers).json()["items"]] == [tagging]


def test_language_model_job_is_validated_and_queued(api: ApiSession) -> None:
    owner = api.new_owner()
    text_id = _text_corpus(api, owner).json()["id"]
    r = _lm_job(
        api, owner, {"corpus_id": text_id, "direction": "backward", "hidden_size": 16, "max_epochs": 2}
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "language_model" and job["status"] == "queued" and job["max_epochs"] is None
    assert job["spec"]["name"] == "language-model-backward" and job["spec"]["learning_rate"] == 20.0
    assert r.headers["location"] == job["url"]
    assert api.enqueued[-1] == (job["id"], "cpu")

    tagging = api.corpus(owner)
    assert _fields(_lm_job(api, owner, {"corpus_id": tagging})) == ["body.corpus_id"]
    assert "POST /corpora" in _lm_job(api, owner, {"corpus_id": tagging}).json()["detail"]
    assert _fields(_lm_job(api, owner, {"corpus_id": "missing"})) == ["body.corpus_id"]
    other = api.new_owner("other")
    assert _fields(_lm_job(api, other, {"corpus_id": text_id})) == ["body.corpus_id"]
    assert _fields(_lm_job(api, owner, {"corpus_id": text_id, "direction": "sideways"})) == ["body.direction"]
    assert _fields(_lm_job(api, owner, {"corpus_id": text_id, "hidden_size": 0})) == ["body.hidden_size"]
    assert _fields(_lm_job(api, owner, {"corpus_id": text_id, "bogus": 1})) == ["body.bogus"]
    # A text corpus has no labels: no tagger trains on it.
    tagger = {"corpus": {"ids": [text_id]}, "label_type": "ner"}
    assert _fields(api.client.post("/jobs", json=tagger, headers=owner.headers)) == ["body.label_type"]


def test_flair_embeddings_must_reference_own_language_models(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    lm = register_model(owner.id, folder, name="lm", task="language_model", label_type="forward", labels=[])
    tagger = register_model(owner.id, folder, name="t", task="sequence_tagging", label_type="ner", labels=[])
    other = api.new_owner("other")
    foreign = register_model(
        other.id, folder, name="lm", task="language_model", label_type="forward", labels=[]
    )

    def spec(model_id: str) -> dict[str, Any]:
        return {
            "corpus": {"ids": [corpus_id]},
            "label_type": "ner",
            "embeddings": [{"type": "character"}, {"type": "flair", "model": model_id}],
        }

    ok = api.client.post("/jobs", json=spec(lm.id), headers=owner.headers)
    assert ok.status_code == 202, ok.text
    for bad, words in ((tagger.id, "not a language model"), (foreign.id, "not found"), ("nope", "not found")):
        r = api.client.post("/jobs", json=spec(bad), headers=owner.headers)
        assert _fields(r) == ["body.embeddings.1.model"]
        assert words in r.json()["errors"][0]["message"]
    listed = api.client.get("/models", headers=owner.headers).json()["items"]
    assert {m["task"] for m in listed} == {"language_model", "sequence_tagging"}


def test_fine_tune_mode_takes_its_own_defaults_unless_set() -> None:
    tuned = TrainerOptions(mode="fine_tune")
    assert (tuned.optimizer, tuned.learning_rate, tuned.scheduler) == ("adamw", 5e-5, "linear_warmup")
    assert tuned.warmup_fraction == 0.1 and tuned.embeddings_storage_mode == "none"
    explicit = TrainerOptions(
        mode="fine_tune", learning_rate=1e-4, optimizer="adam", embeddings_storage_mode="cpu"
    )
    assert (explicit.optimizer, explicit.learning_rate, explicit.embeddings_storage_mode) == (
        "adam",
        1e-4,
        "cpu",
    )
    assert explicit.scheduler == "linear_warmup"
    plain = TrainerOptions()
    assert (plain.optimizer, plain.learning_rate, plain.scheduler) == ("sgd", 0.1, "anneal_on_plateau")
    # The stored (dumped) spec reads back the same.
    assert TrainerOptions.model_validate(tuned.model_dump()) == tuned


def test_fine_tune_defaults_reach_the_stored_spec(api: ApiSession) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    spec = {"corpus": {"ids": [corpus_id]}, "label_type": "ner", "trainer": {"mode": "fine_tune"}}
    r = api.client.post("/jobs", json=spec, headers=owner.headers)
    assert r.status_code == 202, r.text
    trainer = r.json()["spec"]["trainer"]
    assert trainer["optimizer"] == "adamw" and trainer["learning_rate"] == 5e-5
    assert trainer["scheduler"] == "linear_warmup" and trainer["embeddings_storage_mode"] == "none"


def test_a_language_model_spec_posted_to_jobs_points_to_its_endpoint(api: ApiSession) -> None:
    owner = api.new_owner()
    r = api.client.post(
        "/jobs", json={"task": "language_model", "corpus": {"ids": ["x"]}}, headers=owner.headers
    )
    assert _fields(r) == ["body.task"]
    assert "/jobs/language-model" in r.json()["errors"][0]["message"]


def test_the_readmes_language_model_body_posted_to_jobs_points_to_its_endpoint(api: ApiSession) -> None:
    # Without "task" it read "corpus: Field required" and "Extra inputs are not permitted" only.
    owner = api.new_owner()
    body = {"corpus_id": "c1", "direction": "forward", "hidden_size": 256, "max_epochs": 10}
    r = api.client.post("/jobs", json=body, headers=owner.headers)
    assert _fields(r) == [
        "body.corpus",
        "body.corpus_id",
        "body.direction",
        "body.hidden_size",
        "body.max_epochs",
    ]
    assert all("POST /jobs/language-model" in e["message"] for e in r.json()["errors"])
    assert "POST /jobs/language-model" in r.json()["detail"]
    assert [e["type"] for e in r.json()["errors"]] == ["missing", *["extra_forbidden"] * 4]
    # a training spec's own mistakes keep their words
    tagger = {"corpus": {"ids": ["c1"]}, "max_epochs": 10}
    r = api.client.post("/jobs", json=tagger, headers=owner.headers)
    assert _fields(r) == ["body.max_epochs"]
    assert r.json()["errors"][0]["message"] == "Extra inputs are not permitted"


def test_a_flair_hub_name_as_model_points_to_language_model_jobs(api: ApiSession) -> None:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    spec = {
        "corpus": {"ids": [corpus_id]},
        "label_type": "ner",
        "embeddings": [{"type": "flair", "model": "news-forward"}],
    }
    r = api.client.post("/jobs", json=spec, headers=owner.headers)
    assert _fields(r) == ["body.embeddings.0.model"]
    message = r.json()["errors"][0]["message"]
    assert message.startswith("model news-forward not found: ") and "POST /jobs/language-model" in message


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_on_the_language_model_endpoint_are_405(api: ApiSession, method: str) -> None:
    # GET was routed to GET /jobs/{job_id} and answered 404 "job language-model not found".
    owner = api.new_owner()
    r = api.client.request(method, "/jobs/language-model", headers=owner.headers)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "POST"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"] == f"{method} is not allowed on /jobs/language-model; allowed: POST"
    # Deeper paths are still a job id's.
    r = api.client.get("/jobs/language-model/metrics", headers=owner.headers)
    assert r.status_code == 404 and r.json()["detail"] == "job language-model not found"
