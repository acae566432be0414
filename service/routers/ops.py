from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from service import broker, metrics
from service.db.session import get_engine
from service.deps import require_operator
from service.routers.common import problems
from service.schemas.api import Health, Readiness
from service.settings import get_settings
from service.storage import get_storage

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health)
def health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


def _checks() -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:
        checks["database"] = f"error: {type(e).__name__}"
    url = get_settings().broker_url
    if not url:
        checks["broker"] = "error: TAGSMITH_BROKER_URL is not set"
    else:
        try:
            broker.ping(url, timeout=1.0)
            checks["broker"] = "ok"
        except Exception as e:
            checks["broker"] = f"error: {type(e).__name__}"
    try:
        get_storage().check()
        checks["storage"] = "ok"
    except Exception as e:
        checks["storage"] = f"error: {type(e).__name__}"
    return checks


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
