"""API keys: bearer tokens, stored as SHA-256 hashes (the keys are 256-bit random, so a fast
hash is enough). Plain functions over a session; ``service.deps`` wires them into FastAPI."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from service.db.models import ApiKey, Owner, utcnow
from service.errors import storable
from service.logic.pages import Listing, Page, page_of, paged

KEY_PREFIX = "tsk_"
# The owner every request acts as in open (single-user) mode.
OPEN_MODE_OWNER_ID = "00000000-0000-0000-0000-000000000000"


def is_loopback(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ``::1``: reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return False  # another host name: it may resolve to any interface
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    owner_id: str | None  # None for the admin key and the metrics key
    is_admin: bool = False
    is_scraper: bool = False  # the metrics key: GET /metrics only


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: str
    owner_id: str
    owner_name: str
    key: str
    prefix: str


def create_key(session: Session, owner_name: str | None = None, owner_id: str | None = None) -> CreatedKey:
    """A new key for the existing owner ``owner_id``, or for a new owner named ``owner_name``."""
    if owner_id is not None:
        owner = session.get(Owner, owner_id) if storable(owner_id) else None
        if owner is None:
            raise LookupError(owner_id)
    else:
        owner = Owner(name=owner_name or "owner")
        session.add(owner)
        session.flush()
    key = generate_key()
    row = ApiKey(owner_id=owner.id, key_hash=hash_key(key), prefix=key[: len(KEY_PREFIX) + 6])
    session.add(row)
    session.flush()
    return CreatedKey(id=row.id, owner_id=owner.id, owner_name=owner.name, key=key, prefix=row.prefix)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    owner_id: str
    owner_name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


# Oldest first, as `tagsmith keys` has always listed them.
KEYS = Listing("keys", ApiKey.created_at, ApiKey.id, newest_first=False)


def _keys(include_revoked: bool) -> Select[ApiKey, str]:
    query = select(ApiKey, Owner.name).join(Owner, Owner.id == ApiKey.owner_id)
    return query if include_revoked else query.where(ApiKey.revoked_at.is_(None))


def _key_info(row: ApiKey, owner_name: str) -> KeyInfo:
    return KeyInfo(row.id, row.owner_id, owner_name, row.prefix, row.created_at, row.revoked_at)


def list_keys(session: Session, include_revoked: bool = False) -> list[KeyInfo]:
    """Every key (its id, owner and first characters; never the key), oldest first."""
    rows = session.execute(_keys(include_revoked).order_by(*KEYS.order_by()))
    return [_key_info(row, name) for row, name in rows]


def page_of_keys(
    session: Session, limit: int, cursor: str | None = None, include_revoked: bool = False
) -> Page[KeyInfo]:
    """``list_keys`` a page at a time, from ``cursor`` (a page's ``next``)."""
    rows = session.execute(paged(_keys(include_revoked), KEYS, limit, cursor=cursor)).tuples().all()
    page = page_of(rows, KEYS, limit, lambda row: (row[0].created_at, row[0].id))
    return Page([_key_info(row, name) for row, name in page.items], page.cursor)


def find_key(session: Session, text: str) -> list[ApiKey]:
    """The active keys that ``text`` names: a key id, a prefix as listed (``tsk_`` and six
    characters), or the whole key (a leaked one)."""
    if not storable(text):
        return []
    by_id = session.get(ApiKey, text)
    if by_id is not None:
        return [by_id] if by_id.revoked_at is None else []
    named = or_(ApiKey.prefix == text, ApiKey.key_hash == hash_key(text))
    return list(session.scalars(select(ApiKey).where(named, ApiKey.revoked_at.is_(None))))


def revoke_key(session: Session, key_id: str) -> bool:
    row = session.get(ApiKey, key_id) if storable(key_id) else None
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def owner_for_key(session: Session, key: str) -> str | None:
    """The owner of an active key, or None."""
    row = session.execute(
        select(ApiKey.owner_id).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).first()
    return row[0] if row else None


def is_admin_key(key: str, admin_key: str) -> bool:
    return bool(admin_key) and hmac.compare_digest(key.encode("utf-8"), admin_key.encode("utf-8"))


def ensure_open_mode_owner(session: Session) -> str:
    if session.get(Owner, OPEN_MODE_OWNER_ID) is None:
        session.add(Owner(id=OPEN_MODE_OWNER_ID, name="default"))
        session.flush()
    return OPEN_MODE_OWNER_ID
