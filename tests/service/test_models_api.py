from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from service.db.models import Model
from service.db.session import session_scope
from service.logic.models import register_model
from service.settings import get_settings
from tests.service.fixtures import ApiSession, Owner, follow_pages, strict_json

pytestmark = pytest.mark.postgres


def _fake_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "saved"
    (folder / "resources").mkdir(parents=True)
    (folder / "config.json").write_text('{"class": "SequenceTagger"}')
    (folder / "model.safetensors").write_bytes(b"\0" * 100)
    (folder / "resources" / "vocab.txt").write_text("a\nb\n")
    return folder


def _register(owner: Owner, tmp_path: Path, name: str = "ner-model") -> str:
    row = register_model(
        owner.id,
        _fake_folder(tmp_path),
        name=name,
        task="sequence_tagging",
        label_type="ner",
        labels=["PER", "LOC"],
        spec={"task": "sequence_tagging"},
        test_metrics={"main_score": 0.5},
    )
    return row.id


def test_following_next_lists_each_model_once_while_models_are_added(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    ids = [_register(owner, tmp_path / str(i), name=f"m{i}") for i in range(5)]
    walked = follow_pages(
        api.client,
        "/models?limit=2",
        owner.headers,
        between=lambda page: _register(owner, tmp_path / f"new{page}", name=f"new{page}"),
    )
    assert [item["id"] for item in walked] == ids[::-1]
    assert api.client.get("/models?limit=7", headers=owner.headers).json()["next"] is None  # 2 added
    assert api.client.get("/models?limit=6", headers=owner.headers).json()["next"] is not None


def test_a_models_nan_and_infinite_metrics_are_stored_as_null(api: ApiSession, tmp_path: Path) -> None:
    # PostgreSQL refuses NaN in JSON: a run whose final test loss was NaN (a float16 overflow)
    # failed as its model was saved.
    owner = api.new_owner()
    nan, inf = float("nan"), float("inf")
    row = register_model(
        owner.id,
        _fake_folder(tmp_path),
        name="m",
        task="sequence_tagging",
        label_type="ner",
        labels=["PER"],
        dev_metrics={"main_score": 0.5, "loss": inf},
        test_metrics={"main_score": 0.5, "loss": nan, "per_class": {"PER": {"f1": -inf, "support": 3}}},
    )
    body = strict_json(api.client.get(f"/models/{row.id}", headers=owner.headers).text)
    assert body["dev_metrics"] == {"main_score": 0.5, "loss": None}
    assert body["test_metrics"] == {
        "main_score": 0.5,
        "loss": None,
        "per_class": {"PER": {"f1": None, "support": 3}},
    }


def test_list_get_download_delete(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    model_id = _register(owner, tmp_path)
    items = api.client.get("/models", headers=owner.headers).json()["items"]
    assert [m["id"] for m in items] == [model_id]
    body = api.client.get(f"/models/{model_id}", headers=owner.headers).json()
    assert body["labels"] == ["PER", "LOC"] and body["test_metrics"] == {"main_score": 0.5}
    assert body["size_bytes"] == 100 + len('{"class": "SequenceTagger"}') + 4
    assert body["spec"] == {"task": "sequence_tagging"}

    r = api.client.get(f"/models/{model_id}/download", headers=owner.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    assert "ner-model" in r.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == [
            "model",
            "model/config.json",
            "model/model.safetensors",
            "model/resources",
            "model/resources/vocab.txt",
        ]

    assert api.client.delete(f"/models/{model_id}", headers=owner.headers).status_code == 204
    assert api.client.get(f"/models/{model_id}", headers=owner.headers).status_code == 404
    assert api.client.delete(f"/models/{model_id}", headers=owner.headers).status_code == 404
    root = get_settings().storage_root
    assert not any(p.is_file() for p in (root / "models").rglob("*"))


def test_other_owners_cannot_list_read_download_predict_or_delete(api: ApiSession, tmp_path: Path) -> None:
    alice, bob = api.new_owner("alice"), api.new_owner("bob")
    model_id = _register(alice, tmp_path)
    assert api.client.get("/models", headers=bob.headers).json()["items"] == []
    for method, path, kwargs in [
        ("get", f"/models/{model_id}", {}),
        ("get", f"/models/{model_id}/download", {}),
        ("delete", f"/models/{model_id}", {}),
        ("post", f"/models/{model_id}/predict", {"json": {"texts": ["Hello world ."]}}),
    ]:
        r = getattr(api.client, method)(path, headers=bob.headers, **kwargs)
        assert r.status_code == 404, (method, path, r.text)
    assert api.client.get(f"/models/{model_id}", headers=alice.headers).status_code == 200


def test_registering_fails_cleanly(api: ApiSession, tmp_path: Path) -> None:
    with pytest.raises(IntegrityError):  # the owner does not exist
        register_model(
            "no-such-owner",
            _fake_folder(tmp_path),
            name="x",
            task="sequence_tagging",
            label_type="ner",
            labels=[],
        )
    with session_scope() as session:
        assert session.query(Model).count() == 0
    root = get_settings().storage_root
    assert not (root / "models").exists() or not any(p.is_file() for p in (root / "models").rglob("*"))
