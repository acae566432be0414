"""Fixtures for the service tests: an isolated database (SQLite, or a fresh PostgreSQL schema
when TAGSMITH_TEST_DATABASE_URL is set), storage and settings per test, and an app client whose
job queue records messages instead of sending them (tests of the real worker live in
tests/worker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.service.fixtures import ApiSession, configured_service


@pytest.fixture
def service_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    with configured_service(monkeypatch, tmp_path) as url:
        yield url


@pytest.fixture
def api(service_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiSession]:
    from service import queue
    from service.app import create_app

    session = ApiSession(client=None)  # type: ignore[arg-type]

    def record(job_id: str, queue_name: str) -> str:
        session.enqueued.append((job_id, queue_name))
        return f"task-{len(session.enqueued)}"

    monkeypatch.setattr(queue, "enqueue_job", record)
    with TestClient(create_app()) as client:
        session.client = client
        yield session
