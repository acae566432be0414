"""FastAPI dependencies: the caller's identity (owner, admin or open-mode default owner).

Key lookups are cached for a few seconds (hash -> owner) because predict is called at high rates;
a revoked key therefore stops working within ``AUTH_CACHE_SECONDS``.
"""

from __future__ import annotations

import threading
import time

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from service import auth
from service.db.session import session_scope
from service.errors import Forbidden, Unauthorized
from service.settings import get_settings

AUTH_CACHE_SECONDS = 5.0
_cache_lock = threading.Lock()
_key_cache: dict[str, tuple[str, float]] = {}
_open_owner_ready: set[str] = set()


def clear_auth_cache() -> None:
    with _cache_lock:
        _key_cache.clear()
        _open_owner_ready.clear()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <API key>'")
    return token.strip()


def _cached_owner(token: str) -> str | None:
    digest = auth.hash_key(token)
    with _cache_lock:
        hit = _key_cache.get(digest)
    return hit[0] if hit is not None and hit[1] > time.monotonic() else None


def _owner_for(token: str) -> str | None:
    digest = auth.hash_key(token)
    now = time.monotonic()
    with session_scope() as session:
        owner_id = auth.owner_for_key(session, token)
    if owner_id is not None:
        with _cache_lock:
            if len(_key_cache) > 10_000:
                _key_cache.clear()
            _key_cache[digest] = (owner_id, now + AUTH_CACHE_SECONDS)
    return owner_id


async def get_principal(request: Request) -> auth.Principal:
    """Async so that the hot path (a cached key) costs no thread hop; database work runs in a thread."""
    settings = get_settings()
    token = _bearer(request)
    if token is None:
        if settings.open_mode:
            url = settings.resolved_database_url
            if url not in _open_owner_ready:
                await run_in_threadpool(_ensure_open_owner)
                _open_owner_ready.add(url)
            return auth.Principal(owner_id=auth.OPEN_MODE_OWNER_ID)
        raise Unauthorized("an API key is required (Authorization: Bearer <key>)")
    if auth.is_admin_key(token, settings.admin_key):
        return auth.Principal(owner_id=None, is_admin=True)
    owner_id = _cached_owner(token) or await run_in_threadpool(_owner_for, token)
    if owner_id is None:
        raise Unauthorized("unknown or revoked API key")
    return auth.Principal(owner_id=owner_id)


def _ensure_open_owner() -> None:
    with session_scope() as session:
        auth.ensure_open_mode_owner(session)


async def current_owner(request: Request) -> str:
    """The owner id every resource endpoint acts for (one dependency, not two: predict is hot)."""
    principal = await get_principal(request)
    if principal.owner_id is None:
        raise Forbidden("the admin key manages API keys only; use an owner's key for resources")
    return principal.owner_id


async def require_admin(request: Request) -> auth.Principal:
    principal = await get_principal(request)
    if not principal.is_admin:
        raise Forbidden("only the admin key may manage API keys")
    return principal
