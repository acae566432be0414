"""The API key is checked before a request's body is read, and every body has a size limit.

FastAPI reads and parses a body before it solves the key dependency: a request without a key had
its whole body taken in to be told 401 (a 300 MB JSON body cost the API 900 MB), and JSON
bodies had no size limit at all. These tests call the ASGI app directly, to count the body
bytes the server took.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.limits import JSON_BODY_LIMIT_BYTES
from service.openapi_export import openapi_document
from service.problems import PROBLEM_TYPE_BASE
from tests.service.fixtures import ADMIN_KEY, ApiSession, configured_service

pytestmark = pytest.mark.postgres

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHUNK = 64 * 1024
MISSING = "00000000-0000-0000-0000-000000000000"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    pulled: int  # body bytes the app took

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: Any,
    method: str,
    path: str,
    headers: dict[str, str],
    chunks: Sequence[bytes] = (),
    content_length: bool = True,
) -> Answer:
    """One request straight into the ASGI app, its body given a chunk per ``receive``; without
    ``content_length`` it is sent as a chunked body is (no Content-Length)."""

    async def run() -> Answer:
        pending = list(chunks) or [b""]
        pulled = 0
        done = asyncio.Event()
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal pulled
            if pending:
                chunk = pending.pop(0)
                pulled += len(chunk)
                return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if not message.get("more_body"):
                    done.set()

        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        if content_length:
            raw.append((b"content-length", str(sum(map(len, chunks))).encode()))
        else:
            raw.append((b"transfer-encoding", b"chunked"))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), *raw],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "state": {},
        }
        await app(scope, receive, send)
        answer_headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
        return Answer(start["status"], answer_headers, b"".join(body), pulled)

    return asyncio.run(run())


def json_chunks(total: int) -> list[bytes]:
    """A valid JSON object of ``total`` bytes, in 64 kB chunks."""
    head, tail = b'{"name": "', b'"}'
    data = head + b"a" * (total - len(head) - len(tail)) + tail
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def multipart_chunks(total: int, field: str) -> tuple[str, list[bytes]]:
    boundary = "tagsmith-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="f.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    data = head + b"\0" * (total - len(head) - len(tail)) + tail
    return f"multipart/form-data; boundary={boundary}", [
        data[i : i + CHUNK] for i in range(0, len(data), CHUNK)
    ]


def unauthorized(path: str, detail: str) -> dict[str, Any]:
    """The 401 the key dependency answered before the middleware, for a request with no body."""
    return {
        "type": PROBLEM_TYPE_BASE + "unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": detail,
        "instance": path,
    }


NO_KEY = "an API key is required (Authorization: Bearer <key>)"
BODY_ROUTES = [
    ("/jobs", "json"),
    ("/jobs/language-model", "json"),
    ("/keys", "json"),
    (f"/corpora/{MISSING}/text", "json"),
    (f"/models/{MISSING}/evaluate", "json"),
    ("/corpora", "train"),
    ("/models", "file"),
]


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("path", "kind"), BODY_ROUTES)
@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, NO_KEY),
        ("Bearer tsk_unknown", "unknown or revoked API key"),
        ("Basic abc", "the Authorization header must be 'Bearer <API key>'"),
    ],
    ids=["no-key", "unknown-key", "not-bearer"],
)
def test_a_request_without_a_valid_key_is_401_before_its_body_is_read(
    api: ApiSession, path: str, kind: str, content_length: bool, authorization: str | None, detail: str
) -> None:
    if kind == "json":
        content_type, chunks = "application/json", json_chunks(2 * 1024 * 1024)
    else:
        content_type, chunks = multipart_chunks(2 * 1024 * 1024, kind)
    headers = {"content-type": content_type}
    if authorization is not None:
        headers["authorization"] = authorization
    r = call(api.client.app, "POST", path, headers, chunks, content_length)
    assert r.status == 401, r.body
    assert r.pulled == 0, f"the server read {r.pulled} body bytes before answering 401"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == unauthorized(path, detail)
    # The same document as the dependency's for the same request without a body.
    plain = api.client.post(path, headers={k: v for k, v in headers.items() if k == "authorization"})
    assert plain.status_code == 401 and plain.json() == r.json()


def test_keys_that_may_not_use_a_route_are_403_before_the_body_is_read(api: ApiSession) -> None:
    owner = api.new_owner()
    for path, headers, detail in [
        ("/keys", owner.headers, "only the admin key may manage API keys"),
        ("/jobs", ADMIN, "the admin key manages API keys only; use an owner's key for resources"),
    ]:
        r = call(
            api.client.app,
            "POST",
            path,
            {**headers, "content-type": "application/json"},
            json_chunks(CHUNK * 8),
        )
        assert r.status == 403, r.body
        assert r.pulled == 0
        assert r.json()["detail"] == detail and r.json()["type"] == PROBLEM_TYPE_BASE + "forbidden"


def test_open_routes_and_unknown_paths_answer_as_before_without_a_key(api: ApiSession) -> None:
    c = api.client
    for path in ("/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"):
        assert c.get(path).status_code == 200, path
    assert c.get("/ready").status_code in (200, 503)
    assert c.get("/no-such-path").status_code == 404
    assert c.get("/jobs/x/y/z").status_code == 404
    r = c.put("/jobs")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    for method in ("GET", "PUT", "DELETE"):
        r = c.request(method, "/jobs/language-model")
        assert r.status_code == 405 and r.headers["allow"] == "POST", method
    assert c.get("/jobs/", follow_redirects=False).status_code == 307


def test_a_keyed_request_looks_its_key_up_once(api: ApiSession, monkeypatch: pytest.MonkeyPatch) -> None:
    from service import auth
    from service.deps import clear_auth_cache

    owner = api.new_owner()
    lookups: list[str] = []
    real = auth.owner_for_key

    def counted(session: Any, key: str) -> str | None:
        lookups.append(key)
        return real(session, key)

    monkeypatch.setattr(auth, "owner_for_key", counted)
    for method, path, kwargs in [
        ("GET", "/corpora", {}),
        ("POST", "/jobs", {"json": {"corpus": {"ids": [MISSING]}, "label_type": "ner"}}),
        ("POST", f"/models/{MISSING}/predict", {"json": {"texts": ["Hello ."]}}),
    ]:
        clear_auth_cache()
        lookups.clear()
        r = api.client.request(method, path, headers=owner.headers, **kwargs)
        assert r.status_code in (200, 404, 422), r.text
        assert lookups == [owner.key], (method, path, len(lookups))


def test_a_refused_request_is_counted_under_its_route(api: ApiSession) -> None:
    line = re.compile(
        r'^tagsmith_http_requests_total\{method="POST",route="/jobs",status="401"\} (\S+)$', re.M
    )

    def count() -> float:
        found = line.search(api.client.get("/metrics", headers=ADMIN).text)
        return float(found[1]) if found else 0.0

    before = count()
    call(api.client.app, "POST", "/jobs", {"content-type": "application/json"}, json_chunks(CHUNK))
    assert count() == before + 1


def test_open_mode_needs_no_key_for_a_body(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from service.app import create_app

    with (
        configured_service(monkeypatch, tmp_path, open_mode="true"),
        TestClient(create_app(), client=("127.0.0.1", 50000)) as client,
    ):
        r = client.post("/jobs", json={"corpus": {"ids": [MISSING]}, "label_type": "ner"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.corpus.ids.0", r.text
        assert client.post("/keys", json={"name": "eve"}).status_code == 403
        r = call(
            client.app,
            "POST",
            "/jobs",
            {"content-type": "application/json"},
            json_chunks(2 * JSON_BODY_LIMIT_BYTES),
        )
        assert r.status == 413


def _json_body_operations() -> list[tuple[str, str]]:
    out = []
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content and not path.endswith("/predict"):
                out.append((method.upper(), re.sub(r"\{[^}]+\}", MISSING, path)))
    return out


def test_the_json_body_operations_are_known() -> None:
    # A new JSON endpoint gets the limit too; this list is what the next test covers.
    assert sorted(_json_body_operations()) == sorted(("POST", p) for p, kind in BODY_ROUTES if kind == "json")


@pytest.mark.parametrize(("method", "path"), _json_body_operations())
def test_every_json_body_has_a_size_limit(api: ApiSession, method: str, path: str) -> None:
    owner = api.new_owner()
    headers = {**(ADMIN if path.startswith("/keys") else owner.headers), "content-type": "application/json"}
    limit_mb = f"{JSON_BODY_LIMIT_BYTES / 1024 / 1024:g} MB"
    expected = {
        "type": PROBLEM_TYPE_BASE + "payload-too-large",
        "title": "Payload too large",
        "status": 413,
        "detail": f"the request body exceeds the limit of {limit_mb}",
        "instance": path,
    }
    chunks = json_chunks(JSON_BODY_LIMIT_BYTES + 1)
    # With a Content-Length, nothing of the body is read.
    r = call(api.client.app, method, path, headers, chunks)
    assert r.status == 413, r.body
    assert r.pulled == 0
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json() == expected
    # Chunked, without one: the body is read up to the limit, not past it.
    many = json_chunks(20 * JSON_BODY_LIMIT_BYTES)
    r = call(api.client.app, method, path, headers, many, content_length=False)
    assert r.status == 413, r.body
    assert r.pulled <= JSON_BODY_LIMIT_BYTES + CHUNK
    assert r.json() == expected
    # Through a client and its transport too.
    r = api.client.request(method, path, content=b"".join(chunks), headers=headers)
    assert r.status_code == 413 and r.json() == expected


def test_a_body_within_the_limit_is_read_as_before(api: ApiSession) -> None:
    # The largest JSON body within the limit gets the schema's answer: a name over 200 characters.
    r = call(
        api.client.app,
        "POST",
        "/keys",
        {**ADMIN, "content-type": "application/json"},
        json_chunks(JSON_BODY_LIMIT_BYTES),
    )
    assert r.status == 422, r.body
    assert r.json()["errors"][0]["field"] == "body.name"
    assert api.client.post("/keys", json={"name": "bob"}, headers=ADMIN).status_code == 201


def test_predict_keeps_its_own_larger_limit(api: ApiSession, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import reset_settings

    owner = api.new_owner()
    texts = [f"{'word ' * 1500}{i}" for i in range(256)]  # about 2 MB, a valid request
    body = json.dumps({"texts": texts}).encode()
    assert len(body) > JSON_BODY_LIMIT_BYTES
    r = api.client.post(
        f"/models/{MISSING}/predict",
        content=body,
        headers={**owner.headers, "content-type": "application/json"},
    )
    assert r.status_code == 404, r.text  # read and validated: the model is what is missing
    monkeypatch.setenv("TAGSMITH_MAX_UPLOAD_MB", "1")
    reset_settings()
    r = api.client.post(
        f"/models/{MISSING}/predict",
        content=body,
        headers={**owner.headers, "content-type": "application/json"},
    )
    assert r.status_code == 413, r.text


def test_every_operation_with_a_body_documents_413() -> None:
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                assert "413" in operation["responses"], (method, path)
                assert "application/problem+json" in operation["responses"]["413"]["content"]
