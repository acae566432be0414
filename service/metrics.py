"""Prometheus metrics: requests, latencies, predict batch sizes, model cache, jobs by state.

One process-wide registry (``REGISTRY``); the jobs gauge is computed from the database at scrape
time, so it is right whichever process changed a job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service.db.models import JOB_STATUSES, Job

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "tagsmith_http_requests_total",
    "HTTP requests by method, route and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "tagsmith_http_request_seconds",
    "HTTP request latency by method and route.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
PREDICT_BATCH_SIZE = Histogram(
    "tagsmith_predict_batch_sentences",
    "Sentences per model call of the predict batcher.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)
PREDICT_SENTENCES = Counter("tagsmith_predict_sentences_total", "Sentences predicted.", registry=REGISTRY)
MODEL_LOADS = Counter(
    "tagsmith_model_loads_total", "Models loaded into the predict cache.", registry=REGISTRY
)
MODELS_LOADED = Gauge("tagsmith_models_loaded", "Models in the predict cache.", registry=REGISTRY)


class JobsCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        from service.db.session import session_scope

        family = GaugeMetricFamily("tagsmith_jobs", "Jobs by status (all owners).", labels=["status"])
        counts = dict.fromkeys(JOB_STATUSES, 0)
        try:
            with session_scope() as session:
                for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
                    counts[status] = int(count)
        except Exception:
            # A scrape must not fail because the database is briefly away; /ready reports that.
            return
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family


REGISTRY.register(JobsCollector())


def render() -> bytes:
    return generate_latest(REGISTRY)


# Set in the request's scope by a handler whose client closed the connection before the answer:
# counted as nginx's 499 (client closed request), not as the 500 of an answer never started.
CLIENT_GONE = "tagsmith.client_gone"


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (not the raw path)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            code = 499 if status[0] == 500 and scope.get(CLIENT_GONE) else status[0]
            HTTP_REQUESTS.labels(method, path, str(code)).inc()
            HTTP_LATENCY.labels(method, path).observe(time.perf_counter() - start)
