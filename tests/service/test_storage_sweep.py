"""tagsmith clean-storage: storage that no row points to goes, everything a row points to stays."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.db.models import Job
from service.db.session import session_scope
from service.logic import storage_sweep
from service.settings import get_settings
from service.storage import get_storage
from tests.service.fixtures import ApiSession, stored_files
from tests.service.test_model_import_api import _save_tagger, _tar

pytestmark = pytest.mark.postgres

GHOST = "00000000-0000-0000-0000-00000000dead"
LATER = 7200.0  # seconds: "now" for the sweep, when every file here is two hours old


def _service_with_leftovers(api: ApiSession, tmp_path: Path) -> dict[str, str]:
    owner = api.new_owner()
    corpus_id = api.corpus(owner)
    model = api.client.post(
        "/models", files={"file": ("m.tar.gz", _tar(_save_tagger(tmp_path / "m")))}, headers=owner.headers
    ).json()
    job_id = api.client.post(
        "/jobs", json={"corpus": {"ids": [corpus_id]}, "label_type": "ner"}, headers=owner.headers
    ).json()["id"]
    storage = get_storage()
    live_checkpoint = f"jobs/{job_id}/checkpoints/epoch-0002-run2"
    live_files = f"jobs/{job_id}/files/epoch-2-run2"
    for key in (
        live_checkpoint,
        live_files,
        f"jobs/{job_id}/checkpoints/epoch-0001-run1",  # written, then the worker died before pointing to it
        f"jobs/{job_id}/files/epoch-1-run1",
        f"jobs/{GHOST}/checkpoints/epoch-0001-x",
        f"models/{GHOST}",  # a finishing worker killed between storing the model and its row
        f"corpora/{GHOST}",
    ):
        storage.put(f"{key}/data.bin", b"\0" * 1000)
    storage.put("backups/keep-me.txt", b"not a layout the service writes")
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.checkpoint_key, job.files_key = live_checkpoint, live_files
    interrupted = get_settings().storage_root / ".tmp" / "tmp-interrupted-copy"
    interrupted.mkdir()
    (interrupted / "model.safetensors").write_bytes(b"\0" * 500)
    return {"owner": owner.key, "corpus": corpus_id, "model": model["id"], "job": job_id}


def test_only_what_no_row_points_to_is_removed(api: ApiSession, tmp_path: Path) -> None:
    ids = _service_with_leftovers(api, tmp_path)
    found = storage_sweep.clean_storage(3600, dry_run=True, now=time.time() + LATER)
    assert {(f.key, f.bytes) for f in found} == {
        (f"jobs/{ids['job']}/checkpoints/epoch-0001-run1", 1000),
        (f"jobs/{ids['job']}/files/epoch-1-run1", 1000),
        (f"jobs/{GHOST}/checkpoints/epoch-0001-x", 1000),
        (f"models/{GHOST}", 1000),
        (f"corpora/{GHOST}", 1000),
        (".tmp/tmp-interrupted-copy", 500),
    }
    assert {f.reason for f in found if f.key.startswith("models/")} == {"no model row points to it"}
    before = stored_files()
    assert storage_sweep.clean_storage(3600, dry_run=True, now=time.time() + LATER) == found
    assert stored_files() == before  # a dry run removes nothing

    storage_sweep.clean_storage(3600, now=time.time() + LATER)
    left = stored_files()
    assert not any(GHOST in key or "run1" in key for key in left), left
    assert "backups/keep-me.txt" in left
    assert not (get_settings().storage_root / ".tmp" / "tmp-interrupted-copy").exists()
    # what rows point to still works
    headers = {"Authorization": f"Bearer {ids['owner']}"}
    assert api.client.get(f"/models/{ids['model']}/download", headers=headers).status_code == 200
    assert any(key.startswith(f"corpora/{ids['corpus']}/") for key in left)
    assert f"jobs/{ids['job']}/checkpoints/epoch-0002-run2/data.bin" in left
    assert f"jobs/{ids['job']}/files/epoch-2-run2/data.bin" in left
    assert storage_sweep.find_leftovers(3600, now=time.time() + LATER) == []


def test_recent_writes_are_never_removed(api: ApiSession, tmp_path: Path) -> None:
    # A write in progress has its files stored and its row not yet committed: it looks exactly
    # like a leftover, except that it is recent.
    _service_with_leftovers(api, tmp_path)
    assert storage_sweep.find_leftovers(60) == []
    # a copy keeps its source files' old mtimes; the unit still counts as recently written
    old = time.time() - 3 * LATER
    source = tmp_path / "old-model"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"x")
    import os

    os.utime(source / "model.safetensors", (old, old))
    os.utime(source, (old, old))  # the folder's mtime is copied too: only ctimes are recent
    get_storage().put_dir(f"models/{GHOST}-copy", source)
    assert storage_sweep.find_leftovers(60) == []


def test_the_command_lists_and_removes(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.cli import app

    _service_with_leftovers(api, tmp_path)
    runner = CliRunner()
    fresh = runner.invoke(app, ["clean-storage", "--dry-run"])
    assert fresh.exit_code == 0, fresh.output
    assert fresh.output.strip() == "0 leftover(s), would free 0 bytes"
    real_time = time.time
    monkeypatch.setattr(storage_sweep.time, "time", lambda: real_time() + LATER)
    listed = runner.invoke(app, ["clean-storage", "--dry-run"])
    assert listed.exit_code == 0 and listed.output.splitlines()[-1] == "6 leftover(s), would free 5,500 bytes"
    assert f"models/{GHOST}" in listed.output
    removed = runner.invoke(app, ["clean-storage"])
    assert removed.output.splitlines()[-1] == "6 leftover(s), freed 5,500 bytes"
    assert runner.invoke(app, ["clean-storage"]).output.strip() == "0 leftover(s), freed 0 bytes"


def test_a_database_that_points_to_nothing_stored_removes_nothing(api: ApiSession) -> None:
    # clean-storage with TAGSMITH_DATABASE_URL forgotten (the CLI's "run tagsmith migrate" made a
    # new database) listed every corpus and model of the deployment as left over.
    from service.cli import app

    storage = get_storage()
    for key in (f"corpora/{GHOST}", f"models/{GHOST}", f"jobs/{GHOST}/files/epoch-1-run1"):
        storage.put(f"{key}/data.bin", b"\0" * 100)
    with pytest.raises(storage_sweep.ForeignStorage, match="points to none of the 3 corpora, models and job"):
        storage_sweep.clean_storage(0, now=time.time() + LATER)
    runner = CliRunner()
    refused = runner.invoke(app, ["clean-storage", "--min-age-minutes", "1"])
    message = str(refused.exception)  # main() prints it as one error: line
    assert "looks like another deployment's database" in message and "clean-storage --force" in message
    assert storage.exists(f"models/{GHOST}/data.bin") and storage.exists(f"corpora/{GHOST}/data.bin")
    # everything really was deleted: the operator says so
    found = storage_sweep.clean_storage(0, now=time.time() + LATER, force=True)
    assert sorted(f.key for f in found) == sorted(
        [f"corpora/{GHOST}", f"jobs/{GHOST}/files/epoch-1-run1", f"models/{GHOST}"]
    )
    assert not storage.exists(f"models/{GHOST}/data.bin")
