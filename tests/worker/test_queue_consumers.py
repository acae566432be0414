"""A job on a queue no worker takes says so, and is taken once a worker for that queue starts."""

from __future__ import annotations

from service.queue_consumers import waiting_note
from tests.worker.conftest import Stack, tagger_spec

NO_CUDA = "the job asks for a GPU and this worker has no CUDA device: it trains on the CPU"
NO_GPU_WORKER = (
    "no worker takes the gpu queue: start one with `tagsmith worker --queues gpu` on a machine with a GPU"
)


def test_a_gpu_job_without_a_gpu_worker_says_why_it_waits(stack: Stack) -> None:
    # It waited in silence: status queued, no error, /ready fine, `tagsmith watch` at 0% forever.
    stack.start_worker("cpu-only", queues="cpu")
    stack.wait_for("the worker to announce its queue", lambda: waiting_note("cpu") is None, timeout=30)
    assert waiting_note("gpu") == NO_GPU_WORKER
    corpus = stack.upload_tagger_corpus()
    spec = tagger_spec(corpus, max_epochs=1)
    spec["trainer"]["device"] = "gpu"
    submitted = stack.client.post("/jobs", json=spec, headers=stack.headers)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert submitted.json()["note"] == NO_GPU_WORKER
    assert stack.api_job(job_id)["note"] == NO_GPU_WORKER

    # A worker for the queue (here on the CPU: no GPU on a test machine) takes the job.
    stack.start_worker("gpu", queues="gpu")
    stack.wait_for("the gpu worker to announce its queue", lambda: waiting_note("gpu") is None, timeout=30)
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert NO_CUDA in stack.workers[-1].log()
    # ... and so does the job's own training.log, first thing (it was only in the worker's console)
    log_file = stack.client.get(f"/jobs/{job_id}/files/training.log", headers=stack.headers)
    assert log_file.status_code == 200, log_file.text
    assert log_file.text.splitlines()[0].endswith(f" {NO_CUDA}"), log_file.text[:500]
