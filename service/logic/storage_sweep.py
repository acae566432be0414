"""Storage that nothing points to any more, and its removal (``tagsmith clean-storage``).

Every write puts files first and then commits the row (or the job's key) that points to them,
so a process killed in between leaves files behind: a model folder of a worker killed while
finishing (hundreds of MB for a transformer), a checkpoint written just before a kill, a corpus
of an upload cut short, the temporary copy of an interrupted write. Nothing reads them again.

A unit of storage is one corpus, model, checkpoint or run-file snapshot. It is kept while a row
points to it; one that no row points to is removed once it has not changed for ``min_age``
seconds, which covers the moment between writing files and committing their row.

A database that points to none of the stored units is taken for another deployment's (a
forgotten ``TAGSMITH_DATABASE_URL``, a new database after a typo, a staging database): from it,
every corpus and model would look left over. The sweep then removes nothing unless forced.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from sqlalchemy import select

from service.db.models import Corpus, Job, Model
from service.db.session import session_scope
from service.settings import get_settings, redact
from service.storage import Storage, get_storage

# The key layouts the service writes, grouped into the unit a row points to.
_UNITS = (
    re.compile(r"^(corpora/[^/]+)/"),
    re.compile(r"^(models/[^/]+)/"),
    re.compile(r"^(jobs/[^/]+/(?:checkpoints|files)/[^/]+)/"),
)


class ForeignStorage(Exception):
    """The database points to none of the stored units: it is not the one this storage belongs to."""


@dataclass(frozen=True)
class Leftover:
    key: str  # a storage prefix, or the name of a temporary entry
    bytes: int
    reason: str
    temporary: bool = False


def _referenced() -> set[str]:
    with session_scope() as session:
        corpora = {f"corpora/{cid}" for cid in session.scalars(select(Corpus.id))}
        models = set(session.scalars(select(Model.storage_key)))
        jobs = {
            key for row in session.execute(select(Job.checkpoint_key, Job.files_key)) for key in row if key
        }
    return corpora | models | jobs


def _unit(key: str) -> str | None:
    for pattern in _UNITS:
        if match := pattern.match(key):
            return match.group(1)
    return None


def find_leftovers(
    min_age: float, now: float | None = None, storage: Storage | None = None, force: bool = False
) -> list[Leftover]:
    """What ``clean_storage`` would remove. Rows are read before storage is listed, so a unit
    written after that read is recent and kept. ForeignStorage (unless ``force``) when the
    database points to none of the stored units."""
    storage = storage or get_storage()
    before = (time.time() if now is None else now) - min_age
    referenced = _referenced()
    units = sorted({unit for key in storage.list() if (unit := _unit(key)) is not None})
    if units and not force and referenced.isdisjoint(units):
        raise ForeignStorage(
            f"the database {redact(get_settings().resolved_database_url)} points to none of the "
            f"{len(units)} corpora, models and job files in storage {storage.describe()}, so it looks like "
            "another deployment's database (is TAGSMITH_DATABASE_URL set?); nothing was removed. If every "
            "corpus, model and job was deleted, tagsmith clean-storage --force removes their files"
        )
    found = []
    for unit in units:
        if unit in referenced:
            continue
        changed = storage.last_changed(unit)
        if changed is not None and changed < before:
            found.append(Leftover(unit, storage.size(unit), f"no {_what(unit)} points to it"))
    found += [
        Leftover(entry.name, entry.bytes, entry.reason, temporary=True)
        for entry in storage.stale_temporary(before)
    ]
    return found


def _what(unit: str) -> str:
    if unit.startswith("jobs/"):
        return "job's checkpoint_key" if "/checkpoints/" in unit else "job's files_key"
    return "corpus row" if unit.startswith("corpora/") else "model row"


def clean_storage(
    min_age: float, dry_run: bool = False, now: float | None = None, force: bool = False
) -> list[Leftover]:
    """Remove (or with ``dry_run`` only list) what nothing points to."""
    storage = get_storage()
    found = find_leftovers(min_age, now=now, storage=storage, force=force)
    if not dry_run:
        for leftover in found:
            if leftover.temporary:
                storage.remove_temporary(leftover.key)
            else:
                storage.delete(leftover.key)
    return found
