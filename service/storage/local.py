"""Storage in a local (or shared, e.g. NFS) folder. Keys are paths under the root; a write goes
to a temporary name under ``.tmp/`` and is renamed into place, ``put_dir`` swaps whole folders."""

from __future__ import annotations

import builtins
import errno
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO

from service.errors import causes
from service.storage.base import Storage, Temporary, check_key, check_prefix

# What a network filesystem (NFS, SMB, a FUSE mount) reports while its server is away, and a storage
# disk that is full or was remounted read-only: each can be put right while the service runs, so they
# are outages (the API answers 503, a run trains on and stores later), not failures.
_UNREACHABLE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EIO,
        errno.ESTALE,
        errno.ENOTCONN,
        errno.ETIMEDOUT,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
    }
)


log = logging.getLogger(__name__)


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class LocalDiskError(OSError):
    """Copying out of storage failed on this machine's own disk (a full scratch folder): not a
    storage outage to wait out, but the failure of the run that needed the copy."""


class _CopyFailed(Exception):
    """Not an OSError, so that copytree lets it through: it gathers OSErrors into one shutil.Error
    of strings, which loses the errno (a full disk then read as a bug)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _copy(source: str, target: str) -> object:
    try:
        return shutil.copy2(source, target)
    except OSError as error:
        raise _CopyFailed(error) from error


def _copy_tree(source: Path, target: Path) -> None:
    try:
        shutil.copytree(source, target, dirs_exist_ok=True, copy_function=_copy)
    except _CopyFailed as failed:
        raise failed.error from None


class LocalStorage(Storage):
    """Keys are paths under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.exists():
            # a shared folder that is not mounted on this machine would be made here, unseen by others
            log.warning("storage folder %s did not exist: created it", self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                # mkstemp's 0600 would stay with the file: a worker running as another user could
                # not read the corpora, while folders (put_dir) get the usual 0644 files.
                os.fchmod(out.fileno(), 0o644)
                if isinstance(data, bytes | bytearray | memoryview):
                    out.write(data)
                else:
                    shutil.copyfileobj(data, out, 1024 * 1024)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path.read_bytes()

    def open(self, key: str) -> BinaryIO:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path.open("rb")

    def delete(self, key: str) -> None:
        path = self.path(key)
        if path.is_dir():
            # Rename first so readers never see a half-deleted folder.
            doomed = self._tmp / f"del-{uuid.uuid4().hex}"
            os.replace(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        prefix = check_prefix(prefix)
        base = self.root / prefix if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not rel.startswith(".tmp/"):
                keys.append(rel)
        return sorted(keys)

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def put_dir(self, prefix: str, local_dir: Path) -> None:
        target = self.path(prefix.rstrip("/"))
        staging = Path(tempfile.mkdtemp(dir=self._tmp))
        try:
            _copy_tree(local_dir, staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            old = None
            if target.exists():
                old = self._tmp / f"old-{uuid.uuid4().hex}"
                os.replace(target, old)
            os.replace(staging, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def get_dir(self, prefix: str, local_dir: Path) -> Path:
        source = self.path(prefix.rstrip("/"))
        if not source.is_dir():
            raise FileNotFoundError(prefix)
        local_dir = Path(local_dir)
        try:
            _copy_tree(source, local_dir)
        except OSError as error:
            if error.errno in _FULL_ERRNOS:
                # a write into the local copy failed: this machine's disk, not the storage
                raise LocalDiskError(error.errno, f"{local_dir}: {error.strerror}") from error
            raise
        return local_dir

    def size(self, prefix: str) -> int:
        path = self.path(prefix.rstrip("/"))
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0

    def check(self) -> None:
        probe = self._tmp / f"probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()

    def last_changed(self, prefix: str) -> float | None:
        path = self.path(prefix.rstrip("/"))
        entries = [path, *(path.rglob("*") if path.is_dir() else [])]
        # Copies keep their files' old mtimes, so ctimes count too; empty folders are nothing.
        if not any(p.is_file() for p in entries):
            return None
        return max(_changed(p) for p in entries)

    def stale_temporary(self, before: float) -> builtins.list[Temporary]:
        stale = []
        for entry in sorted(self._tmp.iterdir()):
            inside = list(entry.rglob("*")) if entry.is_dir() else []
            if max((_changed(p) for p in [entry, *inside]), default=0.0) < before:
                size = sum(p.stat().st_size for p in [entry, *inside] if p.is_file())
                reason = "temporary copy of an interrupted write or delete"
                stale.append(Temporary(f".tmp/{entry.name}", size, reason))
        return stale

    def remove_temporary(self, name: str) -> None:
        entry = self._tmp / check_key(name.removeprefix(".tmp/"))
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)

    def describe(self) -> str:
        return str(self.root)

    def unreachable(self, error: BaseException) -> str | None:
        for cause in causes(error):
            if isinstance(cause, LocalDiskError):
                return None
            if isinstance(cause, OSError) and cause.errno in _UNREACHABLE_ERRNOS:
                return str(cause)
        return None


def _changed(path: Path) -> float:
    info = path.lstat()
    return max(info.st_mtime, info.st_ctime)
