"""End to end through the API and a real worker: upload, train a tagger and a classifier,
watch the progress (``GET /jobs/{id}`` and the event stream), fetch the models, predict."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import pytest

from tests.engine.test_embeddings_transformer import build_tiny_bert
from tests.worker.conftest import (
    CLASSES_TRAIN,
    TAGGER_DEV,
    TAGGER_TEST,
    TAGGER_TRAIN,
    Stack,
    classifier_spec,
    tagger_spec,
)

pytestmark = pytest.mark.postgres


def read_events(stack: Stack, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    with stack.client.stream("GET", f"/jobs/{job_id}/events", headers=stack.headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
    return events


def watch(stack: Stack, job_id: str, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Poll ``GET /jobs/{id}`` until the job ends; returns the distinct states seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stack.api_job(job_id)
        if not seen or (job["status"], job["epoch"], job["batch"]) != (
            seen[-1]["status"],
            seen[-1]["epoch"],
            seen[-1]["batch"],
        ):
            seen.append(job)
        if job["status"] in ("completed", "failed", "cancelled"):
            return seen
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not end\n{stack.worker_logs()}")


def test_train_a_tagger_and_a_classifier_then_predict(stack: Stack) -> None:
    stack.start_worker("e2e", TAGSMITH_TEST_BATCH_SLEEP_SECONDS="0.05")
    tagger_corpus = stack.upload_tagger_corpus(repeat=2)
    classifier_corpus = stack.upload_classifier_corpus(repeat=2)
    tagger_job = stack.submit(tagger_spec(tagger_corpus, max_epochs=3))
    downsampled = classifier_spec(classifier_corpus, max_epochs=3)
    downsampled["corpus"]["downsample"] = 0.5
    classifier_job = stack.submit(downsampled)

    states = watch(stack, tagger_job)
    final = states[-1]
    assert final["status"] == "completed", (final["error"], stack.worker_logs())
    running = [s for s in states if s["status"] == "running"]
    assert running, "the job was never seen running"
    percents = [s["percent"] for s in states]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert len({(s["epoch"], s["batch"]) for s in running}) >= 2, "progress did not advance while running"
    assert final["epoch"] == final["max_epochs"] == 3
    assert final["device"] == "cpu" and final["worker_host"]
    sizes = (final["train_sentences"], final["dev_sentences"], final["test_sentences"])
    assert sizes == (2 * len(TAGGER_TRAIN), len(TAGGER_DEV), len(TAGGER_TEST))

    # The classifier is still queued or running: its event stream follows it to the end.
    events = read_events(stack, classifier_job)
    names = [name for name, _ in events]
    assert names[-1] == "end" and events[-1][1]["status"] == "completed", (events[-1], stack.worker_logs())
    assert [e["epoch"] for name, e in events if name == "epoch"] == [1, 2, 3]
    assert "progress" in names

    metrics = stack.client.get(f"/jobs/{tagger_job}/metrics", headers=stack.headers).json()
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]
    assert metrics["batches"], "no batch losses were recorded"

    tagger_model = stack.client.get(f"/models/{final['model_id']}", headers=stack.headers).json()
    assert tagger_model["task"] == "sequence_tagging" and tagger_model["label_type"] == "ner"
    assert set(tagger_model["labels"]) >= {"PER", "LOC"}
    assert tagger_model["size_bytes"] > 0
    # the test set's scores per entity type ("Tom works for Apple in Paris .")
    test_metrics = tagger_model["test_metrics"]
    assert test_metrics["main_score_name"] == "micro_f1" and 0.0 <= test_metrics["micro_f1"] <= 1.0
    # the dev scores name their main score as the test scores do (they did not)
    assert tagger_model["dev_metrics"]["main_score_name"] == "micro_f1"
    assert tagger_model["dev_metrics"]["main_score"] == pytest.approx(final["best_dev_score"])
    supports = {name: row["support"] for name, row in test_metrics["per_class"].items() if row["support"]}
    assert supports == {"PER": 1, "ORG": 1, "LOC": 1}
    assert tagger_model["job_id"] == tagger_job
    predicted = stack.client.post(
        f"/models/{tagger_model['id']}/predict",
        json={"texts": ["Anna lives in Berlin ."]},
        headers=stack.headers,
    )
    assert predicted.status_code == 200, predicted.text
    tokens = predicted.json()["sentences"][0]["tokens"]
    assert [t["text"] for t in tokens] == ["Anna", "lives", "in", "Berlin", "."]
    assert all(t["tag"] is not None for t in tokens)

    classifier = stack.api_job(classifier_job)
    # what the run really trained and scored on: every split halved (at least one sentence)
    assert (classifier["train_sentences"], classifier["dev_sentences"], classifier["test_sentences"]) == (
        len(CLASSES_TRAIN),
        1,
        1,
    )
    classifier_model_id = classifier["model_id"]
    classifier_model = stack.client.get(f"/models/{classifier_model_id}", headers=stack.headers).json()
    assert classifier_model["task"] == "text_classification"
    assert sorted(classifier_model["labels"]) == ["NEGATIVE", "POSITIVE"]
    predicted = stack.client.post(
        f"/models/{classifier_model_id}/predict",
        json={"texts": ["a great and lovely film"]},
        headers=stack.headers,
    )
    assert predicted.status_code == 200, predicted.text
    labels = predicted.json()["sentences"][0]["labels"]
    assert labels and labels[0]["value"] in ("NEGATIVE", "POSITIVE")


def test_a_job_that_cannot_be_built_fails_once_with_its_error(stack: Stack) -> None:
    worker = stack.start_worker("failing")
    corpus = stack.upload_tagger_corpus()
    spec = tagger_spec(corpus, max_epochs=2)
    # The API checks the model folder's files and config; loading the weights is the worker's job,
    # and a truncated copy of them fails there.
    folder = stack.data_dir / "transformers" / "truncated"
    build_tiny_bert(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    spec["embeddings"] = [{"type": "transformer", "model": "truncated", "fine_tune": False}]
    job_id = stack.submit(spec)
    job = stack.wait_finished(job_id)
    assert job.status == "failed"
    assert job.error and "truncated: cannot load the model" in job.error
    # the API shows it: the model by its place among the transformers, not the server's folders
    assert str(stack.data_dir) not in job.error and "<transformers dir>/truncated" in job.error, job.error
    files = stack.client.get(f"/jobs/{job_id}/files/training.log", headers=stack.headers)
    assert files.status_code == 404
    assert files.json()["detail"] == f"job {job_id} wrote no files: it ended failed before training began"
    assert job.attempts == 1
    api = stack.api_job(job_id)
    assert api["error"] == job.error
    # No retry loop: the failed job is left alone.
    time.sleep(2.0)
    assert stack.job(job_id).attempts == 1
    assert worker.log().count(f"job {job_id}: claimed") == 1


def test_a_transformer_from_the_transformers_dir_trains_and_its_model_stands_alone(stack: Stack) -> None:
    stack.start_worker("transformer")
    folder = build_tiny_bert(stack.data_dir / "transformers" / "tiny-bert")
    spec = classifier_spec(stack.upload_classifier_corpus(), max_epochs=1)
    spec["embeddings"] = [{"type": "transformer_document", "model": "tiny-bert", "layers": "all"}]
    spec["trainer"].update({"mode": "fine_tune", "learning_rate": 1e-3})
    job_id = stack.submit(spec)
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    # a finished job says why a file will never come, rather than "(yet)"
    weights = stack.client.get(f"/jobs/{job_id}/files/weights.txt", headers=stack.headers)
    assert weights.status_code == 404
    assert (
        weights.json()["detail"]
        == f'job {job_id} has no weights.txt: its spec did not set "write_weights": true'
    )

    # The model carries the transformer's config and tokenizer: the folder is no longer needed.
    shutil.rmtree(folder)
    model_id = stack.api_job(job_id)["model_id"]
    predicted = stack.client.post(
        f"/models/{model_id}/predict", json={"texts": ["a great and lovely film"]}, headers=stack.headers
    )
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["sentences"][0]["labels"][0]["value"] in ("NEGATIVE", "POSITIVE")


def test_the_trainers_files_are_kept_with_the_job(stack: Stack) -> None:
    # training.log, loss.tsv, weights.txt and test.tsv used to stay in the worker's temporary
    # folder and were deleted with it: `write_weights` did nothing a user could see.
    from service.settings import get_settings

    stack.start_worker("files")
    spec = tagger_spec(stack.upload_tagger_corpus(), max_epochs=2)
    spec["trainer"]["write_weights"] = True
    job_id = stack.submit(spec)
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())

    listed = stack.client.get(f"/jobs/{job_id}/files", headers=stack.headers)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [item["name"] for item in items] == [
        "training.log",
        "loss.tsv",
        "weights.txt",
        "weights.png",
        "test.tsv",
    ]
    assert all(item["size_bytes"] > 0 for item in items)

    def fetch(name: str) -> Any:
        url = next(item["url"] for item in items if item["name"] == name)
        response = stack.client.get(url, headers=stack.headers)
        assert response.status_code == 200, response.text
        return response

    loss = fetch("loss.tsv")
    assert loss.headers["content-type"].startswith("text/tab-separated-values")
    rows = loss.text.splitlines()
    assert rows[0].startswith("EPOCH\t") and [row.split("\t")[0] for row in rows[1:]] == ["1", "2"]
    assert "training completed after 2 epochs" in fetch("training.log").text
    assert fetch("weights.txt").text.startswith("ITERATION\tPARAMETER\tINDEX\tVALUE\n")
    assert fetch("weights.png").content.startswith(b"\x89PNG")
    # the test split's sentences with gold and predicted tags
    assert "Tom" in fetch("test.tsv").text

    # one snapshot is kept: each epoch's replaced the one before
    root = get_settings().storage_root / "jobs" / job_id / "files"
    assert len(list(root.iterdir())) == 1

    missing = stack.client.get(f"/jobs/{job_id}/files/model.safetensors", headers=stack.headers)
    assert missing.status_code == 404 and "training.log" in missing.json()["detail"]
    other = stack.client.post(
        "/keys", json={"name": "other"}, headers={"Authorization": "Bearer test-admin-key"}
    )
    other_headers = {"Authorization": f"Bearer {other.json()['key']}"}
    assert stack.client.get(f"/jobs/{job_id}/files", headers=other_headers).status_code == 404
    assert stack.client.get(f"/jobs/{job_id}/files/loss.tsv", headers=other_headers).status_code == 404
