"""The Celery app (``celery -A worker.celery_app worker``): broker, queues and delivery semantics.

- Broker: ``TAGSMITH_BROKER_URL`` (Redis). The one-machine default has no URL of its own: the
  process that starts the stack (``tagsmith up``) runs the embedded Redis
  (``service.broker.start_embedded_redis``) and passes its URL on; a worker started without one
  refuses to start with a message that says so.
- Queues ``cpu`` and ``gpu``. Without ``-Q`` a worker consumes ``cpu``, plus ``gpu`` when the
  machine has CUDA; ``-Q`` picks queues explicitly.
- One message at a time per training process (``worker_prefetch_multiplier=1``), acknowledged
  after the task (``task_acks_late``), and given back when the process running it dies
  (``task_reject_on_worker_lost``). A message can therefore arrive more than once (redelivery after
  the visibility timeout, a requeue after a crash); the job lease (``worker.lease``) turns every
  extra delivery into a no-op.
- Every worker runs the reaper (``worker.reaper``) in a thread of its main process.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from celery import Celery, signals
from kombu import Queue

from service.queue import QUEUES
from service.settings import get_settings
from worker.settings import get_worker_settings


def transport_options(visibility_timeout: int) -> dict[str, Any]:
    """Redis transport options. kombu looks for messages past their visibility timeout only every
    ``unacked_restore_interval * unacked_restore_throttle`` seconds (100 s by default); the sweep
    is one cheap sorted-set query, so it runs at a pace that fits the timeout instead."""
    return {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": max(1, min(10, visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
    }


def make_app() -> Celery:
    settings = get_settings()
    worker_settings = get_worker_settings()
    celery = Celery("tagsmith", include=["worker.tasks"])
    celery.conf.update(
        broker_url=settings.broker_url or None,
        broker_transport_options=transport_options(worker_settings.visibility_timeout_seconds),
        broker_connection_retry_on_startup=True,
        task_queues=tuple(Queue(name, routing_key=name) for name in QUEUES),
        task_default_queue="cpu",
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=worker_settings.worker_concurrency,
        worker_max_tasks_per_child=worker_settings.worker_jobs_per_process,
        # A job's state lives in the database, not in Celery results or events.
        worker_send_task_events=False,
    )
    return celery


app = make_app()


def cuda_available() -> bool:
    """Ask NVML rather than the CUDA runtime: the worker's main process forks the training
    processes, and a CUDA context created before a fork is unusable in the children."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return bool(torch.cuda.is_available())


@signals.celeryd_init.connect
def _require_broker(sender: Any = None, conf: Any = None, **_: Any) -> None:
    # SystemExit, not an exception: Celery logs and ignores exceptions raised by signal handlers.
    if not get_settings().broker_url:
        raise SystemExit(
            "TAGSMITH_BROKER_URL is empty: start the whole stack with `tagsmith up` (it runs the embedded "
            "Redis and passes its URL on), or set TAGSMITH_BROKER_URL=redis://host:6379/0"
        )


@signals.celeryd_after_setup.connect
def _select_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    queues = instance.app.amqp.queues
    # ``-Q`` given: the operator chose; otherwise a machine without CUDA leaves ``gpu`` alone.
    if queues._consume_from is None and not cuda_available():
        queues.deselect("gpu")


@signals.worker_init.connect
def _preload_training_code(**_: Any) -> None:
    # Done once in the main process, so every forked training process starts warm.
    from worker.build import warm_up

    warm_up()


@signals.worker_shutting_down.connect
def _tell_training_processes(**_: Any) -> None:
    # A warm shutdown would wait for the running job to finish (hours, maybe): ask the training
    # processes to hand their jobs back to the queue at the next batch boundary instead.
    import billiard.process

    for child in billiard.process.active_children():
        if child.pid is not None:
            os.kill(child.pid, signal.SIGTERM)


@signals.worker_process_init.connect
def _fresh_database_connections(**_: Any) -> None:
    # Pooled connections inherited from the parent must not be used (or closed) by the child.
    from service.db import session

    with session._lock:
        for engine in session._engines.values():
            engine.dispose(close=False)


@signals.worker_ready.connect
def _warn_about_clock_skew(**_: Any) -> None:
    # Leases follow the database's clock, so skew no longer breaks them; it is still worth fixing.
    from service.db.clock import warn_about_clock_skew

    try:
        warn_about_clock_skew()
    except Exception:  # a database away at start is the reaper's and the runs' to wait out
        logging.getLogger(__name__).exception("could not compare this machine's clock with the database's")


@signals.worker_ready.connect
def _start_reaper(**_: Any) -> None:
    from service.parent_watch import stop_with_parent
    from worker.reaper import start_reaper_thread

    stop_with_parent()

    queues = app.amqp.queues
    consumed = queues.consume_from if queues.consume_from is not None else queues
    start_reaper_thread(app, sorted(consumed))
