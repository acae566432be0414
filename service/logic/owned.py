"""Rows of one owner: another owner's row is indistinguishable from a missing one (404, not 403)."""

from __future__ import annotations

from typing import Protocol, TypeVar

from sqlalchemy.orm import Session

from service.errors import NotFound, storable


class _Owned(Protocol):
    owner_id: str


R = TypeVar("R", bound=_Owned)


def owned(session: Session, table: type[R], row_id: str, owner_id: str) -> R | None:
    """The row if it exists and is ``owner_id``'s, else None."""
    if not storable(row_id):  # "a%00b" in a path: PostgreSQL refuses the query, and no id is so
        return None
    row = session.get(table, row_id)
    return row if row is not None and row.owner_id == owner_id else None


def owned_or_404(session: Session, table: type[R], row_id: str, owner_id: str, what: str) -> R:
    """The row, or NotFound "<what> <id> not found"."""
    row = owned(session, table, row_id, owner_id)
    if row is None:
        raise NotFound(f"{what} {row_id} not found")
    return row
