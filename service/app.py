"""The ASGI app (``uvicorn service.app:app``): routers, problem details, metrics, the upload
limit, and on start the database migrations and the predict model cache."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from service import problems
from service.corpus_reading import close_readers
from service.deps import AuthMiddleware
from service.limits import UploadLimitMiddleware
from service.logging_setup import configure_logging
from service.logic.predict import ModelCache
from service.metrics import MetricsMiddleware
from service.parent_watch import stop_with_parent
from service.predict_fastpath import PredictFastPath
from service.process_folders import REQUESTS_KIND, own_folder
from service.queue import NO_BROKER
from service.routers import corpora, jobs, keys, models, ops, transformers
from service.settings import get_settings

log = logging.getLogger(__name__)

DESCRIPTION = """Train and serve sequence taggers and text classifiers.

Authenticate with `Authorization: Bearer <API key>`. Errors are `application/problem+json`
(RFC 9457) with an `errors` list naming each bad field."""


def create_app(run_migrations: bool = True) -> FastAPI:
    configure_logging()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = get_settings()
        stop_with_parent()
        if run_migrations and settings.migrate_on_start:
            from service.db.migrate import upgrade

            await asyncio.to_thread(upgrade)
        if not settings.broker_url:
            log.warning(NO_BROKER)
        app.state.loop = asyncio.get_running_loop()
        app.state.model_cache = ModelCache(settings)
        # now, not at the first upload: what a killed predecessor left goes at once
        await asyncio.to_thread(own_folder, REQUESTS_KIND)
        try:
            yield
        finally:
            app.state.model_cache.close()
            close_readers()

    app = FastAPI(title="Tagsmith", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    problems.install(app)
    # Predict is the hot path: PredictFastPath serves it before routing; its router comes first
    # for the documented route.
    routers = (models.router, ops.router, keys.router, corpora.router, jobs.router, transformers.router)
    for router in routers:
        app.include_router(router)
    # Outermost last: metrics, the predict fast path (which checks its key itself), the API key
    # check, the body size limits, then FastAPI, which reads the body. The key check matches the
    # routers' routes: included without a prefix, their paths are the app's.
    app.add_middleware(UploadLimitMiddleware)
    app.add_middleware(AuthMiddleware, routes=[route for router in routers for route in router.routes])
    app.add_middleware(PredictFastPath, route=_route(models.router, "/models/{model_id}/predict"))
    app.add_middleware(MetricsMiddleware)
    _document_bearer_auth(app)
    return app


def _route(router: APIRouter, path: str) -> Any:
    return next(r for r in router.routes if getattr(r, "path", None) == path)


def _too_large() -> dict[str, Any]:
    return {
        "description": "Request body too large",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Problem"}},
            problems.PROBLEM_MEDIA_TYPE: {},
        },
    }


def _document_bearer_auth(app: FastAPI) -> None:
    """Declare the API-key scheme in the OpenAPI document (the docs' "Authorize" button), and the
    413 of every operation that takes a body; the checks themselves are ``service.deps`` and
    ``service.limits``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key from `POST /keys`."}
            }
            open_paths = {"/health", "/ready"}
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    if path not in open_paths:
                        operation["security"] = [{"apiKey": []}]
                    if "requestBody" in operation:
                        # service.limits: every body has a size limit.
                        operation["responses"].setdefault("413", _too_large())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


app = create_app()
