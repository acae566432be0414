from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, select

from service.db.migrate import downgrade, upgrade
from service.db.models import Base, Job, JobBatchLoss, Owner, new_id
from service.db.session import get_engine, session_scope
from service.schemas.spec import TrainingSpec
from service.settings import Settings, get_settings, reset_settings


@pytest.mark.postgres
def test_migrations_create_exactly_the_models_schema_and_go_back(service_env: str) -> None:
    engine = get_engine()
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    tables = set(inspect(engine).get_table_names())
    assert {
        "owners",
        "api_keys",
        "corpora",
        "jobs",
        "job_epoch_metrics",
        "job_batch_losses",
        "models",
    } <= tables
    downgrade()
    assert set(inspect(get_engine()).get_table_names()) <= {"alembic_version"}
    upgrade()
    upgrade()  # idempotent


@pytest.mark.postgres
def test_a_migration_waits_for_the_one_in_progress(service_env: str) -> None:
    # API processes and replicas that started together raced on the DDL, and some of them failed.
    import threading

    from service.db.migrate import _migration_lock

    downgrade()
    failures: list[BaseException] = []

    def migrate() -> None:
        try:
            upgrade()
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            failures.append(error)

    waiting = threading.Thread(target=migrate)
    with _migration_lock(get_engine()):
        waiting.start()
        waiting.join(1.5)
        assert waiting.is_alive()  # it waits for the lock ...
        assert "jobs" not in inspect(get_engine()).get_table_names()
    waiting.join(30)
    assert not waiting.is_alive() and failures == []  # ... and then migrates
    assert "jobs" in inspect(get_engine()).get_table_names()


@pytest.mark.postgres
@pytest.mark.parametrize("on_start", ["true", "false"])
def test_the_api_migrates_as_it_starts_unless_told_not_to(
    service_env: str, monkeypatch: pytest.MonkeyPatch, on_start: str
) -> None:
    # `tagsmith api --no-migrate` said it would not migrate, and every API process did all the same.
    from fastapi.testclient import TestClient

    from service.app import create_app

    downgrade()
    monkeypatch.setenv("TAGSMITH_MIGRATE_ON_START", on_start)
    reset_settings()
    with TestClient(create_app()):
        migrated = "jobs" in inspect(get_engine()).get_table_names()
    assert migrated == (on_start == "true")
    upgrade()


@pytest.mark.postgres
def test_the_unique_batch_loss_migration_keeps_one_row_per_batch(service_env: str) -> None:
    """Databases from before 0004 may hold a batch's loss twice (a retried write): one stays."""
    downgrade(revision="0003")
    with session_scope() as session:
        owner = Owner(name="o")
        session.add(owner)
        session.flush()
        # a core insert names only the columns it sets: the schema at 0003 lacks later ones
        job_id = new_id()
        session.execute(insert(Job).values(id=job_id, owner_id=owner.id, name="j", spec={}))
        rows = [(1, 1, 0.9), (1, 1, 0.9), (1, 2, 0.8), (2, 1, 0.5), (2, 1, 0.5), (2, 1, 0.5)]
        session.execute(
            insert(JobBatchLoss),
            [{"job_id": job_id, "epoch": e, "batch": b, "loss": loss} for e, b, loss in rows],
        )
    upgrade()
    with session_scope() as session:
        kept = session.execute(
            select(JobBatchLoss.epoch, JobBatchLoss.batch, JobBatchLoss.loss).order_by(
                JobBatchLoss.epoch, JobBatchLoss.batch
            )
        ).all()
    assert [tuple(row) for row in kept] == [(1, 1, 0.9), (1, 2, 0.8), (2, 1, 0.5)]


@pytest.mark.postgres
def test_times_are_utc_aware_and_job_defaults(service_env: str) -> None:
    with session_scope() as session:
        owner = Owner(name="o")
        session.add(owner)
        session.flush()
        job = Job(owner_id=owner.id, name="j", spec={"a": 1})
        session.add(job)
    with session_scope() as session:
        job = session.get(Job, job.id)
        assert job.created_at.tzinfo is not None and job.created_at.utcoffset().total_seconds() == 0
        assert (job.status, job.kind, job.queue, job.attempts, job.cancel_requested) == (
            "queued",
            "train",
            "cpu",
            0,
            False,
        )


def test_session_scope_rolls_back_on_error(service_env: str) -> None:
    with pytest.raises(RuntimeError), session_scope() as session:
        session.add(Owner(name="ghost"))
        session.flush()
        raise RuntimeError("fail")
    with session_scope() as session:
        assert session.query(Owner).count() == 0


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATA_DIR", "DATABASE_URL", "STORAGE_URL", "OPEN_MODE", "BROKER_URL"):
        monkeypatch.delenv(f"TAGSMITH_{name}", raising=False)
    settings = Settings()
    assert settings.resolved_database_url.endswith(".tagsmith/tagsmith.db")
    assert (
        settings.storage_root.name == "storage" and settings.open_mode is False and settings.broker_url == ""
    )
    monkeypatch.setenv("TAGSMITH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TAGSMITH_STORAGE_URL", f"file://{tmp_path}/objects")
    monkeypatch.setenv("TAGSMITH_PREDICT_MAX_BATCH", "7")
    reset_settings()
    try:
        s = get_settings()
        assert s.resolved_database_url == f"sqlite:///{tmp_path}/tagsmith.db"
        assert s.storage_root == tmp_path / "objects"
        assert s.predict_max_batch == 7
        monkeypatch.setenv("TAGSMITH_STORAGE_URL", "ftp://host/folder")
        reset_settings()
        with pytest.raises(ValueError, match="unsupported scheme"):
            _ = get_settings().storage_root
    finally:
        reset_settings()


def test_spec_defaults_follow_the_tutorial() -> None:
    spec = TrainingSpec.model_validate({"corpus": {"ids": ["c"]}})
    assert spec.task == "sequence_tagging"
    assert [e.type for e in spec.embeddings] == ["word", "character"]
    assert (spec.model.hidden_size, spec.model.use_crf, spec.model.use_rnn) == (256, True, True)
    t = spec.trainer
    assert (t.optimizer, t.learning_rate, t.mini_batch_size, t.max_epochs, t.scheduler) == (
        "sgd",
        0.1,
        32,
        10,
        "anneal_on_plateau",
    )
    assert TrainingSpec.model_validate(spec.model_dump(mode="json")) == spec
