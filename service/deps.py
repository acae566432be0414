"""The caller's identity (owner, admin or open-mode default owner): FastAPI dependencies, and
``AuthMiddleware``, which runs the same check before the request's body is read.

Key lookups are cached for a few seconds (hash -> owner) because predict is called at high rates;
a revoked key therefore stops working within ``AUTH_CACHE_SECONDS``. A request's principal is kept
in its scope, so the middleware's check and the route's dependency cost one lookup.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from service import auth, problems
from service.db.session import session_scope
from service.errors import Forbidden, Unauthorized
from service.settings import get_settings

AUTH_CACHE_SECONDS = 5.0
# The request's principal, once resolved (set by AuthMiddleware or the first dependency).
PRINCIPAL_SCOPE_KEY = "tagsmith.principal"
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
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is None:
        principal = await _authenticate(request)
        request.scope[PRINCIPAL_SCOPE_KEY] = principal
    return principal


async def _authenticate(request: Request) -> auth.Principal:
    settings = get_settings()
    token = _bearer(request)
    if token is None:
        if settings.open_mode:
            _refuse_remote_keyless(request)
            url = settings.resolved_database_url
            if url not in _open_owner_ready:
                await run_in_threadpool(_ensure_open_owner)
                _open_owner_ready.add(url)
            return auth.Principal(owner_id=auth.OPEN_MODE_OWNER_ID)
        raise Unauthorized("an API key is required (Authorization: Bearer <key>)")
    if auth.is_admin_key(token, settings.admin_key):
        return auth.Principal(owner_id=None, is_admin=True)
    if auth.is_admin_key(token, settings.metrics_key):
        return auth.Principal(owner_id=None, is_scraper=True)
    owner_id = _cached_owner(token) or await run_in_threadpool(_owner_for, token)
    if owner_id is None:
        raise Unauthorized("unknown or revoked API key")
    return auth.Principal(owner_id=owner_id)


def _refuse_remote_keyless(request: Request) -> None:
    # `tagsmith up` and `tagsmith api` refuse to listen beyond loopback in open mode; an app started
    # another way (uvicorn --host 0.0.0.0) still serves keyless requests to this machine only.
    host = request.client.host if request.client else None  # no client address: a Unix socket
    if host is not None and not auth.is_loopback(host):
        raise Unauthorized(
            f"open mode answers requests without a key from this machine only, and this one came from "
            f"{host}: send an API key (Authorization: Bearer <key>)"
        )


def _ensure_open_owner() -> None:
    with session_scope() as session:
        auth.ensure_open_mode_owner(session)


async def current_owner(request: Request) -> str:
    """The owner id every resource endpoint acts for (one dependency, not two: predict is hot)."""
    principal = await get_principal(request)
    if principal.owner_id is None:
        if principal.is_scraper:
            raise Forbidden("the metrics key reads GET /metrics; use an owner's key for resources")
        raise Forbidden("the admin key manages API keys only; use an owner's key for resources")
    return principal.owner_id


async def require_admin(request: Request) -> auth.Principal:
    principal = await get_principal(request)
    if not principal.is_admin:
        raise Forbidden("only the admin key may manage API keys")
    return principal


async def require_operator(request: Request) -> auth.Principal:
    """Server-wide views (metrics count every owner's requests and jobs): the admin key, the
    metrics key, or anyone in single-user open mode."""
    principal = await get_principal(request)
    if not (principal.is_admin or principal.is_scraper or get_settings().open_mode):
        raise Forbidden("metrics are server-wide: read them with the admin key or TAGSMITH_METRICS_KEY")
    return principal


# The checks a route may depend on, strictest first: the one a route has is the one it needs.
_CHECKS: tuple[Callable[[Request], Awaitable[Any]], ...] = (
    require_admin,
    require_operator,
    current_owner,
    get_principal,
)


def _check_of(dependant: Dependant) -> Callable[[Request], Awaitable[Any]] | None:
    calls: set[Any] = set()
    pending = [dependant]
    while pending:
        node = pending.pop()
        calls.add(node.call)
        pending.extend(node.dependencies)
    return next((check for check in _CHECKS if check in calls), None)


class AuthMiddleware:
    """The API-key check of the route a request is for, before anything reads its body: FastAPI
    reads and parses a body before it solves dependencies, so a request without a key had its
    whole body taken in (a 300 MB JSON body cost 900 MB) to be told 401. The answer is the one
    the route's dependency gives (the same function runs); the principal stays in the scope for
    that dependency. Requests for routes without a check (health, readiness, the docs), for no
    route (404) or with a method the path lacks (405) pass on as they are.
    """

    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        # Every route in the router's order (the first that matches path and method serves), with
        # the check it needs; the dependant holds the route's own and its router's dependencies.
        self.routes = [
            (route, _check_of(route.dependant) if hasattr(route, "dependant") else None) for route in routes
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route, check in self.routes:
                if route.matches(scope)[0] is Match.FULL:
                    if check is not None:
                        # The metrics middleware labels the request by its route, answered here or not.
                        scope.setdefault("route", route)
                        request = Request(scope)
                        try:
                            await check(request)
                        except Exception as e:
                            response = await problems.render(request, e)
                            await response(scope, receive, send)
                            return
                    break
        await self.app(scope, receive, send)
