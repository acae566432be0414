"""Trained models: list, read, download as tar.gz, delete (the worker creates them)."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.db.models import Model, new_id
from service.db.session import session_scope
from service.errors import NotFound
from service.logic.owned import owned_or_404
from service.logic.pages import Listing, Page, fetch_page
from service.process_folders import REQUESTS_KIND, own_folder
from service.storage import discard, get_storage

MODELS = Listing("models", Model.created_at, Model.id)


def list_models(owner_id: str, limit: int = 100, offset: int = 0, cursor: str | None = None) -> Page[Model]:
    """Newest first, from ``cursor`` (a page's ``next``) or ``offset``."""
    with session_scope() as session:
        query = select(Model).where(Model.owner_id == owner_id)
        return fetch_page(session, query, MODELS, limit, offset, cursor)


def get_model(owner_id: str, model_id: str) -> Model:
    with session_scope() as session:
        return owned_or_404(session, Model, model_id, owner_id, "model")


def delete_model(owner_id: str, model_id: str) -> Model:
    with session_scope() as session:
        row = owned_or_404(session, Model, model_id, owner_id, "model")
        session.delete(row)
    discard(row.storage_key)
    return row


def archive_name(row: Model) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", row.name).strip("-") or "model"
    return f"{safe}-{row.id[:8]}.tar.gz"


def build_archive(row: Model) -> Path:
    """The model folder as a tar.gz in a temporary file (the caller deletes it: the download
    route's background task, which Starlette also runs when the client goes away mid-download)."""
    work = Path(tempfile.mkdtemp(prefix="download-", dir=own_folder(REQUESTS_KIND)))
    try:
        folder = get_storage().get_dir(row.storage_key, work / "model")
        # mkstemp's descriptor is the file's: left open, it held the file's disk space (and a
        # descriptor) after the download deleted it, until the process ended.
        fd, name = tempfile.mkstemp(prefix="model-", suffix=".tar.gz", dir=own_folder(REQUESTS_KIND))
        archive = Path(name)
        try:
            with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w:gz") as tar:
                tar.add(folder, arcname="model")
        except BaseException:
            archive.unlink(missing_ok=True)
            raise
        return archive
    except FileNotFoundError:
        raise NotFound(f"the files of model {row.id} are missing from storage") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def register_model(
    owner_id: str,
    local_dir: Path,
    *,
    name: str,
    task: str,
    label_type: str,
    labels: list[str],
    job_id: str | None = None,
    spec: dict[str, Any] | None = None,
    dev_metrics: dict[str, Any] | None = None,
    test_metrics: dict[str, Any] | None = None,
    model_id: str | None = None,
) -> Model:
    """Store a saved model folder (``model.save(dir)``) and its row; on failure neither stays."""
    model_id = model_id or new_id()
    key = f"models/{model_id}"
    storage = get_storage()
    storage.put_dir(key, Path(local_dir))
    try:
        with session_scope() as session:
            row = Model(
                id=model_id,
                owner_id=owner_id,
                job_id=job_id,
                name=name,
                task=task,
                label_type=label_type,
                labels=labels,
                storage_key=key,
                size_bytes=storage.size(key),
                dev_metrics=dev_metrics,
                test_metrics=test_metrics,
                spec=spec,
            )
            session.add(row)
        return row
    except BaseException:
        storage.delete(key)
        raise
