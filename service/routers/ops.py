from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service import broker, metrics
from service.db.migrate import require_current_schema
from service.deps import require_operator
from service.routers.common import problems
from service.schemas.api import Health, Readiness
from service.settings import get_settings
from service.storage import get_storage

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)


@router.get("/health", response_model=Health)
def health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


# The last reason each dependency failed for: /ready answers without a key, so it names only the
# error's class; the reason goes to the log, once per change rather than once per probe.
_logged_reasons: dict[str, str] = {}


def _check(name: str, probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if _logged_reasons.get(name) != reason:
            _logged_reasons[name] = reason
            log.warning("not ready: %s: %s", name, reason)
        return f"error: {type(error).__name__}"
    if _logged_reasons.pop(name, None) is not None:
        log.warning("ready again: %s", name)
    return "ok"


def _checks() -> dict[str, str]:
    url = get_settings().broker_url
    return {
        # reachable and at this code's schema: an API started with --no-migrate on a database not
        # migrated yet (or rolled back to older code) answered every request 503 while "ready"
        "database": _check("database", require_current_schema),
        "broker": _check("broker", lambda: broker.ping(url, timeout=1.0))
        if url
        else "error: TAGSMITH_BROKER_URL is not set",
        "storage": _check("storage", lambda: get_storage().check()),
    }


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready() -> JSONResponse:
    """Readiness: database, broker and storage reachable (503 naming what is not)."""
    checks = await run_in_threadpool(_checks)
    ok = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ok else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require_operator)],
    responses={200: {"content": {"text/plain": {}}}, **problems(401, 403)},
)
def prometheus_metrics() -> Response:
    """Prometheus metrics, server-wide: the admin key or the metrics key (`TAGSMITH_METRICS_KEY`),
    or any keyless request from this machine in open mode."""
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
