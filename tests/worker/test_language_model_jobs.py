"""Language-model jobs through the API and a real worker: upload text, train a tiny forward and
backward character language model, train a tagger on both as flair embeddings, predict; cancel
and resume a language-model job from its checkpoint."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.worker.conftest import TAGGER_DEV, TAGGER_TRAIN, Stack, tagger_spec

pytestmark = pytest.mark.postgres

# About 1,500 characters of training text: two training files of >= 1,000 characters.
TRAIN_TEXT = "".join(f"{words}\n" for _ in range(6) for words, _tags in TAGGER_TRAIN)
DEV_TEXT = "".join(f"{words}\n" for words, _tags in TAGGER_DEV)


def lm_spec(corpus_id: str, direction: str, max_epochs: int = 1) -> dict[str, Any]:
    return {
        "corpus_id": corpus_id,
        "direction": direction,
        "hidden_size": 16,
        "embedding_size": 8,
        "sequence_length": 20,
        "mini_batch_size": 4,
        "learning_rate": 5.0,
        "max_epochs": max_epochs,
        "train_chunk_chars": 1000,
        "device": "cpu",
    }


def submit_lm(stack: Stack, spec: dict[str, Any]) -> str:
    response = stack.client.post("/jobs/language-model", json=spec, headers=stack.headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def get(stack: Stack, path: str) -> Any:
    response = stack.client.get(path, headers=stack.headers)
    assert response.status_code == 200, response.text
    return response


def test_train_two_language_models_then_a_tagger_on_them(stack: Stack) -> None:
    stack.start_worker("lm")
    text_id = stack.upload("lm-text", "text", {"train": TRAIN_TEXT, "dev": DEV_TEXT})
    forward_job = submit_lm(stack, lm_spec(text_id, "forward", max_epochs=2))
    # The backward model reads the text of the tagging corpus itself.
    tagger_corpus = stack.upload_tagger_corpus()
    made = stack.client.post(f"/corpora/{tagger_corpus}/text", headers=stack.headers)
    assert made.status_code == 201, made.text
    backward_job = submit_lm(stack, lm_spec(made.json()["id"], "backward"))

    language_models: list[str] = []
    for job_id, direction, files in ((forward_job, "forward", 4), (backward_job, "backward", 1)):
        job = stack.wait_finished(job_id)
        assert job.status == "completed", (job.error, stack.worker_logs())
        api_job = stack.api_job(job_id)
        assert api_job["kind"] == "language_model" and api_job["percent"] == 100.0
        assert api_job["epoch"] == api_job["max_epochs"] == files  # one epoch row per training file
        epochs = get(stack, f"/jobs/{job_id}/metrics").json()["epochs"]
        assert [row["epoch"] for row in epochs] == list(range(1, files + 1))
        for row in epochs:
            # The dev score is the validation perplexity: exp(validation loss).
            assert row["dev_main_score"] == pytest.approx(math.exp(row["dev_loss"]))
        assert api_job["best_dev_score"] == pytest.approx(min(row["dev_main_score"] for row in epochs))
        assert get(stack, f"/jobs/{job_id}/curves.png").headers["content-type"] == "image/png"

        model = get(stack, f"/models/{api_job['model_id']}").json()
        assert model["task"] == "language_model" and model["label_type"] == direction
        assert model["dev_metrics"]["perplexity"] == pytest.approx(api_job["best_dev_score"])
        assert model["dev_metrics"]["main_score_name"] == "perplexity"
        assert get(stack, f"/models/{model['id']}/download").content
        refused = stack.client.post(
            f"/models/{model['id']}/predict", json={"texts": ["a"]}, headers=stack.headers
        )
        assert refused.status_code == 422 and "is a language model" in refused.json()["detail"]
        language_models.append(model["id"])

    spec = tagger_spec(tagger_corpus, max_epochs=2)
    spec["embeddings"] += [{"type": "flair", "model": lm} for lm in language_models]
    tagger_job = stack.submit(spec)
    job = stack.wait_finished(tagger_job)
    assert job.status == "completed", (job.error, stack.worker_logs())

    # The tagger carries the language models: it predicts after they are deleted.
    for lm in language_models:
        assert stack.client.delete(f"/models/{lm}", headers=stack.headers).status_code == 204
    predicted = stack.client.post(
        f"/models/{job.model_id}/predict", json={"texts": ["Anna lives in Berlin ."]}, headers=stack.headers
    )
    assert predicted.status_code == 200, predicted.text
    tokens = predicted.json()["sentences"][0]["tokens"]
    assert [t["text"] for t in tokens] == ["Anna", "lives", "in", "Berlin", "."]
    assert all(t["tag"] is not None for t in tokens)


def test_cancel_and_resume_a_language_model_job(stack: Stack) -> None:
    stack.start_worker("lm-slow", TAGSMITH_TEST_BATCH_SLEEP_SECONDS="0.05")
    text_id = stack.upload("lm-text", "text", {"train": TRAIN_TEXT, "dev": DEV_TEXT})
    job_id = submit_lm(stack, lm_spec(text_id, "forward", max_epochs=2))
    stack.wait_for(
        "the first training file",
        lambda: (job := stack.job(job_id)).epoch >= 1 and job.checkpoint_key is not None,
    )
    response = stack.client.post(f"/jobs/{job_id}/cancel", headers=stack.headers)
    assert response.status_code == 200, response.text
    stack.wait_for("the cancel", lambda: stack.job(job_id).status == "cancelled", timeout=10.0)
    assert stack.job(job_id).checkpoint_key is not None
    done_before = stack.epochs(job_id)
    assert done_before == list(range(1, len(done_before) + 1)) and len(done_before) < 4

    response = stack.client.post(f"/jobs/{job_id}/resume", headers=stack.headers)
    assert response.status_code == 202, response.text
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert stack.epochs(job_id) == [1, 2, 3, 4]
    assert job.model_id is not None and job.checkpoint_key is None
    # its log and loss.tsv, across the cancel and the resume
    files = stack.client.get(f"/jobs/{job_id}/files", headers=stack.headers).json()["items"]
    assert [f["name"] for f in files] == ["training.log", "loss.tsv"]
    loss = stack.client.get(f"/jobs/{job_id}/files/loss.tsv", headers=stack.headers).text.splitlines()
    assert [row.split("\t")[0] for row in loss[1:]] == ["1", "2", "3", "4"]
    log = stack.client.get(f"/jobs/{job_id}/files/training.log", headers=stack.headers).text
    assert (
        log.index("cancelled in split")
        < log.index("resuming after split")
        < log.index("completed after 4 splits")
    )
