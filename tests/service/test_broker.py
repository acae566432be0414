"""The embedded Redis of `tagsmith up` and the tests: it stops when its stack stops, with clients
still attached, and keeps what was queued for the next start."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import redis

from service.broker import start_embedded_redis


def test_the_embedded_redis_stops_with_clients_attached_and_keeps_its_data(tmp_path: Path) -> None:
    server = start_embedded_redis(tmp_path / "redis")
    pid = server.server.pid  # type: ignore[attr-defined]
    # What a running stack holds: a worker's and the API's connection pools.
    clients = [redis.Redis.from_url(server.url) for _ in range(2)]
    clients[0].rpush("cpu", "a queued job")
    clients[1].ping()

    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    process = psutil.Process(pid) if psutil.pid_exists(pid) else None
    assert process is None or process.status() == psutil.STATUS_ZOMBIE, "redis-server still running"

    again = start_embedded_redis(tmp_path / "redis")
    try:
        assert redis.Redis.from_url(again.url).lrange("cpu", 0, -1) == [b"a queued job"]
    finally:
        again.stop()
