"""SQLAlchemy 2 tables: the system of record shared by the API and the worker.

Ids are UUID strings, times timezone-aware UTC. JSON columns hold what the contract
(docs/CONTRACTS.md) names; the Alembic migration in ``service/db/migrations`` creates the same
schema. Imported by the worker: no FastAPI here.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from service.db.clock import db_now

JOB_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINISHED_STATUSES = ("completed", "failed", "cancelled")
JOB_KINDS = ("train", "language_model")


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def db_now_default(context: Any) -> datetime:
    """``db_now()`` as a column default, on the database the statement runs on."""
    return db_now(context.connection.engine)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone; put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _finite(value: Any) -> Any:
    """``value`` with every NaN and infinity in it (at any depth of a JSON value) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class Measure(TypeDecorator[float]):
    """A loss, score or rate a run reports: NaN and infinity (a diverging run) are stored and read
    as NULL. SQLite cannot store NaN (a NOT NULL batch loss failed the write, and with it the
    run), and JSON has no such numbers (PostgreSQL kept them, and the job's event stream wrote
    them as NaN, which a browser's JSON.parse refuses)."""

    impl = Float
    cache_ok = True

    def process_bind_param(self, value: float | None, dialect: Any) -> float | None:
        return _finite(value)

    def process_result_value(self, value: float | None, dialect: Any) -> float | None:
        return _finite(value)


class Measures(TypeDecorator[Any]):
    """JSON of a run's scores (a model's dev and test metrics): NaN and infinity stored as null, as
    ``Measure`` does. PostgreSQL refuses them in JSON ("invalid input syntax for type json"), which
    failed a finished run as its model was saved."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return _finite(value)


class Base(DeclarativeBase):
    pass


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(
        ForeignKey("owners.id", ondelete="CASCADE"), nullable=False, index=True
    )
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Corpus(Base):
    __tablename__ = "corpora"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(
        ForeignKey("owners.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    task: Mapped[str] = mapped_column(String(40), nullable=False)
    format: Mapped[str] = mapped_column(String(20), nullable=False)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    files: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False, default=dict)
    statistics: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    label_types: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False, default=dict)
    has_documents: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(
        ForeignKey("owners.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="train")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="queued", index=True)
    queue: Mapped[str] = mapped_column(String(20), nullable=False, default="cpu")
    celery_task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    checkpoint_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # The checkpoint's epoch, which trails ``epoch`` when a run stopped between an epoch's metrics
    # and its checkpoint, or went on while storage could not take its checkpoints.
    checkpoint_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # the newest snapshot of the run's files (service.run_files): training.log, loss.tsv ...
    files_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    epoch: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_epochs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    batch: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    batches_per_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # what the run trains and scores on, after sampling, downsampling and merging corpora
    train_sentences: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dev_sentences: Mapped[int | None] = mapped_column(Integer, nullable=True)
    test_sentences: Mapped[int | None] = mapped_column(Integer, nullable=True)
    percent: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    eta_seconds: Mapped[float | None] = mapped_column(Measure, nullable=True)
    learning_rate: Mapped[float | None] = mapped_column(Measure, nullable=True)
    train_loss: Mapped[float | None] = mapped_column(Measure, nullable=True)
    best_dev_score: Mapped[float | None] = mapped_column(Measure, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A run that could not reach storage puts its job back ``queued`` until ``retry_at`` (the reaper
    # sends it then); ``storage_retries`` counts such retries since the last checkpoint.
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    storage_retries: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    device: Mapped[str | None] = mapped_column(String(40), nullable=True)
    worker_host: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # No FK: a model row is created at the end of its job, and deleting a model keeps the job's history.
    model_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The database's clock: the reaper on another machine tells a lost message by it.
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=db_now_default, onupdate=db_now_default
    )


def at_completed_epoch(done: ColumnElement[int]) -> dict[str, Any]:
    """A job row's progress fields as of completed epoch ``done``, for a run that stopped inside
    a later one: the trainer drops a partial epoch and resumes from the checkpoint of a completed
    one, so the row shows no position in the partial epoch and, from the epoch's metrics row, its
    loss and learning rate instead of the partial one's."""
    percent: ColumnElement[float] = case((Job.max_epochs > 0, 100.0 * done / Job.max_epochs), else_=0.0)
    return {
        "epoch": done,
        "batch": 0,
        "percent": percent,
        **epoch_metrics(done, "train_loss", "learning_rate"),
    }


def epoch_metrics(epoch: ColumnElement[int] | int, *columns: str) -> dict[str, Any]:
    """``columns`` of the job's metrics row for ``epoch``, as scalar subqueries of a job update
    (NULL without a row)."""
    return {
        column: select(getattr(JobEpochMetric, column))
        .where(JobEpochMetric.job_id == Job.id, JobEpochMetric.epoch == epoch)
        .scalar_subquery()
        for column in columns
    }


def resumes_after(without_checkpoint: ColumnElement[int] | int) -> ColumnElement[int]:
    """The completed epoch a job's next run continues from: its checkpoint's (a row checkpointed
    before ``checkpoint_epoch`` existed: its ``epoch``), ``without_checkpoint`` when it has none."""
    return case(
        (Job.checkpoint_key.is_(None), without_checkpoint),
        else_=func.coalesce(Job.checkpoint_epoch, Job.epoch),
    )


def queued_again() -> dict[str, Any]:
    """The fields of a job that goes back to the queue (resumed, handed back, or reaped): no ETA and
    no partial epoch, since the next run starts from the checkpoint of a completed epoch, or from
    the start when there is none."""
    return {"status": "queued", "eta_seconds": None, **at_completed_epoch(resumes_after(0))}


class JobEpochMetric(Base):
    __tablename__ = "job_epoch_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_job_epoch_metrics_job_epoch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    learning_rate: Mapped[float | None] = mapped_column(Measure, nullable=True)
    train_loss: Mapped[float | None] = mapped_column(Measure, nullable=True)
    dev_loss: Mapped[float | None] = mapped_column(Measure, nullable=True)
    dev_main_score: Mapped[float | None] = mapped_column(Measure, nullable=True)
    dev_precision: Mapped[float | None] = mapped_column(Measure, nullable=True)
    dev_recall: Mapped[float | None] = mapped_column(Measure, nullable=True)
    dev_f1: Mapped[float | None] = mapped_column(Measure, nullable=True)
    dev_accuracy: Mapped[float | None] = mapped_column(Measure, nullable=True)
    test_main_score: Mapped[float | None] = mapped_column(Measure, nullable=True)
    test_f1: Mapped[float | None] = mapped_column(Measure, nullable=True)
    test_accuracy: Mapped[float | None] = mapped_column(Measure, nullable=True)
    bad_epochs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    is_best: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    seconds: Mapped[float | None] = mapped_column(Measure, nullable=True)


class JobBatchLoss(Base):
    __tablename__ = "job_batch_losses"
    # Unique, so a flush retried after a lost commit answer cannot add a batch's loss twice.
    __table_args__ = (Index("ix_job_batch_losses_job_epoch_batch", "job_id", "epoch", "batch", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)
    batch: Mapped[int] = mapped_column(Integer, nullable=False)
    # NULL: not a finite number (Measure)
    loss: Mapped[float | None] = mapped_column(Measure, nullable=True)
    learning_rate: Mapped[float | None] = mapped_column(Measure, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(
        ForeignKey("owners.id", ondelete="CASCADE"), nullable=False, index=True
    )
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    task: Mapped[str] = mapped_column(String(40), nullable=False)
    label_type: Mapped[str] = mapped_column(String(100), nullable=False)
    labels: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    storage_key: Mapped[str] = mapped_column(String(300), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    dev_metrics: Mapped[dict[str, Any] | None] = mapped_column(Measures, nullable=True)
    test_metrics: Mapped[dict[str, Any] | None] = mapped_column(Measures, nullable=True)
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


# Aliases for code that also imports the engine's Corpus and Model classes.
CorpusRow = Corpus
ModelRow = Model
