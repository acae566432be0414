from __future__ import annotations

import re

from service.openapi_export import OUTPUT, openapi_document, render
from tests.service.fixtures import ApiSession


def test_committed_openapi_document_is_up_to_date() -> None:
    assert OUTPUT.exists(), "run: python -m service.openapi_export"
    assert OUTPUT.read_text(encoding="utf-8") == render(), (
        "openapi/openapi.json is stale: python -m service.openapi_export"
    )


def test_document_lists_every_endpoint() -> None:
    paths = openapi_document()["paths"]
    expected = {
        "/corpora": {"get", "post"},
        "/corpora/{corpus_id}": {"get", "delete"},
        "/corpora/{corpus_id}/text": {"post"},
        "/jobs": {"get", "post"},
        "/jobs/language-model": {"post"},
        "/jobs/{job_id}": {"get", "delete"},
        "/jobs/{job_id}/metrics": {"get"},
        "/jobs/{job_id}/curves.png": {"get"},
        "/jobs/{job_id}/events": {"get"},
        "/jobs/{job_id}/files": {"get"},
        "/jobs/{job_id}/files/{name}": {"get"},
        "/jobs/{job_id}/cancel": {"post"},
        "/jobs/{job_id}/resume": {"post"},
        "/models": {"get", "post"},
        "/models/{model_id}": {"get", "delete"},
        "/models/{model_id}/download": {"get"},
        "/models/{model_id}/predict": {"post"},
        "/models/{model_id}/evaluate": {"post"},
        "/keys": {"get", "post"},
        "/keys/{key_id}": {"delete"},
        "/": {"get"},
        "/health": {"get"},
        "/ready": {"get"},
        "/metrics": {"get"},
        "/transformers": {"get"},
    }
    assert {p: set(ops) for p, ops in paths.items()} == expected
    assert "application/problem+json" in paths["/jobs"]["post"]["responses"]["422"]["content"]


def test_every_operation_that_needs_a_key_documents_401(api: ApiSession) -> None:
    # GET /metrics answered 401 without a key while its documentation knew only 200.
    paths = openapi_document()["paths"]
    for path, operations in paths.items():
        concrete = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)
        for method, operation in operations.items():
            status = api.client.request(method.upper(), concrete).status_code
            documented = set(operation["responses"])
            if status == 401:
                assert "401" in documented, f"{method.upper()} {path} answers 401 but documents {documented}"
            else:
                assert path in ("/", "/health", "/ready"), (
                    f"{method.upper()} {path} answered {status} without a key"
                )


def test_a_wrong_method_is_405_naming_every_documented_method(api: ApiSession) -> None:
    # Allow named only the first route on the path: PUT /corpora said "Allow: POST", not GET too.
    owner = api.new_owner()
    for method, path, allowed in [
        ("PUT", "/corpora", "GET, POST"),
        ("PATCH", "/models/some-id", "DELETE, GET"),
        ("OPTIONS", "/models", "GET, POST"),
        ("PUT", "/jobs/language-model", "POST"),  # a literal path, not the job id of /jobs/{job_id}
    ]:
        r = api.client.request(method, path, headers=owner.headers)
        assert r.status_code == 405, (method, path, r.text)
        assert r.headers["allow"] == allowed, (method, path)
        assert r.json()["detail"] == f"{method} is not allowed on {path}; allowed: {allowed}"


def test_the_root_says_where_the_docs_and_checks_are(api: ApiSession) -> None:
    # `tagsmith up` prints the root address; it answered a bare 404.
    r = api.client.get("/")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["service"] == "Tagsmith" and body["version"] == openapi_document()["info"]["version"]
    for key in ("docs", "openapi", "health"):
        assert api.client.get(body[key]).status_code == 200, key
    assert api.client.get(body["ready"]).status_code in (200, 503)  # no broker in this test
