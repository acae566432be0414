"""Tagsmith's training worker: the Celery app and the task that turns a stored job into an engine run.

- ``worker.celery_app``: the app (``celery -A worker.celery_app worker``), queues ``cpu``/``gpu``.
- ``worker.tasks``: ``tagsmith.train_job(job_id)``: claim, build, train, report, finish.
- ``worker.lease``: the database lease that makes every job run at most once at a time.
- ``worker.progress``: the trainer callback that writes progress, metrics and checkpoints.
- ``worker.reaper``: re-sends jobs whose run or message was lost.
- ``worker.build``: spec + stored corpus files -> corpus, embeddings, model, trainer.
- ``worker.settings``: the worker-only settings (``TAGSMITH_*`` environment variables).

Imports no FastAPI; from ``service`` only the persistence modules (settings, database, storage,
spec schema, queue).
"""
