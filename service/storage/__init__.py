"""Artifact storage: a local or shared folder (``LocalStorage``) or an S3-compatible object
store (``S3Storage``), chosen by ``TAGSMITH_STORAGE_URL``. See ``base`` for the contract.
Imported by the worker: no FastAPI here."""

from __future__ import annotations

import logging
import os
import threading

from service.settings import get_settings
from service.storage.base import (
    InvalidStorageKey,
    Storage,
    StorageUnavailable,
    Temporary,
    check_key,
    check_prefix,
)
from service.storage.local import LocalStorage
from service.storage.s3 import S3Storage, parse_s3_url

__all__ = [
    "InvalidStorageKey",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "StorageUnavailable",
    "Temporary",
    "check_key",
    "check_prefix",
    "discard",
    "get_storage",
]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_storages: dict[str, Storage] = {}


def _forget_after_fork() -> None:
    # A forked child (Celery's pool, uvicorn's workers) must not share its parent's S3
    # connections, nor inherit the lock held by a thread that does not exist in it.
    global _lock
    _lock = threading.Lock()
    _storages.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def get_storage() -> Storage:
    """The storage named by the settings (one instance per location)."""
    settings = get_settings()
    s3 = settings.storage_url.startswith("s3://")
    location = settings.storage_url if s3 else str(settings.storage_root)
    with _lock:
        storage = _storages.get(location)
        if storage is None:
            storage = S3Storage(*parse_s3_url(location)) if s3 else LocalStorage(settings.storage_root)
            _storages[location] = storage
        return storage


def discard(key: str) -> None:
    """Delete the files of a row that was just deleted. During a storage outage they stay behind:
    no row points to them any more, so the storage sweep (the workers' scheduled one, or
    ``tagsmith clean-storage``) removes them later, and the delete the user asked for has happened."""
    try:
        get_storage().delete(key)
    except StorageUnavailable as error:
        log.warning("%s stays in storage until the storage sweep removes it: %s", key, error)
