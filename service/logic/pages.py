"""Keyset (cursor) paging for the listings (``GET /corpora``, ``/jobs``, ``/models``, ``/keys``).

With ``limit``/``offset`` a page is "skip the first N", so an item created between two page
fetches pushed every later item one place down: a client walking the pages saw one item twice
(and one deleted meanwhile made it miss one). A cursor names the last item of a page by its sort
key instead, and the next page is every item after that key, whatever was added or removed in
front of it.

The sort key is ``(created_at, id)``: ``created_at`` alone is not unique (two rows of one
transaction, or of one clock tick, share it), and a page boundary between such twins would lose
or repeat one. The cursor is URL-safe base64 of ``{"l": listing, "t": created_at, "i": id}``;
opaque to clients, not signed: a made-up one names another position in the caller's own
listing, nothing more.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, TypeVarTuple

from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.errors import FieldError, Invalid, storable

T = TypeVar("T")
R = TypeVar("R")
Ts = TypeVarTuple("Ts")

# A cursor is about 130 characters; the query parameter refuses much longer ones before decoding.
MAX_CURSOR_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Listing:
    """One listing's order: ``name`` is written into its cursors, so a cursor of ``/jobs`` given
    to ``/corpora`` is refused rather than read as a position there."""

    name: str
    created_at: InstrumentedAttribute[datetime]
    id: InstrumentedAttribute[str]
    newest_first: bool = True

    def order_by(self) -> tuple[ColumnElement[Any], ...]:
        # id ascending in both directions: the order offset paging has always answered
        created = self.created_at.desc() if self.newest_first else self.created_at.asc()
        return created, self.id.asc()

    def after(self, created_at: datetime, id_: str) -> ColumnElement[bool]:
        """The rows that come after ``(created_at, id_)`` in ``order_by()``: the same comparison
        as the ORDER BY, done by the database, so the two cannot disagree (SQLite compares the
        stored strings, PostgreSQL the timestamps, and each its own collation of ids)."""
        beyond = self.created_at < created_at if self.newest_first else self.created_at > created_at
        return or_(beyond, and_(self.created_at == created_at, self.id > id_))


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    cursor: str | None  # of the next page; None on the last


def encode_cursor(listing: Listing, created_at: datetime, id_: str) -> str:
    # Microseconds always written, and in UTC: read back, the value binds to exactly the stored
    # one (SQLite keeps UTC text with six digits; PostgreSQL's timestamptz is microseconds too).
    moment = created_at.astimezone(UTC).isoformat(timespec="microseconds")
    raw = json.dumps({"l": listing.name, "t": moment, "i": id_}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _refused(message: str) -> Invalid:
    return Invalid(f"cursor: {message}", [FieldError(["query", "cursor"], message)])


def decode_cursor(listing: Listing, cursor: str) -> tuple[datetime, str]:
    """``(created_at, id)`` of a cursor of ``listing``; a 422 naming ``query.cursor`` otherwise."""
    unknown = f"not a cursor of this listing; give the `next` of a {listing.name} page as it came"
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, binascii.Error):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _refused(unknown) from None
    if not isinstance(value, dict) or set(value) != {"l", "t", "i"}:
        raise _refused(unknown)
    name, moment, id_ = value["l"], value["t"], value["i"]
    if not (isinstance(name, str) and isinstance(moment, str) and isinstance(id_, str)) or not storable(id_):
        raise _refused(unknown)
    if name != listing.name:
        raise _refused(f"a cursor of {name}, not of {listing.name}: give the `next` of a {listing.name} page")
    try:
        created_at = datetime.fromisoformat(moment)
    except ValueError:
        raise _refused(unknown) from None
    if created_at.tzinfo is None:
        # a naive time would be compared as if UTC on SQLite and as local time on PostgreSQL
        raise _refused(unknown)
    try:
        return created_at.astimezone(UTC), id_
    except OverflowError:  # "0001-01-01T00:00:00+14:00" is before the first year in UTC
        raise _refused(unknown) from None


def paged(
    query: Select[*Ts], listing: Listing, limit: int, offset: int = 0, cursor: str | None = None
) -> Select[*Ts]:
    """``query`` ordered by ``listing``, from ``cursor`` (or skipping ``offset`` rows), one row
    more than ``limit``: that row, when there is one, says a next page exists."""
    if cursor is not None and offset:
        raise Invalid(
            "give cursor or offset, not both",
            [
                FieldError(
                    ["query", "offset"], "give cursor or offset, not both: the cursor says where to start"
                )
            ],
        )
    if cursor is not None:
        query = query.where(listing.after(*decode_cursor(listing, cursor)))
    elif offset:
        query = query.offset(offset)
    return query.order_by(*listing.order_by()).limit(limit + 1)


def page_of(
    rows: Sequence[R], listing: Listing, limit: int, key: Callable[[R], tuple[datetime, str]]
) -> Page[R]:
    """The first ``limit`` of the rows ``paged()`` fetched, with the cursor after the last one
    when more came; ``key`` reads a row's ``(created_at, id)``."""
    items = list(rows[:limit])
    if len(rows) <= limit:
        return Page(items, None)
    return Page(items, encode_cursor(listing, *key(items[-1])))


def fetch_page(
    session: Session,
    query: Select[T],
    listing: Listing,
    limit: int,
    offset: int = 0,
    cursor: str | None = None,
) -> Page[T]:
    """A page of the one entity ``query`` selects (``select(Job).where(...)``)."""
    rows = session.scalars(paged(query, listing, limit, offset, cursor)).all()
    created, id_ = listing.created_at.key, listing.id.key
    return page_of(rows, listing, limit, lambda row: (getattr(row, created), getattr(row, id_)))
