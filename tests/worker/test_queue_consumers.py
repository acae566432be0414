"""A job on a queue no worker takes says so, and is taken once a worker for that queue starts."""

from __future__ import annotations

from tests.worker.conftest import Stack, tagger_spec


def test_a_gpu_job_without_a_gpu_worker_says_why_it_waits(stack: Stack) -> None:
    # It waited in silence: status queued, no error, /ready fine, `tagsmith watch` at 0% forever.
    stack.start_worker("cpu-only", queues="cpu")
    corpus = stack.upload_tagger_corpus()
    spec = tagger_spec(corpus, max_epochs=1)
    spec["trainer"]["device"] = "gpu"
    submitted = stack.client.post("/jobs", json=spec, headers=stack.headers)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    note = (
        "no worker takes the gpu queue: start one with `tagsmith worker --queues gpu` on a machine with a GPU"
    )
    assert submitted.json()["note"] == note
    assert stack.api_job(job_id)["note"] == note

    cpu_job = stack.submit(tagger_spec(corpus, max_epochs=1))
    assert stack.api_job(cpu_job)["note"] is None  # its queue has a worker
    assert stack.wait_finished(cpu_job).status == "completed"

    # A worker for the queue (here on the CPU: no GPU on a test machine) takes the job.
    stack.start_worker("gpu", queues="gpu")
    job = stack.wait_finished(job_id)
    assert job.status == "completed", (job.error, stack.worker_logs())
    assert stack.api_job(job_id)["note"] is None
    assert (
        "the job asks for a GPU and this worker has no CUDA device: it trains on the CPU"
        in stack.workers[-1].log()
    )
