"""The training task ``tagsmith.train_job(job_id)``: one delivery, at most one run.

A delivery first claims the job's lease (``worker.lease``). Without the lease it does nothing:
the job finished, was cancelled, or is trained by a live run elsewhere (a redelivery). With it,
the run trains from scratch or, when the job has a checkpoint, resumes from it; then it ends the
job ``completed`` (model saved, model row created), ``cancelled`` (checkpoint kept) or
``failed`` (the error stored; no retry: a deterministic error would only fail again). The exception
is trouble expected to pass (``passing_trouble``): a storage outage (``StorageUnavailable``; one
while storing a checkpoint only skips that checkpoint, see ``worker.progress``), or this worker
out of disk space or file descriptors. The job goes back to ``queued`` with a ``retry_at``
that doubles with each retry, the reaper sends it again then, and it resumes from its last
checkpoint; it fails after ``storage_retries`` retries without a new checkpoint. A run that
loses its lease stops and leaves the job to the new holder. A run whose worker is stopped
(SIGTERM) stops at the next batch boundary and puts the job back in the queue, to be resumed from
its last completed epoch by any worker.

The task itself always returns normally, so its message is acknowledged: the database, not
Celery, says what happens next (the reaper re-sends jobs whose run vanished).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import delete, select, update

from service.db.clock import db_now
from service.db.models import (
    Job,
    JobBatchLoss,
    JobEpochMetric,
    at_completed_epoch,
    queued_again,
    resumes_after,
)
from service.db.session import DatabaseUnavailable, session_scope
from service.errors import OUT_OF_MEMORY, causes, exhausted_resource
from service.process_folders import own_folder
from service.queue import TRAIN_TASK, enqueue_job
from service.settings import get_settings
from service.storage import StorageUnavailable, get_storage
from worker import run_files
from worker.celery_app import app
from worker.lease import (
    Claim,
    Heartbeat,
    LeaseLost,
    LeaseLostInOutage,
    claim,
    first_line,
    new_owner_id,
    release,
    update_owned,
    update_owned_in,
    while_leased,
)
from worker.settings import get_worker_settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class SignalFlag:
    """A flag that a signal handler may set: no lock, unlike ``threading.Event``.

    Python runs a handler between any two bytecodes of the main thread, including those of an
    earlier run of the same handler. ``Event.set`` holds a lock that is not reentrant, so a second
    SIGTERM landing while the first one's handler is inside it (systemd signals the whole process
    group, and the worker's main process passes the signal on a moment later) would wait for that
    lock forever: the run never reaches its next batch, its heartbeat keeps the lease alive, and
    the job stays ``running`` while the warm shutdown waits for it. Assigning an attribute is
    atomic and cannot block. Deliberately no ``__bool__``: ``flag or default`` must not depend on
    whether it is set."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value = False

    def set(self) -> None:
        self._value = True

    def clear(self) -> None:
        self._value = False

    def is_set(self) -> bool:
        return self._value


# Set in a training process when its worker is asked to stop (SIGTERM): the run stops at the
# next batch boundary and hands the job back to the queue, instead of holding the shutdown up
# until training ends or leaving the job to wait for its lease to expire. Both are touched by the
# signal handler, hence lock-free flags.
SHUTDOWN = SignalFlag()
_RUNNING = SignalFlag()
_previous_sigterm: list[Any] = [signal.SIG_DFL]


def request_shutdown(signum: int = signal.SIGTERM, frame: Any = None) -> None:
    """SIGTERM handler of a training process: stop the run at the next batch boundary; an idle
    process exits the way it would have without this handler. It may run nested inside itself
    (signals arriving back to back), so it must take no lock (see ``SignalFlag``)."""
    SHUTDOWN.set()
    if not _RUNNING.is_set():
        previous = _previous_sigterm[0]
        if callable(previous):
            previous(signum, frame)
        _exit_on_sigterm()


def _handle_sigterm() -> None:
    """Installed when a task starts: the pool (billiard) sets its own SIGTERM handler after the
    process-init hooks, so that is too early."""
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is not request_shutdown:
        _previous_sigterm[0] = current
        signal.signal(signal.SIGTERM, request_shutdown)


def _exit_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@app.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def train_job(job_id: str) -> str:
    return run_job(job_id)


class CheckpointMissing(Exception):
    """The checkpoint a run would resume from is not in storage (removed by hand, or lost with
    a restored backup): the job fails, and forgets it, so that a resume starts over."""

    def __init__(self, epoch: int) -> None:
        super().__init__(
            f"the checkpoint to resume from (after epoch {epoch}) is missing from storage; "
            "resume the job to train it again from the start"
        )


def error_message(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError) and exc.errno is None and len(exc.args) == 1:
        # storage's own: the argument is the key ("FileNotFoundError: corpora/<id>/train.txt")
        return f"{exc.args[0]} is missing from storage"
    text = str(exc).strip() or type(exc).__name__
    text = f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
    exhausted = exhausted_resource(exc)
    if exhausted is not None:
        # "OSError: [Errno 28] No space left on device" read like the storage's problem
        text = f"the worker is out of resources ({exhausted}): {text}"
    return without_server_paths(text)


def without_server_paths(text: str) -> str:
    """The API shows a job's message: a transformer by its name, not the server's folders."""
    settings = get_settings()
    roots = [
        (settings.transformers_root, "<transformers dir>"),
        (settings.resolved_data_dir, "<data dir>"),
        (Path(tempfile.gettempdir()), "<tmp>"),
    ]
    if not settings.storage_url.startswith("s3://"):
        roots.insert(0, (settings.storage_root, "<storage>"))
    for root, name in roots:
        text = text.replace(f"{root}/", f"{name}/")
    return text


class _JobPrefix(logging.Filter):
    """The trainers' lines name their job in the worker's log: "epoch 2: train loss ..." from two
    training processes (--concurrency 2), or in aggregated logs, could not be told apart. (The
    job's own training.log is written apart, without the prefix.)"""

    job_id: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.job_id is not None:
            record.msg = f"job {self.job_id}: {record.msg}"
        return True


_JOB_PREFIX = _JobPrefix()
for _name in ("engine.training.trainer", "engine.language_model.trainer"):
    logging.getLogger(_name).addFilter(_JOB_PREFIX)


def run_job(job_id: str, owner: str | None = None) -> str:
    """Claim and run job ``job_id``; returns what happened (``completed``, ``cancelled``,
    ``failed``, ``retrying``, ``requeued``, ``lease_lost``, or the claim outcome when nothing ran)."""
    if SHUTDOWN.is_set():
        # This process was told to stop: die before claiming, so the pool gives the message back.
        _exit_on_sigterm()
    _handle_sigterm()
    _RUNNING.set()
    _JOB_PREFIX.job_id = job_id
    try:
        return _claim_and_run(job_id, owner or new_owner_id())
    finally:
        _JOB_PREFIX.job_id = None
        _RUNNING.clear()


# the trainer's base_path inside a run's working folder
RUN_DIR = "run"
# runs' working folders, under the temporary directory: <host>-<pid>/job-<id>-*
SCRATCH_KIND = "jobs"  # $TMPDIR/tagsmith-jobs-<uid>


def _claim_and_run(job_id: str, owner: str) -> str:
    lease_seconds = get_settings().lease_seconds
    try:
        granted = claim(job_id, owner, lease_seconds)
    except DatabaseUnavailable as exc:
        # ("too many clients", a restart): the message is gone either way, and the reaper sends
        # the job again once the database answers; one line, not Celery's traceback
        log.warning("job %s: not claimed, the database is unavailable: %s", job_id, first_line(exc))
        return "database_unavailable"
    if not granted.claimed:
        log.info("job %s: delivery dropped (%s)", job_id, granted.outcome)
        return granted.outcome
    log.info(
        "job %s: claimed by %s%s",
        job_id,
        owner,
        f", resuming from {granted.resumed_from}" if granted.resumed_from else "",
    )
    if granted.attempts > get_worker_settings().max_attempts:
        # Runs that die without an exception (the kernel's OOM killer, a segfault) would otherwise
        # be resumed forever by the reaper.
        message = (
            f"gave up after {granted.attempts - 1} runs (max_attempts); the last ones ended without a result, "
            "which happens when the worker process dies (e.g. killed for memory)"
        )
        release(job_id, owner, status="failed", error=message, finished_at=db_now(), eta_seconds=None)
        return "failed"
    try:
        workdir = _scratch_folder(job_id)
    except OSError as exc:
        # before the heartbeat starts: a failure here must not leave a lease renewed forever
        passing = passing_trouble(exc)
        if passing is not None:
            retried = _retry_later(job_id, owner, passing)
            if retried is not None:
                return retried
        message = f"this worker cannot make its scratch folder: {error_message(exc)}"
        if passing is not None:
            message = f"this worker cannot make its scratch folder: {passing.gave_up}"
        log.error("job %s: %s", job_id, message)
        release(job_id, owner, status="failed", error=message, finished_at=db_now(), eta_seconds=None)
        return "failed"
    heartbeat = Heartbeat(job_id, owner, lease_seconds).start()
    try:
        return _run(job_id, owner, granted, heartbeat, workdir)
    except LeaseLost:
        log.warning("job %s: lease lost, this run stops without writing", job_id)
        return "lease_lost"
    except Exception as exc:
        if not heartbeat.lost.is_set() and any(isinstance(c, DatabaseUnavailable) for c in causes(exc)):
            # A database outage is the operator's, not the job's: never a failed job.
            return _requeue_after_database_outage(job_id, owner, heartbeat.lost, exc)
        heartbeat.stop()
        if heartbeat.lost.is_set():
            return "lease_lost"
        passing = passing_trouble(exc)
        if passing is not None:
            retried = _retry_later(job_id, owner, passing)
            if retried is not None:
                return retried
        log.error("job %s failed:\n%s", job_id, traceback.format_exc())
        message = str(exc) if isinstance(exc, CheckpointMissing) else error_message(exc)
        forget = {"checkpoint_key": None} if isinstance(exc, CheckpointMissing) else {}
        if passing is not None:
            message = passing.gave_up
        run_files.release_with_files(
            get_storage(),
            job_id,
            owner,
            uuid.uuid4().hex[:8],
            "failed",
            workdir / RUN_DIR,
            status="failed",
            error=message,
            finished_at=db_now(),
            eta_seconds=None,
            **forget,
        )
        return "failed"
    finally:
        heartbeat.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _scratch_folder(job_id: str) -> Path:
    """A run's working folder, under this process's own folder, so that the next run on this
    host removes what a killed run left (a corpus copy and checkpoints: hundreds of MB with a
    transformer)."""
    return Path(tempfile.mkdtemp(prefix=f"job-{job_id[:8]}-", dir=own_folder(SCRATCH_KIND)))


def _requeue_after_database_outage(job_id: str, owner: str, lost: threading.Event, exc: Exception) -> str:
    """Back to the queue once the database answers (the next run resumes from the checkpoint);
    if it stays away past the lease, the reaper does the same later."""
    log.warning("job %s: the run stopped on a database outage: %s", job_id, first_line(exc))

    def requeue() -> str | None:
        with session_scope() as session:
            queue = session.execute(select(Job.queue).where(Job.id == job_id)).scalar_one_or_none()
            released = update_owned_in(
                session,
                job_id,
                owner,
                **queued_again(),
                lease_owner=None,
                lease_expires_at=None,
            )
        return queue if released else None

    try:
        queue = while_leased(requeue, lost, f"job {job_id}: sending the job back to the queue")
    except LeaseLost:
        log.warning("job %s: the database stayed away past the lease; the reaper will resume the job", job_id)
        return "lease_lost"
    if queue is None:
        return "lease_lost"
    task_id = enqueue_job(job_id, queue)
    update_job(job_id, celery_task_id=task_id)
    log.warning("job %s: sent back to the queue as task %s after a database outage", job_id, task_id)
    return "requeued"


# The longest wait between two storage retries (unless the first one is longer).
MAX_STORAGE_RETRY_SECONDS = 900.0


class Trouble(NamedTuple):
    """Why a run stopped that is expected to pass: ``what`` went wrong, and the error's ``detail``."""

    what: str
    detail: str
    gave_up: str  # the job's message once its retries are used up


def passing_trouble(exc: BaseException) -> Trouble | None:
    """A storage outage, or this worker out of disk space or file descriptors; None for the
    job's own errors."""
    outage = next((c for c in causes(exc) if isinstance(c, StorageUnavailable)), None)
    retries = get_worker_settings().storage_retries
    if outage is not None:
        detail = without_server_paths(str(outage))
        return Trouble("storage unavailable", detail, f"gave up after {retries} storage retries: {detail}")
    # What a worker runs short of (disk space, file descriptors) is its own trouble, not the
    # job's: another worker, or this one once there is room, can train the job. Memory is left
    # out: a model too large for the machine would only run out of it again.
    if exhausted_resource(exc) not in (None, OUT_OF_MEMORY):
        what, _, detail = error_message(exc).partition(": ")
        return Trouble(what, detail, f"gave up after {retries} retries: {what}: {detail}")
    return None


def _retry_later(job_id: str, owner: str, trouble: Trouble) -> str | None:
    """Put the job back to wait for ``trouble`` to pass (``retrying``); None when its retries are
    used up.

    The run's files are not published: storage, or this worker's disk, is what is missing. The
    retry resumes from the last checkpoint and its snapshot of the files."""
    settings = get_worker_settings()
    with session_scope() as session:
        done = session.execute(select(Job.storage_retries).where(Job.id == job_id)).scalar_one_or_none()
    done = done or 0
    if done >= settings.storage_retries:
        return None
    longest = max(settings.storage_retry_seconds, MAX_STORAGE_RETRY_SECONDS)
    retry_at = db_now() + timedelta(seconds=min(settings.storage_retry_seconds * 2**done, longest))
    message = (
        f"{trouble.what}; retry {done + 1} of {settings.storage_retries} "
        f"at {retry_at:%Y-%m-%d %H:%M:%S} UTC: {trouble.detail}"
    )
    if not release(
        job_id,
        owner,
        **queued_again(),
        retry_at=retry_at,
        storage_retries=done + 1,
        error=message,
    ):
        return "lease_lost"
    log.warning("job %s: %s", job_id, message)
    return "retrying"


def _run(job_id: str, owner: str, granted: Claim, heartbeat: Heartbeat, workdir: Path) -> str:
    # Heavy imports (torch, the engine) stay out of the API process that imports this module's app.
    from worker.progress import JobProgress, checkpoint_epoch

    storage = get_storage()
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LeaseLost(job_id)
        job_name, owner_id, raw_spec, queue, kind, files_key = (
            job.name,
            job.owner_id,
            dict(job.spec),
            job.queue,
            job.kind,
            job.files_key,
        )
    run_dir = workdir / RUN_DIR
    plan = (
        _language_model_plan(raw_spec, workdir, run_dir)
        if kind == "language_model"
        else _tagger_plan(raw_spec, workdir, run_dir)
    )
    resume_epoch = checkpoint_epoch(granted.resumed_from) if granted.resumed_from else 0
    _forget_epochs_after(job_id, owner, resume_epoch)
    if granted.resumed_from:
        try:
            checkpoint_dir = storage.get_dir(granted.resumed_from, workdir / "resume-checkpoint")
        except FileNotFoundError:
            raise CheckpointMissing(resume_epoch) from None
        trainer = plan.resume(checkpoint_dir)
        if files_key:
            # the last run's files: the log goes on where that run stopped (the trainer drops the
            # weight samples it took after the checkpoint)
            run_files.restore(storage, files_key, run_dir)
    else:
        trainer = plan.new()
    settings = get_worker_settings()
    progress = JobProgress(
        job_id,
        owner,
        storage,
        heartbeat.lost,
        progress_interval=settings.progress_interval_seconds,
        cancel_interval=settings.cancel_check_interval_seconds,
        batch_sleep=settings.test_batch_sleep_seconds,
        shutdown=SHUTDOWN,
        run_dir=run_dir,
    )
    if not update_owned(job_id, owner, device=plan.device):
        raise LeaseLost(job_id)
    if plan.gpu_asked and plan.device != "cuda":
        from engine.training.run_log import RunLog
        from worker.build import NO_CUDA

        run_dir.mkdir(parents=True, exist_ok=True)
        RunLog(run_dir / "training.log", log)(NO_CUDA)  # the worker's log and the job's
    ended = plan.train(trainer, progress)
    if progress.stop_reason == "lease_lost" or heartbeat.lost.is_set():
        raise LeaseLost(job_id)
    if progress.stop_reason == "shutdown":
        # Back to the queue with the checkpoint of the last completed epoch; any worker resumes it.
        if not run_files.release_with_files(
            storage, job_id, owner, progress.run_token, "requeued", run_dir, **queued_again()
        ):
            raise LeaseLost(job_id)
        task_id = enqueue_job(job_id, queue)
        update_job(job_id, celery_task_id=task_id)
        log.warning("job %s: worker shutting down, job sent back to the queue as task %s", job_id, task_id)
        return "requeued"
    if progress.stop_reason == "cancelled" or ended.status == "cancelled":
        if not run_files.release_with_files(
            storage,
            job_id,
            owner,
            progress.run_token,
            "cancelled",
            run_dir,
            status="cancelled",
            finished_at=db_now(),
            eta_seconds=None,
            # what a resume continues from; without a checkpoint (`"checkpoint": false`) the
            # epochs this run completed, which a resume trains again
            **at_completed_epoch(resumes_after(Job.epoch.expression)),
        ):
            raise LeaseLost(job_id)
        return "cancelled"
    model_dir = ended.model_path or _save_final_model(trainer, workdir / "final-model")
    task, label_type, labels = plan.registration(trainer)
    _complete(
        job_id,
        owner,
        owner_id,
        job_name,
        task,
        label_type,
        labels,
        raw_spec,
        ended,
        progress,
        model_dir,
        plan.main_score_name(trainer),
        plan.lower_is_better,
    )
    return "completed"


@dataclass
class _Plan:
    """What differs between job kinds: how to build, resume and train, and what model results."""

    device: str
    new: Callable[[], Any]
    resume: Callable[[Path], Any]
    train: Callable[[Any, Any], Any]
    registration: Callable[[Any], tuple[str, str, list[str]]]
    main_score_name: Callable[[Any], str]  # of the trained model (its test scores name it too)
    lower_is_better: bool = False  # of the dev main score (a language model's perplexity)
    gpu_asked: bool = False  # the spec's device is `gpu`


def _tagger_plan(raw_spec: dict[str, Any], workdir: Path, run_dir: Path) -> _Plan:
    from engine.evaluation import main_score_name
    from service.schemas.spec import TrainingSpec, stored_spec
    from worker import build

    spec = stored_spec(TrainingSpec, raw_spec)
    device = build.choose_device(spec)
    corpus = build.load_corpus(spec, get_storage(), workdir / "corpus")
    return _Plan(
        device=device,
        new=lambda: build.new_trainer(spec, corpus, workdir / "resources"),
        resume=lambda checkpoint: build.resume_trainer(checkpoint, corpus),
        train=lambda trainer, progress: build.train(trainer, spec, run_dir, device, progress),
        registration=lambda trainer: (spec.task, trainer.model.label_type, trainer.model.label_names()),
        main_score_name=lambda trainer: main_score_name(trainer.model.label_kind, trainer.model.multi_label),
        gpu_asked=spec.trainer.device == "gpu",
    )


def _language_model_plan(raw_spec: dict[str, Any], workdir: Path, run_dir: Path) -> _Plan:
    from service.schemas.spec import LanguageModelSpec, stored_spec
    from worker import language_model as lm

    spec = stored_spec(LanguageModelSpec, raw_spec)
    device = lm.choose_device(spec)
    corpus = lm.load_text_corpus(spec, get_storage(), workdir / "corpus")
    return _Plan(
        device=device,
        new=lambda: lm.new_trainer(spec, corpus),
        resume=lambda checkpoint: lm.resume_trainer(checkpoint, corpus),
        train=lambda trainer, progress: lm.train(trainer, spec, run_dir, device, progress),
        # The label type of a language model is its direction; it has no labels.
        registration=lambda trainer: ("language_model", spec.direction, []),
        main_score_name=lambda trainer: "perplexity",
        lower_is_better=True,
        gpu_asked=spec.device == "gpu",
    )


def _save_final_model(trainer: Any, folder: Path) -> Path:
    trainer.model.save(folder)
    return folder


def update_job(job_id: str, **values: Any) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def _forget_epochs_after(job_id: str, owner: str, epoch: int) -> None:
    """Rows of epochs past the checkpoint belong to a run that died: they are retrained now."""
    with session_scope() as session:
        if not update_owned_in(session, job_id, owner, epoch=epoch, batch=0):
            raise LeaseLost(job_id)
        session.execute(
            delete(JobEpochMetric).where(JobEpochMetric.job_id == job_id, JobEpochMetric.epoch > epoch)
        )
        session.execute(delete(JobBatchLoss).where(JobBatchLoss.job_id == job_id, JobBatchLoss.epoch > epoch))


def _complete(
    job_id: str,
    owner: str,
    owner_id: str,
    name: str,
    task: str,
    label_type: str,
    labels: list[str],
    raw_spec: dict[str, Any],
    ended: Any,
    progress: Any,
    model_dir: Path,
    main_score_name: str,
    lower_is_better: bool = False,
) -> None:
    from service.db.models import ModelRow, new_id

    storage = get_storage()
    model_id = new_id()
    key = f"models/{model_id}"
    files = None

    def store() -> str | None:
        storage.put_dir(key, model_dir)
        return progress.publish_files("final")

    try:
        files = _store_patiently(job_id, "the trained model", store, progress)
        dev_metrics = progress.best_dev_scores or while_leased(
            lambda: _best_dev_metrics(job_id, lower_is_better),
            progress.lease_lost,
            f"job {job_id}: dev metrics",
        )
        # The dev scores are numbers only (the trainer's per-epoch rows): without the name a
        # client could not tell which of them main_score is, as test_metrics tells.
        if dev_metrics is not None:
            dev_metrics = {**dev_metrics, "main_score_name": main_score_name}
        old_checkpoint, old_files = while_leased(
            lambda: _register_model(
                job_id,
                owner,
                model_id,
                files,
                ModelRow(
                    id=model_id,
                    owner_id=owner_id,
                    job_id=job_id,
                    name=name,
                    task=task,
                    label_type=label_type,
                    labels=labels,
                    storage_key=key,
                    size_bytes=storage.size(key),
                    dev_metrics=dev_metrics,
                    test_metrics=ended.test_details or ended.test_scores,
                    spec=raw_spec,
                ),
            ),
            progress.lease_lost,
            f"job {job_id}: the trained model",
        )
    except LeaseLostInOutage:
        raise  # the job may point to them now: the storage sweep decides
    except BaseException:
        with contextlib.suppress(StorageUnavailable):  # else the storage sweep's
            storage.delete(key)
            if files:
                storage.delete(files)
        raise
    if old_checkpoint:
        storage.delete(old_checkpoint)
    if files and old_files and old_files != files:
        storage.delete(old_files)


# How many TAGSMITH_STORAGE_RETRY_SECONDS a finished run waits for storage to take its model.
STORE_PATIENCE_STEPS = 10


def _store_patiently(job_id: str, what: str, store: Callable[[], T], progress: Any) -> T:
    """``store()``, tried again every ``storage_retry_seconds`` for up to ``STORE_PATIENCE_STEPS``
    of them (5 minutes by default) while the run may go on: a finished run that gave up at once
    would be retried from its last stored checkpoint, retraining every epoch since."""
    step = get_worker_settings().storage_retry_seconds
    deadline = time.monotonic() + STORE_PATIENCE_STEPS * step
    while True:
        try:
            return store()
        except StorageUnavailable as error:
            if time.monotonic() + step > deadline:
                raise
            log.warning(
                "job %s: %s could not be stored, trying again in %g s: %s",
                job_id,
                what,
                step,
                first_line(error),
            )
            until = time.monotonic() + step
            while time.monotonic() < until:
                if progress.lease_lost.is_set() or progress.shutdown.is_set():
                    raise
                time.sleep(min(0.2, step))


def _register_model(
    job_id: str, owner: str, model_id: str, files: str | None, row: Any
) -> tuple[str | None, str | None]:
    """Complete the job and add its model row in one fenced transaction; the keys it replaced.

    Safe to repeat after a commit whose answer was lost: the job then names the model already."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LeaseLost(job_id)
        if job.model_id == model_id:
            return None, None  # an earlier try committed; the keys it replaced are unknown now
        old_checkpoint, old_files = job.checkpoint_key, job.files_key
        done = update_owned_in(
            session,
            job_id,
            owner,
            status="completed",
            model_id=model_id,
            percent=100.0,
            eta_seconds=0.0,
            finished_at=db_now(),
            checkpoint_key=None,
            lease_owner=None,
            lease_expires_at=None,
            **({"files_key": files} if files else {}),
        )
        if not done:
            raise LeaseLost(job_id)
        session.add(row)
        return old_checkpoint, old_files


def _best_dev_metrics(job_id: str, lower_is_better: bool = False) -> dict[str, Any] | None:
    """The best epoch's dev scores from the stored rows (the run that saw it may have died)."""
    from sqlalchemy import select

    with session_scope() as session:
        row = session.execute(
            select(JobEpochMetric)
            .where(JobEpochMetric.job_id == job_id)
            .order_by(
                JobEpochMetric.is_best.desc(),
                JobEpochMetric.dev_main_score.asc()
                if lower_is_better
                else JobEpochMetric.dev_main_score.desc(),
                JobEpochMetric.epoch.desc(),
            )
            .limit(1)
        ).scalar_one_or_none()
        if row is None or row.dev_main_score is None:
            return None
        if lower_is_better:
            return {"main_score": row.dev_main_score, "perplexity": row.dev_main_score, "loss": row.dev_loss}
        return {
            "main_score": row.dev_main_score,
            "micro_precision": row.dev_precision,
            "micro_recall": row.dev_recall,
            "micro_f1": row.dev_f1,
            "accuracy": row.dev_accuracy,
            "loss": row.dev_loss,
        }
