"""Strings the database cannot store: a lone surrogate (JSON's "\\ud800" decodes to one, and no
UTF-8 encoder takes it) and a NUL (PostgreSQL refuses it in text and JSON). Each was a 500; in a
body it is a 422, in an id a 404, in a label name a 422 at upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.service.fixtures import ADMIN_KEY, CONLL_TRAIN, ApiSession, register_tiny_tagger

pytestmark = pytest.mark.postgres


def _raw(api: ApiSession, path: str, body: bytes, headers: dict[str, str]) -> Any:
    return api.client.post(path, content=body, headers={**headers, "content-type": "application/json"})


@pytest.mark.parametrize(
    ("escaped", "named"),
    [(b"\\ud800", "a lone surrogate (half of a UTF-16 pair)"), (b"a\\u0000b", "a NUL character")],
    ids=["lone-surrogate", "nul"],
)
def test_a_json_body_string_that_is_not_text_is_a_422(
    api: ApiSession, tmp_path: Path, escaped: bytes, named: str
) -> None:
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    requests = [
        ("/jobs", b'{"corpus": {"ids": ["%s"]}, "label_type": "ner"}', owner.headers),
        ("/jobs", b'{"corpus": {"ids": ["x"]}, "label_type": "ner", "name": "%s"}', owner.headers),
        (f"/models/{model_id}/evaluate", b'{"corpus_id": "%s"}', owner.headers),
        (f"/models/{model_id}/evaluate", b'{"corpus_id": "x", "label_type": "%s"}', owner.headers),
        ("/keys", b'{"owner_id": "%s"}', admin),
        ("/keys", b'{"%s": "x"}', admin),
    ]
    for path, body, headers in requests:
        r = _raw(api, path, body % escaped, headers)
        assert r.status_code == 422, (path, body, r.text)
        assert r.json()["errors"][0]["field"] == "body"
        assert f"a string holds {named}" in r.json()["detail"]
    # emoji escaped as a surrogate pair (what ensure_ascii encoders send) are text
    r = _raw(api, "/keys", b'{"name": "team \\ud83d\\ude00"}', admin)
    assert r.status_code == 201, r.text
    assert r.json()["owner_name"] == "team \U0001f600"


def test_an_id_that_is_not_text_is_not_found(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    register_tiny_tagger(owner, tmp_path)
    for method, path in [
        ("GET", "/jobs/a%00b"),
        ("GET", "/corpora/a%00b"),
        ("DELETE", "/models/a%00b"),
        ("POST", "/models/a%00b/predict"),
        ("DELETE", "/keys/a%00b"),
    ]:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"} if "/keys" in path else owner.headers
        body = {"texts": ["a"]} if method == "POST" else None
        r = api.client.request(method, path, json=body, headers=headers)
        assert r.status_code == 404, (method, path, r.text)


def test_a_label_name_with_a_control_character_is_refused_at_upload(api: ApiSession) -> None:
    owner = api.new_owner()
    r = api.upload(owner, train=CONLL_TRAIN, options={"column_map": {"0": "text", "1": "n\u0000er"}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].endswith(
        "the label name of column 1 'n\\x00er' holds a control character ('\\x00')"
    )
    r = api.upload(owner, format="fasttext", train="__label__a good\n", options={"label_type": "se\ntiment"})
    assert r.status_code == 422, r.text
    assert "option 'label_type' 'se\\ntiment' holds a control character ('\\n')" in r.json()["detail"]
