from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.db.models import ApiKey
from service.db.session import session_scope
from tests.service.fixtures import ADMIN_KEY, ApiSession, configured_service, follow_pages, problem_fields

pytestmark = pytest.mark.postgres

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def test_without_a_key_only_health_ready_and_docs_are_open(api: ApiSession) -> None:
    c = api.client
    assert c.get("/health").status_code == 200
    assert c.get("/ready").status_code in (200, 503)
    assert c.get("/docs").status_code == 200
    assert c.get("/openapi.json").status_code == 200
    for method, path in [
        ("get", "/corpora"),
        ("get", "/jobs"),
        ("get", "/models"),
        ("get", "/metrics"),
        ("post", "/keys"),
        ("post", "/models/x/predict"),
    ]:
        r = getattr(c, method)(path)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["www-authenticate"] == "Bearer"


def test_bad_keys_are_401(api: ApiSession) -> None:
    assert api.client.get("/corpora", headers={"Authorization": "Bearer tsk_nope"}).status_code == 401
    assert api.client.get("/corpora", headers={"Authorization": "Basic abc"}).status_code == 401


def test_keys_are_stored_hashed_and_only_admin_creates_them(api: ApiSession) -> None:
    owner = api.new_owner("alice")
    assert owner.key.startswith("tsk_") and len(owner.key) > 40
    with session_scope() as session:
        rows = session.query(ApiKey).all()
        assert [r.key_hash for r in rows] != [owner.key]
        assert all(owner.key not in (r.key_hash, r.prefix) for r in rows)
    assert api.client.post("/keys", json={"name": "eve"}, headers=owner.headers).status_code == 403
    # The admin key manages keys, not resources.
    assert api.client.get("/corpora", headers=ADMIN).status_code == 403
    second = api.client.post("/keys", json={"owner_id": owner.id}, headers=ADMIN).json()
    assert second["owner_id"] == owner.id
    assert api.client.get("/corpora", headers={"Authorization": f"Bearer {second['key']}"}).status_code == 200
    assert api.client.post("/keys", json={"owner_id": "missing"}, headers=ADMIN).status_code == 404


def test_the_admin_lists_keys_and_revokes_one(api: ApiSession) -> None:
    # Revoking needed the key's id, which nothing listed: an operator had to find it in SQL.
    alice, bob = api.new_owner("alice"), api.new_owner("bob")
    assert api.client.get("/keys", headers=alice.headers).status_code == 403
    items = api.client.get("/keys", headers=ADMIN).json()["items"]
    assert [(k["owner_name"], k["prefix"]) for k in items] == [
        ("alice", alice.key[:10]),
        ("bob", bob.key[:10]),
    ]
    assert all(alice.key not in str(k) and bob.key not in str(k) for k in items)
    assert api.client.delete(f"/keys/{items[0]['id']}", headers=ADMIN).status_code == 204
    assert [k["owner_name"] for k in api.client.get("/keys", headers=ADMIN).json()["items"]] == ["bob"]
    with_revoked = api.client.get("/keys", params={"revoked": True}, headers=ADMIN).json()["items"]
    assert [k["revoked_at"] is not None for k in with_revoked] == [True, False]
    assert api.client.get("/corpora", headers=alice.headers).status_code == 401


def test_the_keys_come_a_page_at_a_time_oldest_first(api: ApiSession) -> None:
    owners = [api.new_owner(f"owner{i}") for i in range(5)]
    added: list[str] = []
    walked = follow_pages(
        api.client, "/keys?limit=2", ADMIN, between=lambda page: added.append(api.new_owner(f"new{page}").key)
    )
    # oldest first: the keys added during the walk come at its end, each once
    assert [k["prefix"] for k in walked] == [o.key[:10] for o in owners] + [key[:10] for key in added]
    assert len(added) == 3

    every = api.client.get("/keys", headers=ADMIN).json()
    assert every["next"] is None and len(every["items"]) == 8
    assert api.client.delete(f"/keys/{walked[0]['id']}", headers=ADMIN).status_code == 204
    assert [k["id"] for k in follow_pages(api.client, "/keys?limit=3", ADMIN)] == [
        k["id"] for k in walked[1:]
    ]
    first = api.client.get("/keys?revoked=true&limit=3", headers=ADMIN).json()
    assert first["next"].startswith("/keys?revoked=true&limit=3&cursor=")
    assert [k["id"] for k in follow_pages(api.client, first["next"], ADMIN)] == [k["id"] for k in walked[3:]]

    r = api.client.get("/keys", params={"cursor": "garbage"}, headers=ADMIN)
    assert problem_fields(r) == ["query.cursor"]
    assert problem_fields(api.client.get("/keys?limit=0", headers=ADMIN)) == ["query.limit"]
    jobs_cursor = base64.urlsafe_b64encode(
        json.dumps({"l": "jobs", "t": "2024-05-06T07:08:09.000000+00:00", "i": "x"}).encode()
    ).decode()
    r = api.client.get("/keys", params={"cursor": jobs_cursor}, headers=ADMIN)
    assert problem_fields(r) == ["query.cursor"]
    assert r.json()["errors"][0]["message"].startswith("a cursor of jobs, not of keys")


def test_a_key_for_both_a_new_and_an_existing_owner_is_422(api: ApiSession) -> None:
    owner = api.new_owner("alice")
    r = api.client.post("/keys", json={"name": "bob", "owner_id": owner.id}, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "body" and "not both" in r.json()["detail"]


@pytest.mark.parametrize("body", [{}, {"name": None}, {"owner_id": None}])
def test_a_key_for_no_owner_is_422_and_creates_none(api: ApiSession, body: dict[str, None]) -> None:
    # An empty body made a new owner named "owner"; the README documents `name` or `owner_id`.
    r = api.client.post("/keys", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "body"
    assert "'name' (a new owner) or 'owner_id' (an existing one) is required" in r.json()["detail"]
    with session_scope() as session:
        assert session.query(ApiKey).count() == 0


def test_revoked_key_stops_working(api: ApiSession) -> None:
    owner = api.new_owner()
    with session_scope() as session:
        key_id = session.query(ApiKey).one().id
    assert api.client.get("/corpora", headers=owner.headers).status_code == 200
    assert api.client.delete(f"/keys/{key_id}", headers=ADMIN).status_code == 204
    assert api.client.get("/corpora", headers=owner.headers).status_code == 401
    assert api.client.delete(f"/keys/{key_id}", headers=ADMIN).status_code == 404


def test_a_key_revoked_outside_the_api_stops_working_once_the_cache_expires(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `tagsmith revoke-key` writes the database directly; the API process only notices once its
    # cached lookup of the key expires. A cache that never expired kept revoked keys working.
    from types import SimpleNamespace

    from service import auth, deps

    clock = [1000.0]
    monkeypatch.setattr(deps, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    owner = api.new_owner()
    assert api.client.get("/corpora", headers=owner.headers).status_code == 200
    with session_scope() as session:
        assert auth.revoke_key(session, session.query(ApiKey).one().id)
    clock[0] += deps.AUTH_CACHE_SECONDS + 0.1
    assert api.client.get("/corpora", headers=owner.headers).status_code == 401


def test_owners_cannot_see_or_touch_each_others_resources(api: ApiSession) -> None:
    alice, bob = api.new_owner("alice"), api.new_owner("bob")
    corpus_id = api.corpus(alice)
    job_id = api.client.post(
        "/jobs", json={"corpus": {"ids": [corpus_id]}, "label_type": "ner"}, headers=alice.headers
    ).json()["id"]
    c = api.client
    assert c.get("/corpora", headers=bob.headers).json()["items"] == []
    assert c.get("/jobs", headers=bob.headers).json()["items"] == []
    for method, path in [
        ("get", f"/corpora/{corpus_id}"),
        ("delete", f"/corpora/{corpus_id}"),
        ("get", f"/jobs/{job_id}"),
        ("get", f"/jobs/{job_id}/metrics"),
        ("get", f"/jobs/{job_id}/curves.png"),
        ("get", f"/jobs/{job_id}/events"),
        ("post", f"/jobs/{job_id}/cancel"),
        ("post", f"/jobs/{job_id}/resume"),
    ]:
        r = getattr(c, method)(path, headers=bob.headers)
        assert r.status_code == 404, (method, path, r.status_code)
    # Bob cannot train on Alice's corpus either: it does not exist for him.
    r = c.post("/jobs", json={"corpus": {"ids": [corpus_id]}, "label_type": "ner"}, headers=bob.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.corpus.ids.0"
    # Alice still has everything.
    assert c.get(f"/jobs/{job_id}", headers=alice.headers).json()["status"] == "queued"
    assert c.get(f"/corpora/{corpus_id}", headers=alice.headers).status_code == 200


def test_open_mode_needs_no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from service.app import create_app

    with (
        configured_service(monkeypatch, tmp_path, open_mode="true"),
        TestClient(create_app(), client=("127.0.0.1", 50000)) as client,
    ):
        assert client.get("/corpora").status_code == 200
        assert client.get("/jobs").json() == {"items": [], "next": None}


@pytest.mark.parametrize("address", ["10.0.0.5", "192.0.2.7", "2001:db8::1"])
def test_open_mode_answers_keyless_requests_from_this_machine_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, address: str
) -> None:
    # An app started as `uvicorn service.app:app --host 0.0.0.0` with open mode on, which
    # `tagsmith up` and `tagsmith api` refuse: another machine's keyless request is not served.
    from service.app import create_app

    with configured_service(monkeypatch, tmp_path, open_mode="true"):
        app = create_app()
        with TestClient(app, client=("::1", 50000)) as local:
            assert local.get("/corpora").status_code == 200
            key = local.post("/keys", json={"name": "remote"}, headers=ADMIN)
            assert key.status_code == 201, key.text
        with TestClient(app, client=(address, 50000)) as remote:
            r = remote.get("/corpora")
            assert r.status_code == 401
            assert r.json()["detail"] == (
                "open mode answers requests without a key from this machine only, and this one came from "
                f"{address}: send an API key (Authorization: Bearer <key>)"
            )
            assert remote.post("/jobs", json={"corpus": {"ids": ["x"]}}).status_code == 401
            keyed = remote.get("/corpora", headers={"Authorization": f"Bearer {key.json()['key']}"})
            assert keyed.status_code == 200


def test_ready_reports_each_dependency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from service.app import create_app
    from service.broker import start_embedded_redis

    broker = start_embedded_redis(tmp_path / "redis")
    try:
        with (
            configured_service(monkeypatch, tmp_path, broker_url=broker.url),
            TestClient(create_app()) as client,
        ):
            r = client.get("/ready")
            assert r.status_code == 200, r.text
            assert r.json() == {
                "status": "ready",
                "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
            }
            broker.stop()
            with caplog.at_level("WARNING", logger="service.readiness"):
                r = client.get("/ready")
                assert client.get("/ready").status_code == 503
            assert r.status_code == 503
            assert r.json()["checks"]["broker"].startswith("error")
            assert r.json()["checks"]["database"] == "ok"
            # the reason is in the operator's log, once for the two probes
            reasons = [m for m in caplog.messages if m.startswith("not ready: broker: ")]
            assert len(reasons) == 1 and "onnect" in reasons[0], caplog.messages
            # a database a schema behind (migrations run apart, not yet): not ready, and why
            from service.db.migrate import downgrade

            downgrade(revision="0001")
            with caplog.at_level("WARNING", logger="service.readiness"):
                r = client.get("/ready")
            assert r.status_code == 503 and r.json()["checks"]["database"] == "error: SchemaMismatch"
            assert any("not ready: database: it is not migrated (schema 0001" in m for m in caplog.messages)
    finally:
        broker.stop()


def test_prometheus_metrics(api: ApiSession) -> None:
    owner = api.new_owner()
    api.corpus(owner)
    api.client.get("/corpora/missing", headers=owner.headers)
    text = api.client.get("/metrics", headers=ADMIN).text
    assert 'tagsmith_http_requests_total{method="POST",route="/corpora",status="201"}' in text
    assert 'route="/corpora/{corpus_id}",status="404"' in text
    assert "tagsmith_http_request_seconds_bucket" in text
    assert 'tagsmith_jobs{status="queued"} 0.0' in text
    assert "tagsmith_predict_batch_sentences" in text


def test_unexpected_errors_are_500_problems_without_internals(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.logic import corpora

    def boom(owner_id: str) -> list[object]:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(corpora, "list_corpora", boom)
    owner = api.new_owner()
    client = TestClient(api.client.app, raise_server_exceptions=False)
    r = client.get("/corpora", headers=owner.headers)
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "secret" not in r.text


def test_metrics_are_for_the_operator_not_for_owners(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # They count every owner's jobs and requests: an owner saw that other owners' jobs existed.
    from service.settings import reset_settings

    monkeypatch.setenv("TAGSMITH_METRICS_KEY", "scrape-token-123")
    reset_settings()
    owner = api.new_owner()
    r = api.client.get("/metrics", headers=owner.headers)
    assert r.status_code == 403 and "TAGSMITH_METRICS_KEY" in r.json()["detail"]
    assert api.client.get("/metrics").status_code == 401
    scraper = {"Authorization": "Bearer scrape-token-123"}
    r = api.client.get("/metrics", headers=scraper)
    assert r.status_code == 200 and "tagsmith_jobs" in r.text
    # the metrics key is no owner: it reads nothing an owner has, and manages no keys
    corpus = api.corpus(owner)
    for method, path in (("get", "/corpora"), ("get", f"/corpora/{corpus}"), ("get", "/models")):
        r = api.client.request(method.upper(), path, headers=scraper)
        assert r.status_code == 403 and "metrics key" in r.json()["detail"], (path, r.text)
    assert api.client.post("/keys", json={"name": "x"}, headers=scraper).status_code == 403


def test_in_open_mode_metrics_need_no_key(monkeypatch: pytest.MonkeyPatch, service_env: str) -> None:
    from service.app import create_app
    from service.settings import reset_settings

    monkeypatch.setenv("TAGSMITH_OPEN_MODE", "true")
    reset_settings()
    with TestClient(create_app(), client=("127.0.0.1", 50000)) as client:
        assert client.get("/metrics").status_code == 200
