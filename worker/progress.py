"""The trainer callback that reports a run to the database and checks for cancellation.

Writes are cheap and bounded: the job row and the buffered batch losses go out together at
most once per ``progress_interval`` (plus once at the first batch, so a watcher sees training
start at once); the cancel flag is read at most once per ``cancel_interval``. Every write is
fenced by the run's lease (``lease_owner = owner``): a run that lost its lease stops at the next
batch boundary and changes nothing more.

Epoch rows are upserts on UNIQUE(job_id, epoch): an epoch retrained after a crash (its checkpoint
never made it to storage) replaces its row instead of adding a second one. Batch losses are
unique per (job, epoch, batch), and a write retried after a lost commit answer skips the rows it
finds; a resumed run first deletes the rows of the epochs it retrains.

Batch losses are bounded too: at most ``LOSS_POINTS_PER_EPOCH`` rows per epoch whatever the corpus
size (see ``LossPoints``): one row per batch of a large corpus was hundreds of rows a second,
gigabytes a day per job, and a ``GET /jobs/{id}/metrics`` that took seconds and a gigabyte.

While the database is unavailable the run trains on: progress and batch losses stay buffered, the
cancel check waits, and the writes it cannot go on without (an epoch's metrics, a checkpoint's key)
wait for the database as long as the lease may still be ours (``worker.lease.while_leased``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from engine.training.callbacks import BatchEnded, EpochEnded, TrainerCallback, TrainingEnded, TrainingStarted
from engine.training.run_log import RunLog
from service.db.models import Job, JobBatchLoss, JobEpochMetric, epoch_metrics, utcnow
from service.db.session import DatabaseUnavailable, session_scope
from service.loss_points import LOSS_POINTS_PER_EPOCH, loss_stride
from service.storage import Storage, StorageUnavailable
from worker.lease import LeaseLostInOutage, first_line, update_owned_in, while_leased

log = logging.getLogger(__name__)

_EPOCH_IN_KEY = re.compile(r"/epoch-(\d+)-[0-9a-f]+$")


def checkpoint_key(job_id: str, epoch: int, run: str) -> str:
    """Every epoch of every run uploads to a prefix of its own, so the job row only ever points to
    a complete upload, and a run that lost its lease can never overwrite or delete its
    successor's checkpoint."""
    return f"jobs/{job_id}/checkpoints/epoch-{epoch:04d}-{run}"


def checkpoint_epoch(key: str) -> int:
    found = _EPOCH_IN_KEY.search(key)
    if found is None:
        raise ValueError(f"not a checkpoint key: {key!r}")
    return int(found.group(1))


def _scores(scores: dict[str, float] | None, prefix: str) -> dict[str, float | None]:
    scores = scores or {}
    if prefix == "dev":
        return {
            "dev_main_score": scores.get("main_score"),
            "dev_precision": scores.get("micro_precision"),
            "dev_recall": scores.get("micro_recall"),
            "dev_f1": scores.get("micro_f1"),
            "dev_accuracy": scores.get("accuracy"),
        }
    return {
        "test_main_score": scores.get("main_score"),
        "test_f1": scores.get("micro_f1"),
        "test_accuracy": scores.get("accuracy"),
    }


def _insert(session: Any, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"upsert: unsupported database dialect {dialect!r}")


def upsert_epoch_metric(session: Any, values: dict[str, Any]) -> None:
    changed = {k: v for k, v in values.items() if k not in ("job_id", "epoch")}
    stmt = _insert(session, JobEpochMetric).values(**values)
    session.execute(stmt.on_conflict_do_update(index_elements=["job_id", "epoch"], set_=changed))


def insert_batch_losses(session: Any, losses: list[dict[str, Any]]) -> None:
    """A write retried after its commit answer was lost finds its rows there and adds nothing."""
    if losses:
        stmt = _insert(session, JobBatchLoss).on_conflict_do_nothing(
            index_elements=["job_id", "epoch", "batch"]
        )
        session.execute(stmt, losses)


class LossPoints:
    """Batch losses in, at most ``points`` rows per epoch out.

    A row stands for the batches since the previous row of its epoch: ``batch`` is the last of
    them, ``loss`` their mean loss and ``learning_rate`` the rate at that last batch. A mean rather
    than every n-th batch's loss, so a curve of 200 points shows what 3,500 batches did, not a
    sample of their noise. Rows end at batches that are multiples of the stride (and at an epoch's
    last batch), so a retried write or a retrained epoch gives the same (epoch, batch) keys.
    """

    def __init__(self, job_id: str, points: int = LOSS_POINTS_PER_EPOCH) -> None:
        self.job_id = job_id
        self.points = points
        self._epoch: int | None = None
        self._sum = 0.0
        self._count = 0
        self._last: BatchEnded | None = None

    def add(self, info: BatchEnded) -> list[dict[str, Any]]:
        """The rows the batch completes: none, its own, or also an unclosed one of the last epoch."""
        rows = [] if self._epoch in (None, info.epoch) else self._closed()
        self._epoch = info.epoch
        self._sum += float(info.loss)
        self._count += 1
        self._last = info
        # The per-batch count, not TrainingStarted's: a language model's epochs (one per training
        # file) differ in length, and TrainingStarted announces only the first.
        bpe = max(1, info.batches_per_epoch)
        if info.batch % loss_stride(bpe, self.points) == 0 or info.batch >= bpe:
            rows += self._closed()
        return rows

    def _closed(self) -> list[dict[str, Any]]:
        row = self.close()
        return [] if row is None else [row]

    def close(self) -> dict[str, Any] | None:
        """The row of the batches since the last one (an epoch's end or a stopped run), if any."""
        last, count, total = self._last, self._count, self._sum
        self._epoch, self._sum, self._count, self._last = None, 0.0, 0, None
        if last is None or count == 0:
            return None
        return {
            "job_id": self.job_id,
            "epoch": last.epoch,
            "batch": last.batch,
            "loss": total / count,
            "learning_rate": float(last.learning_rate),
            "created_at": utcnow(),
        }


class Flag(Protocol):
    """What the run reads of its shutdown flag: a ``threading.Event``, or the lock-free
    ``worker.tasks.SignalFlag`` that a signal handler sets."""

    def is_set(self) -> bool: ...


class JobProgress(TrainerCallback):
    """Reports one run of job ``job_id`` held under lease ``owner``.

    ``lease_lost`` is shared with the lease heartbeat, ``shutdown`` is set when the worker is
    asked to stop; ``stop_reason`` says why ``should_stop`` fired (``"cancelled"``,
    ``"lease_lost"`` or ``"shutdown"``), None while the run may go on.
    """

    def __init__(
        self,
        job_id: str,
        owner: str,
        storage: Storage,
        lease_lost: threading.Event,
        *,
        progress_interval: float = 0.5,
        cancel_interval: float = 0.5,
        batch_sleep: float = 0.0,
        shutdown: Flag | None = None,
        clock: Callable[[], float] = time.monotonic,
        run_dir: Path | None = None,
    ) -> None:
        self.job_id = job_id
        self.run_dir = run_dir  # the trainer's base_path: its files go out with every checkpoint
        self.owner = owner
        self.storage = storage
        self.lease_lost = lease_lost
        self.progress_interval = progress_interval
        self.cancel_interval = cancel_interval
        self.batch_sleep = batch_sleep
        self.shutdown: Flag = shutdown if shutdown is not None else threading.Event()
        self.clock = clock
        self.stop_reason: str | None = None
        self.run_token = uuid.uuid4().hex[:8]
        self.best_dev_scores: dict[str, float] | None = None
        self.first_batch_at: float | None = None
        self.ended: TrainingEnded | None = None
        self._losses: list[dict[str, Any]] = []
        self._points = LossPoints(job_id)
        self._progress: dict[str, Any] = {}
        self._last_flush = float("-inf")
        self._last_cancel_check = float("-inf")
        self._max_epochs = 1
        self._batches_per_epoch = 1
        self._run_started = clock()
        self._batches_this_run = 0
        self._database_down = False  # logged once per outage

    # -- writes ---------------------------------------------------------------------------------
    def _write(self, work: Callable[[Any], None], **job_values: Any) -> bool:
        """One transaction: the fenced job update, then ``work`` only if we still hold the lease.

        The update also returns the cancel flag, so a run that writes progress learns about a
        cancel without a read of its own."""
        with session_scope() as session:
            cancel_requested = session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.lease_owner == self.owner)
                .values(**job_values)
                .returning(Job.cancel_requested)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
            if cancel_requested is None:
                self.lease_lost.set()
                return False
            work(session)
        self._last_cancel_check = self.clock()
        if cancel_requested:
            self.stop_reason = self.stop_reason or "cancelled"
        return True

    def _flush(self) -> None:
        """Progress and the buffered losses; kept for the next flush while the database is away."""
        losses, self._losses = self._losses, []
        self._last_flush = self.clock()

        try:
            self._write(lambda session: insert_batch_losses(session, losses), **self._progress)
        except DatabaseUnavailable as error:
            self._losses = losses + self._losses
            self._note_outage(error)
            return
        self._note_outage(None)

    def _write_or_wait(self, what: str, work: Callable[[Any], None], **job_values: Any) -> bool:
        return while_leased(
            lambda: self._write(work, **job_values), self.lease_lost, f"job {self.job_id}: {what}"
        )

    def _note_outage(self, error: BaseException | None) -> None:
        if error is not None and not self._database_down:
            log.warning(
                "job %s: database unavailable, training goes on with progress buffered: %s",
                self.job_id,
                first_line(error),
            )
        elif error is None and self._database_down:
            log.warning("job %s: database back, buffered progress written", self.job_id)
        self._database_down = error is not None

    # -- callback -------------------------------------------------------------------------------
    def on_train_start(self, info: TrainingStarted) -> None:
        self._max_epochs = max(1, info.max_epochs)
        self._batches_per_epoch = max(1, info.batches_per_epoch)
        self._run_started = self.clock()
        self._batches_this_run = 0
        self._points = LossPoints(self.job_id)
        done = info.start_epoch - 1
        self._write_or_wait(
            "the start of training",
            lambda _s: None,
            max_epochs=info.max_epochs,
            batches_per_epoch=info.batches_per_epoch,
            train_sentences=info.train_sentences,
            dev_sentences=info.dev_sentences,
            test_sentences=info.test_sentences,
            device=info.device,
            epoch=done,
            batch=0,
            percent=100.0 * done / self._max_epochs,
            # a run that ended inside an epoch (killed, reaped) left that epoch's running loss
            **epoch_metrics(done, "train_loss", "learning_rate"),
        )

    def on_batch_end(self, info: BatchEnded) -> None:
        now = self.clock()
        self._batches_this_run += 1
        bpe = max(1, info.batches_per_epoch)
        done = (info.epoch - 1) * bpe + info.batch
        total = self._max_epochs * bpe
        rate = self._batches_this_run / max(now - self._run_started, 1e-9)
        self._losses += self._points.add(info)
        self._progress = {
            # The job row counts completed epochs; ``batch`` is the position in the running one.
            "epoch": info.epoch - 1,
            "batch": info.batch,
            "batches_per_epoch": info.batches_per_epoch,
            "percent": min(100.0, 100.0 * done / total),
            "eta_seconds": max(0.0, (total - done) / rate),
            "learning_rate": float(info.learning_rate),
        }
        if info.epoch_loss is not None:
            # A watcher saw no loss at all until the first epoch ended (an hour, on a large corpus).
            self._progress["train_loss"] = float(info.epoch_loss)
        if self.first_batch_at is None:
            self.first_batch_at = now
            self._flush()
        elif now - self._last_flush >= self.progress_interval:
            self._flush()
        if self.batch_sleep:
            time.sleep(self.batch_sleep)

    def on_epoch_end(self, info: EpochEnded) -> None:
        if info.is_best and info.dev_scores:
            self.best_dev_scores = dict(info.dev_scores)
        self._close_point()
        losses, self._losses = self._losses, []
        self._last_flush = self.clock()
        row = {
            "job_id": self.job_id,
            "epoch": info.epoch,
            "created_at": utcnow(),
            "learning_rate": info.learning_rate,
            "train_loss": info.train_loss,
            "dev_loss": info.dev_loss,
            **_scores(info.dev_scores, "dev"),
            **_scores(info.test_scores, "test"),
            "bad_epochs": info.bad_epochs,
            "is_best": info.is_best,
            "seconds": info.seconds,
        }

        def write_epoch(session: Any) -> None:
            insert_batch_losses(session, losses)
            upsert_epoch_metric(session, row)

        job_values: dict[str, Any] = {
            **self._progress,
            "epoch": info.epoch,
            "batch": 0,
            "percent": min(100.0, 100.0 * info.epoch / self._max_epochs),
            "learning_rate": info.learning_rate,
            "train_loss": info.train_loss,
        }
        if info.is_best and info.dev_scores and info.dev_scores.get("main_score") is not None:
            job_values["best_dev_score"] = info.dev_scores["main_score"]
        self._write_or_wait(f"epoch {info.epoch}'s metrics", write_epoch, **job_values)

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        if self.lease_lost.is_set():
            return  # the run is stopping; the job may be another run's already
        key = checkpoint_key(self.job_id, epoch, self.run_token)
        try:
            self.storage.put_dir(key, Path(path))
            files = self.publish_files(f"epoch-{epoch:04d}")
        except StorageUnavailable as error:
            # Training needs no storage until its end: going on costs nothing, stopping would
            # cost the epochs since the last stored checkpoint. What was half written is the
            # storage sweep's (nothing points to it).
            self._checkpoint_not_stored(epoch, error)
            return
        except BaseException:
            with contextlib.suppress(StorageUnavailable):
                self.storage.delete(key)  # not recorded anywhere: nothing would ever delete it
            raise
        values = {
            "checkpoint_key": key,
            "checkpoint_epoch": epoch,
            "storage_retries": 0,
            **({"files_key": files} if files else {}),
        }

        def record() -> tuple[Any, bool]:
            # Read the old keys and point to the new ones in the same fenced transaction, so the
            # job never points to a snapshot of files older than its checkpoint. A checkpoint is
            # progress: the storage retries count again from zero.
            with session_scope() as session:
                previous = session.execute(
                    select(Job.checkpoint_key, Job.files_key).where(Job.id == self.job_id)
                ).one()
                return previous, update_owned_in(session, self.job_id, self.owner, **values)

        try:
            previous, owned = while_leased(
                record, self.lease_lost, f"job {self.job_id}: epoch {epoch}'s checkpoint"
            )
        except LeaseLostInOutage:
            raise  # the job may point to them now: the storage sweep decides
        except BaseException:
            for new in (key, files):
                if new:
                    self.storage.delete(new)
            raise
        if not owned:
            self.lease_lost.set()
            for new in (key, files):
                if new:
                    self.storage.delete(new)
            return
        for old, new in ((previous.checkpoint_key, key), (previous.files_key, files)):
            if old and new and old != new:
                self.storage.delete(old)

    def _checkpoint_not_stored(self, epoch: int, error: StorageUnavailable) -> None:
        log.warning(
            "job %s: epoch %d's checkpoint could not be stored, training goes on: %s",
            self.job_id,
            epoch,
            first_line(error),
        )
        if self.run_dir is not None:
            # Where storage lives is the operator's business: the job's own log says only what.
            RunLog(self.run_dir / "training.log", log)(
                f"storage unavailable: epoch {epoch}'s checkpoint was not stored; training goes on "
                "and the next epoch's checkpoint is stored in its place"
            )

    def publish_files(self, label: str) -> str | None:
        """A snapshot of the run folder's files under a key of this run's (None: nothing yet)."""
        if self.run_dir is None:
            return None
        from worker.run_files import publish

        return publish(self.storage, self.job_id, self.run_token, label, self.run_dir)

    def on_train_end(self, info: TrainingEnded) -> None:
        self.ended = info
        self._close_point()
        if self._losses:
            losses, self._losses = self._losses, []
            self._write_or_wait(
                "the last batch losses",
                lambda session: insert_batch_losses(session, losses),
                **self._progress,
            )

    def _close_point(self) -> None:
        point = self._points.close()
        if point is not None:
            self._losses.append(point)

    def should_stop(self) -> bool:
        if self.lease_lost.is_set():
            self.stop_reason = "lease_lost"
            return True
        if self.shutdown.is_set() and self.stop_reason is None:
            self.stop_reason = "shutdown"
        now = self.clock()
        if now - self._last_cancel_check < self.cancel_interval:
            return self.stop_reason is not None
        self._last_cancel_check = now
        try:
            with session_scope() as session:
                row = session.execute(
                    select(Job.cancel_requested, Job.lease_owner).where(Job.id == self.job_id)
                ).one_or_none()
        except DatabaseUnavailable as error:
            # no news: the heartbeat decides when an outage has lasted too long to go on
            self._note_outage(error)
            return self.stop_reason is not None
        if row is None or row.lease_owner != self.owner:
            self.lease_lost.set()
            self.stop_reason = "lease_lost"
        elif row.cancel_requested:
            self.stop_reason = "cancelled"
        return self.stop_reason is not None
