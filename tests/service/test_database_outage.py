"""An API whose database cannot be reached answers 503 with Retry-After, not 500: the client did
nothing wrong and may try again. Liveness stays up; readiness names the database."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.service.fixtures import ADMIN_KEY


@pytest.fixture
def unreachable_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TestClient]:
    from service.app import create_app
    from service.db.session import dispose_engines
    from service.deps import clear_auth_cache
    from service.settings import reset_settings

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {
        "TAGSMITH_DATA_DIR": str(tmp_path / "data"),
        "TAGSMITH_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{port}/tagsmith",
        "TAGSMITH_STORAGE_URL": str(tmp_path / "storage"),
        "TAGSMITH_BROKER_URL": "",
        "TAGSMITH_ADMIN_KEY": ADMIN_KEY,
        "TAGSMITH_OPEN_MODE": "false",
    }.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    clear_auth_cache()
    dispose_engines()
    try:
        with TestClient(create_app(run_migrations=False)) as client:
            yield client
    finally:
        dispose_engines()
        reset_settings()
        clear_auth_cache()


def test_requests_answer_503_while_the_database_is_away(unreachable_database: TestClient) -> None:
    client = unreachable_database
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for method, path, headers, body in (
        ("GET", "/corpora", {"Authorization": "Bearer tsk_somebody"}, None),
        ("POST", "/keys", admin, {"name": "alice"}),
        ("POST", "/models/m1/predict", {"Authorization": "Bearer tsk_somebody"}, {"texts": ["hi"]}),
    ):
        r = client.request(method, path, headers=headers, json=body)
        assert r.status_code == 503, (path, r.text)
        assert r.headers["Retry-After"] == "5"
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"].endswith("/database-unavailable") and r.json()["instance"] == path
        assert "127.0.0.1" not in r.text and "psycopg" not in r.text
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
    ready = client.get("/ready")
    assert ready.status_code == 503 and "database" in ready.text


def test_every_keyed_operation_answers_and_documents_503_then(unreachable_database: TestClient) -> None:
    from tests.service.test_openapi import openapi_document

    key = {"Authorization": "Bearer tsk_somebody"}
    for path, operations in openapi_document()["paths"].items():
        if path in ("/", "/health", "/ready"):  # they read no database
            continue
        concrete = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)
        for method, operation in operations.items():
            status = unreachable_database.request(method.upper(), concrete, headers=key).status_code
            assert status == 503, f"{method.upper()} {path} answered {status}"
            assert "503" in operation["responses"], f"{method.upper()} {path} does not document its 503"
