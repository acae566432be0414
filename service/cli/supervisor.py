"""Run the whole stack on one machine and stop all of it cleanly (``tagsmith up``).

Every child (the API, the worker) starts in a session of its own, so a stop can signal its whole
process group, Celery's pool processes included: SIGTERM, a grace period, then SIGKILL. The
embedded Redis daemonizes itself, so it is stopped through its handle and then checked by pid.
SIGINT, SIGTERM and SIGHUP only set an event; the main loop notices it and shuts down in order
(worker first, then the API, then Redis). A second signal skips the grace periods.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service import parent_watch
from service.auth import is_loopback
from service.cli.errors import CliError
from service.settings import redact

STATE_FILE = "up.json"
LOCK_FILE = "up.lock"
# Left by an ``up`` whose --data-dir is elsewhere, in the data folder client commands started
# where it was would read (.tagsmith/ or TAGSMITH_DATA_DIR), so that they find it all the same.
POINTER_FILE = "up-pointer.json"


@dataclass
class Child:
    """A child process in its own session, so that its whole process group can be signalled."""

    name: str
    argv: list[str]
    env: dict[str, str]
    grace_seconds: float
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise CliError(f"{self.name} was never started")
        return self.proc.pid

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, force: bool = False) -> None:
        """SIGTERM the group, wait up to the grace period, then SIGKILL whatever is left in it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            signal_group(self.proc.pid, signal.SIGKILL if force else signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.grace_seconds)
            except subprocess.TimeoutExpired:
                signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Pool processes (Celery's prefork children) may outlive their parent inside the group.
        signal_group(self.proc.pid, signal.SIGKILL)
        wait_group_gone(self.proc.pid, timeout=5.0)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no live (non-zombie) process is left in the group: SIGKILL is delivered
    asynchronously, so a member may still show as running right after killpg."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc.pid)
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Stopper:
    """Turns SIGINT/SIGTERM/SIGHUP into an event; a second signal asks for a forced stop."""

    event: threading.Event = field(default_factory=threading.Event)
    force: bool = False

    def install(self) -> None:
        # SIGHUP too: a closed terminal must not leave the children and Redis running.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.event.is_set():
            self.force = True
        self.event.set()


def bind_error(host: str, port: int) -> OSError | None:
    """Why the API could not listen on ``host:port`` (None: it can). The address family is the
    one uvicorn picks: IPv6 for an address with a colon, else IPv4."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            return error
    return None


def port_is_free(host: str, port: int) -> bool:
    return bind_error(host, port) is None


# Listening on these is listening on every interface of the machine.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def display_host(host: str) -> str:
    """The host of a URL that reaches an API listening on ``host`` from this machine."""
    if host in WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def listen_address(host: str, port: int) -> str:
    """``host:port`` as the API binds it, for people: ``0.0.0.0:8000``, ``[::1]:8000``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def open_mode_host_error(host: str, how_to_turn_off: str) -> str | None:
    """Why open mode may not listen on ``host`` (None: it may): it serves without keys, so only
    this machine may reach it."""
    if is_loopback(host):
        return None
    return (
        f"open mode serves without API keys, so it listens on loopback only (127.0.0.1, ::1, "
        f"localhost), not on {host}; to serve other machines, turn it off ({how_to_turn_off}) "
        "and give them keys (tagsmith create-key, or POST /keys with TAGSMITH_ADMIN_KEY)"
    )


def worker_argv(
    queues: str | None, concurrency: int | None, name: str, loglevel: str, standalone: bool = False
) -> list[str]:
    """``celery -A worker.celery_app worker`` with this interpreter; no ``-Q`` lets the worker pick.

    ``standalone``: the only worker (``tagsmith up``) skips the cluster chatter between workers
    (gossip, mingle, heartbeats), which only costs start-up time when there is nobody to talk to.
    """
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
    if queues:
        argv += ["-Q", queues]
    argv += ["-n", f"{name}@%h", "--loglevel", loglevel]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if standalone:
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return argv


def api_argv(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "service.app:app", "--host", host, "--port", str(port)]


def wait_ready(url: str, children: Sequence[Child], stopper: Stopper, timeout: float) -> None:
    """Poll ``/ready`` until it answers 200; fail early when a child dies or a stop is asked for."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            for child in children:
                code = child.exit_code()
                if code is not None:
                    raise CliError(
                        f"{child.name} exited with code {code} during start-up (see its log above)"
                    )
            try:
                response = client.get(f"{url}/ready")
                if response.status_code == 200:
                    return
                last_error = f"/ready answered {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last_error = str(exc) or type(exc).__name__
            if stopper.event.wait(0.3):
                raise CliError("interrupted during start-up")
    raise CliError(f"the API at {url} was not ready after {timeout:.0f} s ({last_error})")


@dataclass
class StackOptions:
    data_dir: Path
    host: str
    port: int
    open_mode: bool
    queues: str
    worker_grace: float
    ready_timeout: float
    # The data folder client commands here read without --data-dir (.tagsmith/ or
    # TAGSMITH_DATA_DIR): when it is not data_dir, a pointer there leads them to this stack.
    pointer_dir: Path | None = None


def run_stack(options: StackOptions, echo: Callable[[str], None], create_key: Callable[[], str]) -> int:
    """Start migrations, broker, API and worker; block until a signal or a child's death; stop all.

    Returns the exit code: 0 after a requested stop, 1 when something failed.
    """
    if options.open_mode:
        refused = open_mode_host_error(options.host, "--no-open-mode")
        if refused is not None:
            raise CliError(refused)
    folder = options.data_dir.expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--data-dir {folder} is a file, not a folder")
    stopper = Stopper()
    stopper.install()
    folder.mkdir(parents=True, exist_ok=True)
    lock = lock_data_folder(folder)
    try:
        return _run_locked(options, folder, stopper, echo, create_key)
    finally:
        os.close(lock)


def lock_data_folder(folder: Path) -> int:
    """Take the folder's exclusive lock for the life of this ``up``, or refuse at once.

    Two stacks on one folder would share its embedded Redis and its state file, and the second
    one's stop would take the first one's broker down with it. The lock is an open descriptor
    (not inherited by the children), so a killed ``up`` releases it with no stale file to clean.
    """
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode("ascii", "replace").strip()
        os.close(fd)
        raise CliError(running_stack_message(folder, holder)) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode("ascii"))
    return fd


def running_stack_message(folder: Path, holder: str) -> str:
    """Who holds the folder: pid and URL from its state file, else the pid it wrote into the lock
    (the state file only appears once its children have started)."""
    pid, url = holder or "?", "still starting"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        pid, url = str(state["pid"]), str(state["url"])
    return (
        f"tagsmith up is already running on {folder} (pid {pid}, {url}); "
        "stop it first, or give this one another --data-dir"
    )


# What each process of a stack runs, to tell it from an unrelated process that got its pid since.
_LEFTOVER_COMMANDS = {"api_pid": "uvicorn", "worker_pid": "celery", "redis_pid": "redis-server"}


def stop_leftovers(folder: Path, echo: Callable[[str], None], grace_seconds: float = 15.0) -> None:
    """Stop what an ``up`` that was killed (its lock is free, its state file is still there)
    left running on ``folder``: the children stop with it on their own, but its embedded Redis
    would otherwise keep the queue's file open beside the new one's."""
    state = _read_json(folder / STATE_FILE)
    if not isinstance(state, dict):
        return
    import psutil

    found: list[psutil.Process] = []
    for key, command in _LEFTOVER_COMMANDS.items():
        pid = state.get(key)
        if not isinstance(pid, int):
            continue
        with contextlib.suppress(psutil.Error, ValueError):
            process = psutil.Process(pid)
            if any(command in part for part in process.cmdline()):
                found.append(process)
    if found:
        names = ", ".join(f"{p.pid} ({p.name()})" for p in found)
        echo(f"stopping what a previous tagsmith up (pid {state.get('pid')}) left running: {names}")
        for process in found:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(found, timeout=grace_seconds)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
    (folder / STATE_FILE).unlink(missing_ok=True)


def _run_locked(
    options: StackOptions,
    folder: Path,
    stopper: Stopper,
    echo: Callable[[str], None],
    create_key: Callable[[], str],
) -> int:
    stop_leftovers(folder, echo)
    error = bind_error(options.host, options.port)
    if error is not None and error.errno == errno.EADDRINUSE:
        raise CliError(f"port {options.port} on {options.host} is in use; choose another with --port")
    if error is not None:
        # e.g. an address of another machine: "cannot assign requested address"
        raise CliError(f"cannot listen on {options.host}:{options.port}: {error.strerror or error}")

    # The children inherit this environment: one data folder, one mode, one broker for all.
    os.environ["TAGSMITH_DATA_DIR"] = str(folder)
    os.environ["TAGSMITH_OPEN_MODE"] = "true" if options.open_mode else "false"
    from service.db.migrate import upgrade
    from service.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    from worker.settings import get_worker_settings, reset_worker_settings

    reset_worker_settings()
    get_worker_settings()  # a bad TAGSMITH_* value of the worker stops `up` before anything starts
    echo(f"data folder  {folder}")
    upgrade()
    echo(f"database     {redact(settings.resolved_database_url)} (migrated)")
    from service.storage import get_storage

    created = ""
    if not settings.storage_url.startswith("s3://") and not settings.storage_root.exists():
        # said in this summary's column; made here, the storage's own warning (for a shared folder
        # that is not mounted) would break it with a line of its own
        created = " (created)" if not settings.storage_url else " (did not exist: created it)"
        try:
            settings.storage_root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CliError(f"storage {settings.storage_root} cannot be created: {error}") from error
    storage = get_storage()
    try:
        storage.check()
    except Exception as error:
        raise CliError(f"storage {storage.describe()} cannot be written: {error}") from error
    echo(f"storage      {storage.describe()}{created}")

    redis = None
    broker_url = settings.broker_url
    if broker_url:
        from service.broker import ping

        try:  # before anything starts: /ready would fail only after --ready-timeout
            ping(broker_url, timeout=3.0)
        except Exception as error:  # noqa: BLE001 - any failure: redis-py's, a refused connection
            raise CliError(f"TAGSMITH_BROKER_URL {redact(broker_url)}: {error}") from error
    else:
        from service.broker import start_embedded_redis

        redis = start_embedded_redis(folder)
        broker_url = redis.url
    echo(f"broker       {redact(broker_url)}" + (" (embedded Redis)" if redis is not None else ""))
    env = {**os.environ, "TAGSMITH_BROKER_URL": broker_url, parent_watch.ENV: str(os.getpid())}
    url = f"http://{display_host(options.host)}:{options.port}"
    api = Child("api", api_argv(options.host, options.port), env, grace_seconds=10.0)
    worker = Child(
        "worker",
        worker_argv(options.queues, 1, "local", "info", standalone=True),
        env,
        grace_seconds=options.worker_grace,
    )
    children = (api, worker)
    state_path = folder / STATE_FILE
    pointer: Path | None = None
    exit_code = 0
    try:
        if stopper.event.is_set():
            raise CliError("interrupted during start-up")
        for child in children:
            child.start()
        redis_pid = getattr(redis.server, "pid", None) if redis is not None else None
        state = {
            "url": url,
            "pid": os.getpid(),
            "api_pid": api.pid,
            "worker_pid": worker.pid,
            "redis_pid": redis_pid,
            "broker_url": broker_url,
            "open_mode": options.open_mode,
        }
        state_path.write_text(json.dumps(state, indent=2), encoding="utf-8")
        pointer = write_pointer(options.pointer_dir, folder)
        wait_ready(url, children, stopper, options.ready_timeout)
        echo(f"\nTagsmith is up:  API {url}   docs {url}/docs")
        if options.host in WILDCARD_HOSTS:
            echo(
                f"listening on {listen_address(options.host, options.port)}: every interface, "
                "other machines reach it at this machine's address"
            )
        if options.open_mode:
            echo("open single-user mode: no API key needed (--no-open-mode requires keys)")
        else:
            echo(f"API key of the local owner (shown once):\n  export TAGSMITH_API_KEY={create_key()}")
        echo("Press Ctrl-C to stop.\n")
        while not stopper.event.wait(0.5):
            for child in children:
                code = child.exit_code()
                if code is not None:
                    raise CliError(f"{child.name} exited unexpectedly with code {code}")
    except CliError as exc:
        echo(f"error: {exc}")
        exit_code = 1
    finally:
        echo("stopping ...")
        # The worker first: it may still report progress through the broker and the database.
        for child in (worker, api):
            child.stop(force=stopper.force)
        if redis is not None:
            stop_embedded_redis(redis)
        state_path.unlink(missing_ok=True)
        if pointer is not None:
            remove_pointer(pointer)
        echo("stopped")
    return exit_code


def write_pointer(pointer_dir: Path | None, folder: Path) -> Path | None:
    """Point client commands that read ``pointer_dir`` at the stack on ``folder`` (None: no
    pointer needed, or none could be written: it only saves them a --url)."""
    if pointer_dir is None:
        return None
    pointer_dir = pointer_dir.expanduser().resolve()
    if pointer_dir == folder:
        return None
    pointer = pointer_dir / POINTER_FILE
    try:
        pointer_dir.mkdir(parents=True, exist_ok=True)
        pointer.write_text(json.dumps({"data_dir": str(folder), "pid": os.getpid()}), encoding="utf-8")
    except OSError:
        return None
    return pointer


def remove_pointer(pointer: Path) -> None:
    """Remove this ``up``'s pointer, not one a later ``up`` started here has written since."""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        if json.loads(pointer.read_text(encoding="utf-8")).get("pid") == os.getpid():
            pointer.unlink()


def running_url(folder: Path) -> str | None:
    """The API URL of the ``tagsmith up`` that client commands reading ``folder`` mean: the one
    on that folder (its state file), else a live one started here with a --data-dir elsewhere
    (the pointer it left)."""
    state = _read_json(folder / STATE_FILE)
    if state is not None and isinstance(state.get("url"), str):
        return str(state["url"])
    pointer = _read_json(folder / POINTER_FILE)
    data_dir = None if pointer is None else pointer.get("data_dir")
    if not isinstance(data_dir, str):
        return None
    state = _read_json(Path(data_dir) / STATE_FILE)
    if state is None or not isinstance(state.get("url"), str):
        return None
    # A pointer left by a killed `up` (or one whose folder another `up` took since) leads nowhere.
    pid = state.get("pid")
    if pointer is None or pid != pointer.get("pid") or not isinstance(pid, int) or not pid_alive(pid):
        return None
    return str(state["url"])


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def stop_embedded_redis(redis: object) -> None:
    """Stop the daemonized redis-server through its handle; kill it by pid if that did not work."""
    pid = getattr(getattr(redis, "server", None), "pid", None)
    try:
        redis.stop()  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - the pid check below is the fallback
        print(f"embedded Redis did not shut down cleanly ({exc}); killing pid {pid}", file=sys.stderr)
    if pid and pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
