"""Publish the run folder's files (``service.run_files.RUN_FILES``) to storage, and bring them
back when a job resumes so the log and the weight traces go on where they stopped."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.db.models import Job
from service.db.session import session_scope
from service.run_files import RUN_FILES, run_files_key
from service.storage import Storage
from worker.lease import release

log = logging.getLogger(__name__)

# the files a resumed trainer appends to (loss.tsv it rewrites from the checkpoint's history)
CONTINUED = ("training.log", "weights.txt")


def publish(storage: Storage, job_id: str, run: str, label: str, run_dir: Path) -> str | None:
    """Upload a snapshot of the run folder's files under a new key and return it (None when the
    run has written none yet). The caller points the job row to it."""
    present = [name for name in RUN_FILES if (run_dir / name).is_file()]
    if not present:
        return None
    with tempfile.TemporaryDirectory(prefix="tagsmith-files-") as staging:
        for name in present:
            shutil.copyfile(run_dir / name, Path(staging) / name)
        if "weights.txt" in present:
            _plot_weights(Path(staging))
        key = run_files_key(job_id, label, run)
        storage.put_dir(key, Path(staging))
    return key


def _plot_weights(folder: Path) -> None:
    from engine.plotting import PlotInputError, Plotter

    try:
        Plotter().plot_weights(folder / "weights.txt", folder / "weights.png")
    except PlotInputError as error:
        # weights.txt before its first sample: the text goes out, the picture next time
        log.info("weights.png not drawn: %s", error)


def restore(storage: Storage, key: str, run_dir: Path) -> None:
    """Copy the files a resumed run continues from the snapshot ``key`` into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in CONTINUED:
        if storage.exists(f"{key}/{name}"):
            (run_dir / name).write_bytes(storage.get(f"{key}/{name}"))


def release_with_files(
    storage: Storage, job_id: str, owner: str, run: str, label: str, run_dir: Path, **final_values: Any
) -> bool:
    """``release`` the lease, pointing the job to a snapshot of the run's files in the same fenced
    update: a cancelled, failed or handed-back run keeps its log up to where it stopped, and the
    run that resumes it appends to that."""
    try:
        key = publish(storage, job_id, run, label, run_dir)
    except Exception:
        # the files are a courtesy: the job's final state must be written whatever happens to them
        log.exception("job %s: the run's files could not be published", job_id)
        key = None
    with session_scope() as session:
        old = session.execute(select(Job.files_key).where(Job.id == job_id)).scalar_one_or_none()
    released = release(job_id, owner, **final_values, **({"files_key": key} if key else {}))
    if key and not released:
        storage.delete(key)
    elif key and old and old != key:
        storage.delete(old)
    return released
