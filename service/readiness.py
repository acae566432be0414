"""Readiness probes (``GET /ready``): database, broker and storage.

A dependency that hangs rather than fails (a storage whose writes block, a database host that
drops packets) must not hang the API with it. Each probe therefore runs on a thread of its own,
outside the request threadpool: 45 concurrent /ready calls once took all 40 of AnyIO's tokens
with storage probes stuck in ``unlink``, and every sync endpoint waited behind them. A probe of a
dependency is shared by every /ready call that comes while it is in flight, so a hung dependency
holds one thread, not one per call; and /ready waits for it ``READY_TIMEOUT_S`` at most, then
names it ("error: no answer within 3 s").

The threads are daemons: a probe stuck in the kernel must not keep the process from exiting
(``concurrent.futures`` joins its workers at exit, which is why it is not used here).
Imported only by the API; no FastAPI here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

from service import broker
from service.db.migrate import require_current_schema
from service.settings import get_settings
from service.storage import get_storage

log = logging.getLogger(__name__)

# Below the 4 s the docker-compose health check gives /ready, so it gets an answer naming the
# dependency rather than a timeout of its own.
READY_TIMEOUT_S = 3.0

# The last reason each dependency failed for: /ready answers without a key, so it names only the
# error's class; the reason goes to the log, once per change rather than once per probe.
_logged_reasons: dict[str, str] = {}
_in_flight: dict[str, Future[str]] = {}
_lock = threading.Lock()


def _not_ready(name: str, reason: str) -> None:
    with _lock:
        changed = _logged_reasons.get(name) != reason
        _logged_reasons[name] = reason
    if changed:
        log.warning("not ready: %s: %s", name, reason)


def _ready(name: str) -> None:
    with _lock:
        was_failing = _logged_reasons.pop(name, None) is not None
    if was_failing:
        log.warning("ready again: %s", name)


def check(name: str, probe: Callable[[], object]) -> str:
    """Run ``probe`` here and now: "ok", or "error: <its exception's class>"."""
    try:
        probe()
    except Exception as error:
        _not_ready(name, (str(error).strip().splitlines() or [type(error).__name__])[0])
        return f"error: {type(error).__name__}"
    _ready(name)
    return "ok"


def _run(name: str, probe: Callable[[], object], future: Future[str]) -> None:
    try:
        future.set_result(check(name, probe))
    except BaseException as error:
        # never leave the future pending: every later /ready would wait on it
        future.set_exception(error)
        raise


def probe_once(name: str, probe: Callable[[], object]) -> Future[str]:
    """The result of ``check(name, probe)`` from the probe of ``name`` in flight, or from a new
    one on a thread of its own when none is."""
    with _lock:
        running = _in_flight.get(name)
        if running is not None and not running.done():
            return running
        future: Future[str] = Future()
        # Running from the start: a caller that gives up waiting cannot cancel it for the others.
        future.set_running_or_notify_cancel()
        _in_flight[name] = future
    threading.Thread(target=_run, args=(name, probe, future), name=f"ready-{name}", daemon=True).start()
    return future


def _probes() -> dict[str, Callable[[], object] | str]:
    """Each dependency's probe, or its answer when there is nothing to probe."""
    url = get_settings().broker_url
    return {
        # reachable and at this code's schema: an API started with --no-migrate on a database not
        # migrated yet (or rolled back to older code) answered every request 503 while "ready"
        "database": require_current_schema,
        "broker": (lambda: broker.ping(url, timeout=1.0)) if url else "error: TAGSMITH_BROKER_URL is not set",
        "storage": lambda: get_storage().check(),
    }


async def checks(timeout: float | None = None) -> dict[str, str]:
    """Each dependency's state, within ``timeout`` seconds (``READY_TIMEOUT_S``): "ok",
    "error: ..." naming why, or "error: no answer within N s" for a probe still running then."""
    limit = READY_TIMEOUT_S if timeout is None else timeout
    probes = _probes()
    waiting = {
        name: asyncio.wrap_future(probe_once(name, probe))
        for name, probe in probes.items()
        if not isinstance(probe, str)
    }
    if waiting:
        await asyncio.wait(waiting.values(), timeout=limit)
    answers: dict[str, str] = {}
    for name, probe in probes.items():
        answer = waiting.get(name)
        if answer is None:
            answers[name] = str(probe)
        elif answer.done():
            answers[name] = answer.result()
        else:
            reason = f"no answer within {limit:g} s"
            _not_ready(name, reason)
            answers[name] = f"error: {reason}"
    return answers
