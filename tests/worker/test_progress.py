"""The progress callback against the real database and storage, driven by hand (no trainer)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from engine.training.callbacks import BatchEnded, EpochEnded, TrainingEnded, TrainingStarted
from service.db.models import Job, JobBatchLoss, JobEpochMetric, Owner
from service.db.session import session_scope
from service.storage import StorageUnavailable, get_storage
from worker import lease
from worker import progress as progress_module
from worker.progress import JobProgress, checkpoint_epoch

pytestmark = pytest.mark.postgres


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def running_job() -> str:
    with session_scope() as session:
        owner = Owner(name="progress-tests")
        session.add(owner)
        session.flush()
        job = Job(owner_id=owner.id, name="job", spec={}, status="queued")
        session.add(job)
        session.flush()
        job_id = job.id
    assert lease.claim(job_id, "me", lease_seconds=60).claimed
    return job_id


def job_row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def loss_rows(job_id: str) -> int:
    with session_scope() as session:
        return int(session.execute(select(func.count()).where(JobBatchLoss.job_id == job_id)).scalar_one())


def batch(epoch: int, n: int) -> BatchEnded:
    return BatchEnded(epoch, n, 10, loss=1.0 / n, learning_rate=0.1, sentences_per_s=1.0, tokens_per_s=1.0)


def epoch_end(epoch: int, score: float, best: bool) -> EpochEnded:
    return EpochEnded(
        epoch=epoch,
        train_loss=0.5,
        dev_loss=0.4,
        dev_scores={"main_score": score, "micro_precision": score, "micro_recall": score, "micro_f1": score},
        test_scores=None,
        learning_rate=0.1,
        is_best=best,
        bad_epochs=0,
        seconds=1.0,
    )


def make_progress(job_id: str, clock: Clock, owner: str = "me") -> JobProgress:
    return JobProgress(
        job_id,
        owner,
        get_storage(),
        threading.Event(),
        progress_interval=0.5,
        cancel_interval=0.5,
        clock=clock,
    )


def test_batch_progress_is_throttled_and_losses_are_kept(environment: dict[str, str]) -> None:
    job_id = running_job()
    clock = Clock()
    progress = make_progress(job_id, clock)
    progress.on_train_start(TrainingStarted(3, 1, 10, 40, 4, "cpu", test_sentences=5))
    job = job_row(job_id)
    assert (job.train_sentences, job.dev_sentences, job.test_sentences) == (40, 4, 5)
    progress.on_batch_end(batch(1, 1))  # the first batch is written at once
    assert (job_row(job_id).batch, loss_rows(job_id)) == (1, 1)
    for n in range(2, 6):
        clock.now += 0.1
        progress.on_batch_end(batch(1, n))
    assert (job_row(job_id).batch, loss_rows(job_id)) == (1, 1), "wrote more often than the interval"
    clock.now += 0.5
    progress.on_batch_end(batch(1, 6))
    job = job_row(job_id)
    assert (job.epoch, job.batch, loss_rows(job_id)) == (0, 6, 6)
    assert job.percent == pytest.approx(20.0) and job.eta_seconds is not None and job.batches_per_epoch == 10
    progress.on_epoch_end(epoch_end(1, 0.7, best=True))
    job = job_row(job_id)
    assert (job.epoch, job.batch, job.best_dev_score) == (1, 0, 0.7)
    assert progress.best_dev_scores is not None and progress.best_dev_scores["main_score"] == 0.7


def test_a_worse_epoch_after_the_best_one_keeps_the_best_score(environment: dict[str, str]) -> None:
    # The job row and the scores kept for the model took the last epoch's score, best or not.
    job_id = running_job()
    progress = make_progress(job_id, Clock())
    progress.on_train_start(TrainingStarted(3, 1, 10, 40, 4, "cpu"))
    progress.on_epoch_end(epoch_end(1, 0.8, best=True))
    progress.on_epoch_end(epoch_end(2, 0.5, best=False))
    job = job_row(job_id)
    assert (job.epoch, job.best_dev_score) == (2, 0.8)
    assert progress.best_dev_scores is not None and progress.best_dev_scores["main_score"] == 0.8


def test_a_resumed_run_starts_at_the_epochs_already_done(environment: dict[str, str]) -> None:
    # A run resumed at epoch 3 has 2 epochs done: the job must not show 0 % (or 3 epochs) until
    # its first batch.
    job_id = running_job()
    progress = make_progress(job_id, Clock())
    progress.on_train_start(TrainingStarted(4, 3, 10, 40, 4, "cpu"))
    job = job_row(job_id)
    assert (job.epoch, job.batch, job.max_epochs) == (2, 0, 4)
    assert job.percent == pytest.approx(50.0)


def test_a_run_ended_inside_an_epoch_shows_the_completed_epochs_loss_when_queued_and_resumed(
    environment: dict[str, str],
) -> None:
    # A killed run left the dropped epoch's batch, percent and running loss on the row, through
    # the reaper's requeue and the resumed run's start, until the resumed run's first batch.
    from sqlalchemy import update

    from service.db.models import queued_again

    job_id = running_job()
    first = make_progress(job_id, Clock())
    first.on_train_start(TrainingStarted(4, 1, 10, 40, 4, "cpu"))
    first.on_epoch_end(epoch_end(1, 0.5, True))
    with session_scope() as session:
        session.get(Job, job_id).checkpoint_key = "jobs/x/checkpoints/epoch-0001"  # type: ignore[union-attr]
    first.on_batch_end(BatchEnded(2, 7, 10, 9.0, 0.05, 1.0, 1.0, epoch_loss=8.0))
    job = job_row(job_id)
    assert (job.epoch, job.batch, job.percent, job.train_loss, job.learning_rate) == (1, 7, 42.5, 8.0, 0.05)

    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**queued_again(), lease_owner=None))
    job = job_row(job_id)
    assert (job.status, job.epoch, job.batch, job.percent) == ("queued", 1, 0, 25.0)
    assert (job.train_loss, job.learning_rate) == (0.5, 0.1), "epoch 1's, from its metrics row"

    first.on_batch_end(BatchEnded(2, 8, 10, 9.0, 0.05, 1.0, 1.0, epoch_loss=8.0))
    with session_scope() as session:  # the row as the killed run last wrote it, then claimed again
        session.execute(
            update(Job).where(Job.id == job_id).values(batch=8, train_loss=8.0, learning_rate=0.05)
        )
    assert lease.claim(job_id, "again", lease_seconds=60).claimed
    make_progress(job_id, Clock(), owner="again").on_train_start(TrainingStarted(4, 2, 10, 40, 4, "cpu"))
    job = job_row(job_id)
    assert (job.epoch, job.batch, job.percent, job.train_loss, job.learning_rate) == (1, 0, 25.0, 0.5, 0.1)

    # A job resumed without a checkpoint starts over: nothing of the old run's loss stays.
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(checkpoint_key=None, lease_owner=None))
        session.execute(update(Job).where(Job.id == job_id).values(**queued_again()))
    job = job_row(job_id)
    assert (job.epoch, job.percent, job.train_loss, job.learning_rate) == (0, 0.0, None, None)


def test_a_job_requeued_after_an_epoch_without_its_checkpoint_shows_the_checkpoints_epoch(
    environment: dict[str, str], tmp_path: Path
) -> None:
    # Epoch 2's metrics were written, its checkpoint was not (the run died in between, or storage
    # was down): the requeued job showed 2 epochs done, then 1 when the resumed run started.
    from dataclasses import replace

    from sqlalchemy import update

    from service.db.models import queued_again

    job_id = running_job()
    progress = make_progress(job_id, Clock())
    progress.on_train_start(TrainingStarted(4, 1, 10, 40, 4, "cpu"))
    progress.on_epoch_end(epoch_end(1, 0.5, True))
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "state.json").write_text("{}")
    progress.on_checkpoint(folder, 1)
    progress.on_epoch_end(replace(epoch_end(2, 0.6, True), train_loss=0.25, learning_rate=0.05))
    assert (job_row(job_id).epoch, job_row(job_id).checkpoint_epoch) == (2, 1)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**queued_again(), lease_owner=None))
    job = job_row(job_id)
    assert (job.epoch, job.percent, job.train_loss, job.learning_rate) == (1, 25.0, 0.5, 0.1)


def test_an_epoch_trained_again_replaces_its_row(environment: dict[str, str]) -> None:
    job_id = running_job()
    progress = make_progress(job_id, Clock())
    progress.on_epoch_end(epoch_end(1, 0.5, best=True))
    progress.on_epoch_end(epoch_end(1, 0.6, best=True))
    with session_scope() as session:
        rows = session.scalars(select(JobEpochMetric).where(JobEpochMetric.job_id == job_id)).all()
        assert [(r.epoch, r.dev_main_score, r.dev_f1) for r in rows] == [(1, 0.6, 0.6)]


def test_checkpoints_upload_and_replace_the_previous_one(environment: dict[str, str], tmp_path: Path) -> None:
    job_id = running_job()
    progress = make_progress(job_id, Clock())
    storage = get_storage()
    for epoch in (1, 2):
        folder = tmp_path / f"checkpoint-{epoch}"
        folder.mkdir()
        (folder / "state.json").write_text(f'{{"epoch": {epoch}}}')
        progress.on_checkpoint(folder, epoch)
    key = job_row(job_id).checkpoint_key
    assert key is not None and checkpoint_epoch(key) == 2
    assert storage.get(f"{key}/state.json") == b'{"epoch": 2}'
    assert storage.list(f"jobs/{job_id}/checkpoints") == [f"{key}/state.json"]


def test_a_checkpoint_storage_cannot_take_is_skipped_and_training_goes_on(
    environment: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = running_job()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    progress = make_progress(job_id, Clock())
    progress.run_dir = run_dir
    storage = progress.storage
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "state.json").write_text('{"epoch": 1}')
    progress.on_checkpoint(folder, 1)
    stored = job_row(job_id).checkpoint_key

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise StorageUnavailable("storage s3://bucket/ is unavailable: connection refused")

    monkeypatch.setattr(storage, "put_dir", unavailable)
    (folder / "state.json").write_text('{"epoch": 2}')
    progress.on_checkpoint(folder, 2)  # no exception: the run trains on
    assert job_row(job_id).checkpoint_key == stored, "the job must keep pointing to a stored checkpoint"
    line = (run_dir / "training.log").read_text().splitlines()[-1]
    assert "epoch 2's checkpoint was not stored; training goes on" in line and "s3://" not in line

    monkeypatch.undo()
    (folder / "state.json").write_text('{"epoch": 3}')
    progress.on_checkpoint(folder, 3)
    key = job_row(job_id).checkpoint_key
    assert key is not None and checkpoint_epoch(key) == 3
    assert storage.list(f"jobs/{job_id}/checkpoints") == [f"{key}/state.json"]


def test_cancel_flag_and_a_lost_lease_stop_the_run(environment: dict[str, str], tmp_path: Path) -> None:
    job_id = running_job()
    clock = Clock()
    progress = make_progress(job_id, clock)
    assert not progress.should_stop()
    with session_scope() as session:
        session.get(Job, job_id).cancel_requested = True  # type: ignore[union-attr]
    assert not progress.should_stop(), "read the flag again before the interval passed"
    clock.now += 0.5
    assert progress.should_stop() and progress.stop_reason == "cancelled"

    other = running_job()
    intruder = make_progress(other, clock, owner="not-the-holder")
    intruder.on_batch_end(batch(1, 1))
    assert intruder.lease_lost.is_set() and intruder.should_stop() and intruder.stop_reason == "lease_lost"
    assert loss_rows(other) == 0 and job_row(other).batch == 0
    folder = tmp_path / "stale"
    folder.mkdir()
    (folder / "x").write_text("x")
    intruder.on_checkpoint(folder, 1)
    assert job_row(other).checkpoint_key is None
    assert get_storage().list(f"jobs/{other}") == [], "a fenced-off run must not leave files behind"


def test_train_end_flushes_the_buffered_losses(environment: dict[str, str]) -> None:
    job_id = running_job()
    clock = Clock()
    progress = make_progress(job_id, clock)
    progress.on_train_start(TrainingStarted(1, 1, 10, 40, 4, "cpu"))
    for n in range(1, 5):
        progress.on_batch_end(batch(1, n))
    progress.on_train_end(TrainingEnded("completed", 1, 0.5, None, None))
    assert loss_rows(job_id) == 4 and progress.ended is not None


def stored_losses(job_id: str) -> list[tuple[int, int, float]]:
    with session_scope() as session:
        rows = session.execute(
            select(JobBatchLoss.epoch, JobBatchLoss.batch, JobBatchLoss.loss)
            .where(JobBatchLoss.job_id == job_id)
            .order_by(JobBatchLoss.epoch, JobBatchLoss.batch)
        ).all()
    return [(e, b, loss) for e, b, loss in rows]


def test_a_long_epoch_stores_at_most_the_cap_each_point_the_mean_of_its_batches(
    environment: dict[str, str],
) -> None:
    # One row per batch grew without bound: 3,500 batches an epoch was 525,000 rows in 150 epochs.
    job_id = running_job()
    clock = Clock()
    progress = make_progress(job_id, clock)
    per_epoch = 1001  # stride 6: 166 full points of 6 batches and a last one of 5
    progress.on_train_start(TrainingStarted(2, 1, per_epoch, 40, 4, "cpu"))
    for epoch in (1, 2):
        for n in range(1, per_epoch + 1):
            clock.now += 0.01
            info = BatchEnded(epoch, n, per_epoch, float(n), 0.1, 1.0, 1.0)
            progress.on_batch_end(info)
        progress.on_epoch_end(epoch_end(epoch, 0.5, best=True))
    # a run stopped in the middle of epoch 3's first point keeps what it trained
    for n in range(1, 4):
        progress.on_batch_end(BatchEnded(3, n, per_epoch, float(n), 0.1, 1.0, 1.0))
    progress.on_train_end(TrainingEnded("cancelled", 2, 0.5, None, None))
    rows = stored_losses(job_id)
    for epoch in (1, 2):
        points = [(b, loss) for e, b, loss in rows if e == epoch]
        assert len(points) == 167  # not 1,001
        assert points[0] == (6, pytest.approx(3.5))  # batches 1-6
        assert points[1] == (12, pytest.approx(9.5))  # batches 7-12
        assert points[-1] == (1001, pytest.approx(999.0))  # batches 997-1001
        # a mean, not a sample: the points weigh the batches they stand for
        assert sum(loss * 6 for _, loss in points[:-1]) + points[-1][1] * 5 == pytest.approx(
            sum(range(1, per_epoch + 1))
        )
    assert [(b, loss) for e, b, loss in rows if e == 3] == [(3, pytest.approx(2.0))]


def test_the_cap_holds_for_any_epoch_length() -> None:
    cap = progress_module.LOSS_POINTS_PER_EPOCH
    for per_epoch in (1, 199, 200, 201, 399, 400, 401, 3500, 100_003):
        points = progress_module.LossPoints("job")
        rows = []
        for n in range(1, per_epoch + 1):
            rows += points.add(BatchEnded(1, n, per_epoch, 1.0, 0.1, 1.0, 1.0))
        assert points.close() is None
        # every batch while it fits, else as near the cap as equal strides allow
        assert len(rows) == per_epoch if per_epoch <= cap else cap // 2 < len(rows) <= cap
        assert rows[-1]["batch"] == per_epoch


def test_a_write_whose_commit_answer_was_lost_adds_no_loss_twice(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit lands but its answer never comes: the run keeps the losses and writes them again."""
    job_id = running_job()
    clock = Clock()
    progress = make_progress(job_id, clock)
    progress.on_train_start(TrainingStarted(3, 1, 10, 40, 4, "cpu"))

    @contextmanager
    def answer_lost() -> Iterator[Any]:
        with session_scope() as session:
            yield session
        raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(progress_module, "session_scope", answer_lost)
    progress.on_batch_end(batch(1, 1))  # written at once, but the run cannot know
    for n in range(2, 4):
        clock.now += 0.5
        progress.on_batch_end(batch(1, n))
    monkeypatch.undo()
    clock.now += 0.5
    progress.on_batch_end(batch(1, 4))
    progress.on_epoch_end(epoch_end(1, 0.7, best=True))
    with session_scope() as session:
        batches = session.scalars(
            select(JobBatchLoss.batch).where(JobBatchLoss.job_id == job_id).order_by(JobBatchLoss.batch)
        ).all()
    assert batches == [1, 2, 3, 4]


def test_a_progress_write_also_brings_the_cancel_flag(environment: dict[str, str]) -> None:
    job_id = running_job()
    clock = Clock()
    progress = make_progress(job_id, clock)
    progress.on_train_start(TrainingStarted(3, 1, 10, 40, 4, "cpu"))
    with session_scope() as session:
        session.get(Job, job_id).cancel_requested = True  # type: ignore[union-attr]
    progress.on_batch_end(batch(1, 1))  # the first batch is written at once
    assert progress.stop_reason == "cancelled"
    assert progress.should_stop()


def test_the_loss_of_the_epoch_in_progress_is_shown_and_a_diverged_one_is_null(
    environment: dict[str, str],
) -> None:
    # A watcher saw no loss until the first epoch ended; and on SQLite a NaN batch loss (a
    # diverging run) failed the progress write, so the run died of an IntegrityError instead of
    # the trainer's "training diverged" message.
    job_id = running_job()
    progress = make_progress(job_id, Clock())
    progress.on_train_start(TrainingStarted(3, 1, 10, 40, 4, "cpu"))
    progress.on_batch_end(BatchEnded(1, 1, 10, 2.5, 0.1, 1.0, 1.0, epoch_loss=2.5))
    assert job_row(job_id).train_loss == 2.5
    nan, inf = float("nan"), float("inf")
    progress.on_batch_end(BatchEnded(1, 2, 10, nan, 0.1, 1.0, 1.0, epoch_loss=nan))
    progress.on_epoch_end(
        EpochEnded(1, nan, inf, {"main_score": nan, "micro_f1": nan}, None, 0.1, False, 1, 1.0)
    )
    assert (job_row(job_id).epoch, job_row(job_id).train_loss) == (1, None)
    with session_scope() as session:
        points = session.execute(
            select(JobBatchLoss.batch, JobBatchLoss.loss).where(JobBatchLoss.job_id == job_id)
        )
        assert sorted(points.tuples()) == [(1, 2.5), (2, None)]
        metric = session.execute(select(JobEpochMetric).where(JobEpochMetric.job_id == job_id)).scalar_one()
        assert (metric.train_loss, metric.dev_loss, metric.dev_main_score, metric.dev_f1) == (
            None,
            None,
            None,
            None,
        )
