from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from service import metrics, readiness
from service.deps import require_operator
from service.routers.common import TextJSONRoute, problems
from service.schemas.api import Health, Index, Readiness

router = APIRouter(tags=["operations"], route_class=TextJSONRoute)


@router.get("/", response_model=Index)
async def index(request: Request) -> Index:
    """The service's name and version, and where its docs and checks are: the address that
    `tagsmith up` prints answered a bare 404."""
    app = request.app
    return Index(
        service=app.title,
        version=app.version,
        docs=app.docs_url or "",
        openapi=app.openapi_url or "",
        health="/health",
        ready="/ready",
    )


@router.get("/health", response_model=Health)
async def health() -> Health:
    """Liveness: the process answers."""
    # async, so it needs no threadpool token: it answers while sync endpoints wait for one
    return Health(status="ok")


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready() -> JSONResponse:
    """Readiness: database, broker and storage reachable (503 naming what is not, or what gave
    no answer within a few seconds)."""
    checks = await readiness.checks()
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
