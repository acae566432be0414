"""Folders that belong to one process (``<host>-<pid>``) under a local root, and the removal of
those whose process is gone: a process killed (OOM, ``kill -9``) while it held a loaded model or
a training run's scratch files leaves them behind, and nothing else would ever remove them.

The roots are in the machine's temporary folder, never on the shared data volume: a container
gets a new host name when it is recreated, so a dead container's folders on a shared volume
could never be told from a live one's and would stay there for good."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path


def private_root(kind: str) -> Path:
    """``$TMPDIR/tagsmith-<kind>-<uid>``, made private to this user: another user's process could
    not write in a 0755 folder made by the first, and the files are the owners' corpora and models."""
    root = Path(tempfile.gettempdir()) / f"tagsmith-{kind}-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    if root.is_symlink() or root.stat().st_uid != os.getuid():
        raise PermissionError(f"{root} belongs to another user; set TMPDIR to a folder of this user's")
    root.chmod(0o700)  # made open by someone's umask or an older version
    return root


def process_folder(root: Path) -> Path:
    """This process's folder under ``root`` (not created), after removing those of dead processes
    of this host."""
    host = socket.gethostname()
    if root.is_dir():
        for folder in root.iterdir():
            name, _, pid = folder.name.rpartition("-")
            if name == host and pid.isdigit() and not alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
    return root / f"{host}-{os.getpid()}"


# What API requests unpack and stage (uploads, model imports, downloads): a process killed
# mid-import left up to 4 x the upload limit in $TMPDIR for good.
REQUESTS_KIND = "requests"


def own_folder(kind: str) -> Path:
    """This process's folder under ``private_root(kind)``, made if need be (the first call of a
    process removes dead processes' folders)."""
    folder = process_folder(private_root(kind))
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
