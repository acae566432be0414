"""The files a training run writes for people to read, kept with the job in storage.

The trainer writes them into the worker's run folder (as Flair writes its ``base_path``); the
worker publishes a snapshot with every checkpoint and at the end, and ``GET /jobs/{id}/files``
serves the latest. Each snapshot goes to a prefix of its own and the job row points to the
newest, like checkpoints, so a reader never sees a half-written set. Imported by the worker: no
FastAPI here.
"""

from __future__ import annotations

# name -> media type; only these leave the run folder
RUN_FILES: dict[str, str] = {
    "training.log": "text/plain; charset=utf-8",
    "loss.tsv": "text/tab-separated-values; charset=utf-8",
    "weights.txt": "text/tab-separated-values; charset=utf-8",
    "weights.png": "image/png",
    "test.tsv": "text/tab-separated-values; charset=utf-8",
}


def run_files_key(job_id: str, label: str, run: str) -> str:
    """``label`` says when the snapshot was taken (``epoch-0003``, ``final``); ``run`` is the
    run's token, so a run that lost its lease never overwrites its successor's files."""
    return f"jobs/{job_id}/files/{label}-{run}"
