"""Folders that belong to one process (``<host>-<pid>``) under a shared root, and the removal of
those whose process is gone: a process killed (OOM, ``kill -9``) while it held a loaded model or
a training run's scratch files leaves them behind, and nothing else would ever remove them.
Processes of other hosts (containers sharing a volume) are not this one's to judge."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path


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


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
