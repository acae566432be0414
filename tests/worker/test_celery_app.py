"""The Celery app's delivery settings and queue selection."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from worker import celery_app
from worker.settings import reset_worker_settings


def test_delivery_settings_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGSMITH_VISIBILITY_TIMEOUT_SECONDS", "42")
    monkeypatch.setenv("TAGSMITH_BROKER_URL", "redis://127.0.0.1:6399/3")
    monkeypatch.setenv("TAGSMITH_WORKER_JOBS_PER_PROCESS", "3")
    from service.settings import reset_settings

    reset_settings()
    reset_worker_settings()
    try:
        app = celery_app.make_app()
        conf = app.conf
        assert conf.broker_url == "redis://127.0.0.1:6399/3"
        assert conf.task_acks_late and conf.task_reject_on_worker_lost
        assert conf.worker_prefetch_multiplier == 1
        # a training process is replaced after that many jobs: what runs leave in it never piles up
        assert conf.worker_max_tasks_per_child == 3
        assert conf.broker_transport_options["visibility_timeout"] == 42
        assert conf.broker_transport_options["unacked_restore_interval"] == 10
        assert sorted(q.name for q in conf.task_queues) == ["cpu", "gpu"]
    finally:
        reset_settings()
        reset_worker_settings()


@pytest.mark.parametrize(
    ("has_cuda", "explicit", "consumed"),
    [
        (False, None, ["cpu"]),
        (True, None, ["cpu", "gpu"]),
        (False, ["gpu"], ["gpu"]),
        (True, ["cpu"], ["cpu"]),
    ],
)
def test_a_worker_consumes_gpu_only_with_cuda_unless_told(
    monkeypatch: pytest.MonkeyPatch, has_cuda: bool, explicit: list[str] | None, consumed: list[str]
) -> None:
    app = celery_app.make_app()
    if explicit is not None:
        app.amqp.queues.select(explicit)  # what `celery worker -Q ...` does
    monkeypatch.setattr(celery_app, "cuda_available", lambda: has_cuda)
    celery_app._select_queues(instance=SimpleNamespace(app=app))
    assert sorted(app.amqp.queues.consume_from) == consumed
