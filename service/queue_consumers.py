"""Which queues a worker takes: each worker announces its queues in the broker, refreshed by its
reaper thread, so a job sent to a queue nobody takes (a GPU job where no GPU worker runs) says why
it waits instead of waiting in silence. Imported by the worker: no FastAPI here."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from service.queue import NO_BROKER
from service.settings import get_settings

log = logging.getLogger(__name__)

_PREFIX = "tagsmith:consumers"
_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}
NOTE_SECONDS = 5.0
_notes: dict[tuple[str, str], tuple[str | None, float]] = {}


def _key(queue: str) -> str:
    return f"{_PREFIX}:{queue}"


def _now(client: Any) -> float:
    # the broker's clock: workers and API processes on other hosts may disagree on theirs
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def announce(client: Any, queues: list[str], worker: str, ttl_seconds: float) -> None:
    """Say that ``worker`` takes ``queues`` for the next ``ttl_seconds`` (then it must say it again).
    One sorted set per queue, worker -> until when: a lookup is one command, not a key scan."""
    until = _now(client) + ttl_seconds
    pipe = client.pipeline()
    for queue in queues:
        pipe.zadd(_key(queue), {worker: until})
        pipe.zremrangebyscore(_key(queue), "-inf", until - 2 * ttl_seconds)  # long gone
    pipe.execute()


def has_consumer(client: Any, queue: str) -> bool:
    return int(client.zcount(_key(queue), _now(client), "+inf")) > 0


def _broker_client() -> redis.Redis | None:
    url = get_settings().broker_url
    if not url:
        return None
    with _lock:
        client = _clients.get(url)
        if client is None:
            # short timeouts: this only adds a note to an answer, it must not hold one up
            client = _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        return client


def waiting_note(queue: str) -> str | None:
    """Why a job queued on ``queue`` is not taken: no broker URL here, or no worker announces that
    queue (None when one does, or when the broker cannot be asked). Known for NOTE_SECONDS: a watch polls a job
    twice a second, and a broker that does not answer would add its timeout to every poll."""
    now = time.monotonic()
    key = (get_settings().broker_url, queue)
    with _lock:
        cached = _notes.get(key)
    if cached is not None and cached[1] > now:
        return cached[0]
    note = _ask(queue)
    with _lock:
        _notes[key] = (note, now + NOTE_SECONDS)
    return note


def _ask(queue: str) -> str | None:
    client = _broker_client()
    if client is None:
        return NO_BROKER
    try:
        if has_consumer(client, queue):
            return None
    except redis.RedisError as error:
        log.info("queue consumers unknown: %s", error)
        return None
    hint = " on a machine with a GPU" if queue == "gpu" else ""
    return f"no worker takes the {queue} queue: start one with `tagsmith worker --queues {queue}`{hint}"
