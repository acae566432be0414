"""Reusable helpers for service tests (also imported by tests/worker).

- ``isolated_database_url(tmp_path)``: a SQLite file in ``tmp_path``, or, when
  ``TAGSMITH_TEST_DATABASE_URL`` is set, a fresh PostgreSQL schema (dropped by ``drop_schema``).
- ``configure_service(monkeypatch, tmp_path, ...)``: points every TAGSMITH_ setting at an isolated
  data folder and database, resets the cached settings and runs the migrations.
- ``ApiSession``: a TestClient plus helpers to create owners (API keys) and upload corpora.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

ADMIN_KEY = "test-admin-key-0123456789"
TEST_DATABASE_ENV = "TAGSMITH_TEST_DATABASE_URL"

CONLL_TRAIN = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
lives VBZ B-VP O
in IN B-PP O
Berlin NNP B-NP B-LOC
. . O O

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

The DT B-NP O
European NNP I-NP B-ORG
Commission NNP I-NP I-ORG
said VBD B-VP O
. . O O
"""
CONLL_OPTIONS = {"column_map": {"0": "text", "1": "pos", "3": "ner"}}
FASTTEXT_TRAIN = """__label__pos I love this movie
__label__neg this was awful
__label__pos great acting and a fine story
__label__neg boring and far too long
__label__pos what a wonderful film
"""


def postgres_url() -> str | None:
    import os

    return os.environ.get(TEST_DATABASE_ENV) or None


def isolated_database_url(tmp_path: Path) -> tuple[str, str | None]:
    """(url, schema): SQLite in tmp_path, or a new schema in the test PostgreSQL."""
    base = postgres_url()
    if base is None:
        return f"sqlite:///{tmp_path / 'tagsmith-test.db'}", None
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    url = make_url(base)
    with psycopg.connect(_libpq(base), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def _libpq(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def drop_schema(schema: str | None) -> None:
    base = postgres_url()
    if schema is None or base is None:
        return
    import psycopg

    with psycopg.connect(_libpq(base), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def configured_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broker_url: str = "", **settings: Any
) -> Iterator[str]:
    """Isolated settings + migrated database for one test; yields the database URL."""
    from service.db.migrate import upgrade
    from service.db.session import dispose_engines
    from service.deps import clear_auth_cache
    from service.logic.predict import _rows
    from service.settings import reset_settings

    url, schema = isolated_database_url(tmp_path)
    env = {
        "TAGSMITH_DATA_DIR": str(tmp_path / "data"),
        "TAGSMITH_DATABASE_URL": url,
        "TAGSMITH_STORAGE_URL": str(tmp_path / "storage"),
        "TAGSMITH_BROKER_URL": broker_url,
        "TAGSMITH_ADMIN_KEY": ADMIN_KEY,
        "TAGSMITH_OPEN_MODE": "false",
    }
    env.update({f"TAGSMITH_{k.upper()}": str(v) for k, v in settings.items()})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    clear_auth_cache()
    _rows.clear()
    try:
        upgrade()
        yield url
    finally:
        dispose_engines()
        reset_settings()
        clear_auth_cache()
        _rows.clear()
        drop_schema(schema)


@dataclass
class Owner:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class ApiSession:
    client: TestClient
    enqueued: list[tuple[str, str]] = field(default_factory=list)

    def new_owner(self, name: str = "owner") -> Owner:
        r = self.client.post("/keys", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 201, r.text
        body = r.json()
        return Owner(body["owner_id"], body["key"])

    def upload(
        self,
        owner: Owner,
        train: str = CONLL_TRAIN,
        format: str = "column",
        options: dict[str, Any] | None = None,
        name: str = "tiny",
        **splits: str,
    ) -> Any:
        import json

        if options is None and format == "column":
            options = CONLL_OPTIONS
        files = {"train": ("train.txt", train.encode())}
        files.update({k: (f"{k}.txt", v.encode()) for k, v in splits.items()})
        data = {"format": format, "name": name}
        if options is not None:
            data["options"] = json.dumps(options)
        return self.client.post("/corpora", data=data, files=files, headers=owner.headers)

    def corpus(self, owner: Owner, **kwargs: Any) -> str:
        r = self.upload(owner, **kwargs)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def follow_pages(
    client: TestClient,
    url: str,
    headers: dict[str, str],
    between: Callable[[int], object] | None = None,
) -> list[dict[str, Any]]:
    """Every item of a listing, page after page by its ``next``; ``between(n)`` runs after page
    ``n`` (from 1) has been fetched, before the next is."""
    items: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        r = client.get(next_url, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        pages += 1
        assert pages < 100, "the pages do not end"
        next_url = body["next"]
        if next_url is not None and between is not None:
            between(pages)
    return items


def problem_fields(response: Any) -> list[str]:
    """The fields a 422 problem names."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return [e["field"] for e in response.json()["errors"]]


def stored_files() -> list[str]:
    """Every file in the service's storage, relative to its root (to check nothing was left)."""
    from service.settings import get_settings

    root = get_settings().storage_root
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# -- tiny untrained models registered for an owner (predict and evaluate tests) --------------
def save_tiny_tagger(
    directory: Path, label_type: str, labels: list[str], kind: str, use_crf: bool = True
) -> None:
    import torch

    from engine.data import Dictionary
    from engine.embeddings.character import CharacterEmbeddings
    from engine.models.sequence_tagger import SequenceTagger

    torch.manual_seed(0)
    dictionary = Dictionary()
    for label in labels:
        dictionary.add_item(label)
    model = SequenceTagger(
        CharacterEmbeddings(char_embedding_dim=4, hidden_size_char=4),
        dictionary,
        label_type,
        hidden_size=8,
        label_kind=kind,
        use_crf=use_crf,
    )
    model.save(directory)


def register_tiny_tagger(owner: Owner, tmp_path: Path, label_type: str = "ner", use_crf: bool = True) -> str:
    kind, labels = (
        ("span", ["PER", "LOC", "ORG"]) if label_type == "ner" else ("token", ["NOUN", "VERB", "PUNCT"])
    )
    folder = tmp_path / f"model-{label_type}"
    save_tiny_tagger(folder, label_type, labels, kind, use_crf)
    from service.logic.models import register_model

    return register_model(
        owner.id,
        folder,
        name=f"tiny-{label_type}",
        task="sequence_tagging",
        label_type=label_type,
        labels=labels,
    ).id


def register_tiny_classifier(
    owner: Owner, tmp_path: Path, multi_label: bool = False, bias: list[float] | None = None
) -> str:
    """``bias``: the three labels' scores whatever the text (the decoder's weights zeroed)."""
    import torch

    from engine.data import Dictionary
    from engine.embeddings.character import CharacterEmbeddings
    from engine.embeddings.document import DocumentPoolEmbeddings
    from engine.models.text_classifier import TextClassifier

    torch.manual_seed(0)
    labels = ["positive", "negative", "neutral"]
    dictionary = Dictionary()
    for label in labels:
        dictionary.add_item(label)
    model = TextClassifier(
        DocumentPoolEmbeddings(CharacterEmbeddings(char_embedding_dim=4, hidden_size_char=4)),
        dictionary,
        "sentiment",
        multi_label=multi_label,
    )
    if bias is not None:
        with torch.no_grad():
            model.decoder.weight.zero_()
            model.decoder.bias.copy_(torch.tensor(bias))
    folder = tmp_path / f"classifier-{multi_label}"
    model.save(folder)
    from service.logic.models import register_model

    return register_model(
        owner.id,
        folder,
        name="tiny-classifier",
        task="text_classification",
        label_type="sentiment",
        labels=labels,
    ).id


def strict_json(text: str) -> Any:
    """``text`` parsed as JSON is: Python's parser also takes NaN and Infinity, which a browser's
    JSON.parse refuses (and with them the whole answer)."""
    import json

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)
