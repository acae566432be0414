"""The ``tagsmith`` command line.

Server commands run the pieces of the service: ``up`` (everything on one machine: an embedded
Redis, migrations, the API and one worker, each child in its own process group so that Ctrl-C
or SIGTERM stops all of them), ``api``, ``worker``, ``migrate`` and ``create-key``.
Client commands call a running API over HTTP: ``upload``, ``train``, ``watch``, ``predict`` and
``demo`` (the whole flow on the bundled sample corpus).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

app = typer.Typer(
    name="tagsmith",
    help="Train and serve NLP sequence taggers and text classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
SAMPLE_NER_DIR = SAMPLES_DIR / "ner"
STATE_FILE = "up.json"
DEFAULT_PORT = 8000
TERMINAL = frozenset({"completed", "failed", "cancelled"})


class CliError(Exception):
    """A failure the user can act on; printed without a traceback."""


# -- shared helpers --------------------------------------------------------------------------------
def _echo_err(message: str) -> None:
    typer.secho(message, err=True, fg=typer.colors.RED)


def _data_dir(data_dir: Path | None) -> Path:
    from service.settings import get_settings

    return (data_dir or get_settings().data_dir).expanduser().resolve()


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _default_queues() -> str:
    import torch

    return "gpu,cpu" if torch.cuda.is_available() else "cpu"


# -- supervising child processes (tagsmith up) -----------------------------------------------------
@dataclass
class Child:
    """A child process started in its own session, so its whole process group can be signalled."""

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

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, force: bool = False) -> None:
        """SIGTERM the group, wait up to the grace period, then SIGKILL whatever is left in it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGKILL if force else signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.grace_seconds)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Pool processes (Celery's prefork children) may outlive their parent inside the group.
        _signal_group(self.proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Stopper:
    """Turns SIGINT/SIGTERM into an event; a second signal asks for a forced stop."""

    event: threading.Event = field(default_factory=threading.Event)
    force: bool = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.event.is_set():
            self.force = True
        self.event.set()


def _wait_ready(url: str, children: Sequence[Child], stopper: Stopper, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            for child in children:
                code = child.exited()
                if code is not None:
                    raise CliError(f"{child.name} exited with code {code} during start-up")
            try:
                response = client.get(f"{url}/ready")
                if response.status_code == 200:
                    return
                last_error = f"/ready answered {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last_error = str(exc)
            if stopper.event.wait(0.3):
                raise CliError("interrupted during start-up")
    raise CliError(f"the API at {url} was not ready after {timeout:.0f} s ({last_error})")


def _worker_argv(queues: str, concurrency: int | None, name: str, loglevel: str) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues]
    argv += ["-n", f"{name}@%h", "--loglevel", loglevel]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    return argv


@app.command()
def up(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the database, storage and broker (TAGSMITH_DATA_DIR; default .tagsmith)."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(envvar="TAGSMITH_HOST", help="Address the API listens on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TAGSMITH_PORT", help="Port of the API.")] = DEFAULT_PORT,
    open_mode: Annotated[
        bool,
        typer.Option(
            "--open-mode/--no-open-mode",
            help="Single-user mode: requests need no API key. With --no-open-mode an API key is created and printed.",
        ),
    ] = True,
    queues: Annotated[str, typer.Option(help="Queues the worker consumes.")] = "cpu,gpu",
    worker_grace: Annotated[
        float, typer.Option(help="Seconds a worker may finish its batch on shutdown before it is killed.")
    ] = 10.0,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the API to become ready.")
    ] = 120.0,
) -> None:
    """Start everything on this machine: embedded Redis, migrations, the API and one worker.

    Ctrl-C (or SIGTERM) stops all of it. A job interrupted that way resumes from its last
    checkpoint the next time a worker runs.
    """
    stopper = Stopper()
    stopper.install()
    folder = _data_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not _port_is_free(host, port):
        raise CliError(f"port {port} on {host} is in use; choose another with --port (or TAGSMITH_PORT)")

    # The children inherit this environment, so they all see the same data folder and mode.
    os.environ["TAGSMITH_DATA_DIR"] = str(folder)
    os.environ["TAGSMITH_OPEN_MODE"] = "true" if open_mode else "false"
    from service.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()

    typer.echo(f"data folder   {folder}")
    from service.db.migrate import upgrade

    upgrade()
    typer.echo("database      migrated (" + _redact(settings.resolved_database_url) + ")")

    redis_server = None
    if settings.broker_url:
        broker_url = settings.broker_url
    else:
        from service.broker import start_embedded_redis

        redis_server = start_embedded_redis(folder)
        broker_url = redis_server.url
    env = {**os.environ, "TAGSMITH_BROKER_URL": broker_url}
    typer.echo(f"broker        {_redact(broker_url)}" + (" (embedded Redis)" if redis_server else ""))

    url = f"http://{_display_host(host)}:{port}"
    api_child = Child(
        "api",
        [sys.executable, "-m", "uvicorn", "service.app:app", "--host", host, "--port", str(port)],
        env,
        grace_seconds=10.0,
    )
    worker_child = Child("worker", _worker_argv(queues, 1, "local", "info"), env, grace_seconds=worker_grace)
    children = [api_child, worker_child]
    state_path = folder / STATE_FILE
    exit_code = 0
    try:
        if stopper.event.is_set():
            raise CliError("interrupted during start-up")
        for child in children:
            child.start()
        state = {
            "url": url,
            "pid": os.getpid(),
            "api_pid": api_child.pid,
            "worker_pid": worker_child.pid,
            "redis_pid": getattr(getattr(redis_server, "server", None), "pid", None),
            "broker_url": broker_url,
            "open_mode": open_mode,
        }
        state_path.write_text(json.dumps(state, indent=2), encoding="utf-8")
        _wait_ready(url, children, stopper, ready_timeout)
        typer.secho(f"\nTagsmith is up: API {url}   docs {url}/docs", fg=typer.colors.GREEN, bold=True)
        if open_mode:
            typer.echo("open single-user mode: no API key needed (use --no-open-mode to require keys)")
        else:
            key = _create_key("local")
            typer.echo(f"API key (shown once): {key}\n  export TAGSMITH_API_KEY={key}")
        typer.echo("Press Ctrl-C to stop.\n")
        while not stopper.event.wait(0.5):
            for child in children:
                code = child.exited()
                if code is not None:
                    raise CliError(f"{child.name} exited unexpectedly with code {code}")
    except CliError as exc:
        _echo_err(str(exc))
        exit_code = 1
    finally:
        typer.echo("stopping ...")
        # Worker first: it may be writing a checkpoint or progress through the broker and database.
        for child in (worker_child, api_child):
            child.stop(force=stopper.force)
        if redis_server is not None:
            redis_pid = redis_server.server.pid  # type: ignore[attr-defined]
            redis_server.stop()
            if redis_pid and _pid_alive(redis_pid):
                os.kill(redis_pid, signal.SIGKILL)
        state_path.unlink(missing_ok=True)
        typer.echo("stopped")
    raise typer.Exit(exit_code)


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, location = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{location}" if ":" in credentials else url


@app.command()
def api(
    host: Annotated[str, typer.Option(envvar="TAGSMITH_HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TAGSMITH_PORT", help="Port to listen on.")] = DEFAULT_PORT,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
    migrate_first: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Bring the database schema up to date first.")
    ] = False,
) -> None:
    """Run the HTTP API (uvicorn service.app:app)."""
    import uvicorn

    if migrate_first:
        from service.db.migrate import upgrade

        upgrade()
    uvicorn.run("service.app:app", host=host, port=port, workers=workers, proxy_headers=True)


@app.command()
def worker(
    queues: Annotated[
        str | None,
        typer.Option(help="Comma-separated queues (cpu, gpu). Default: gpu,cpu with CUDA, else cpu."),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Training processes (default TAGSMITH_WORKER_CONCURRENCY).")
    ] = None,
    name: Annotated[str, typer.Option(help="Worker name; the host name is appended.")] = "tagsmith",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
) -> None:
    """Run a Celery training worker (celery -A worker.celery_app worker)."""
    from service.settings import get_settings

    if not get_settings().broker_url:
        raise CliError(
            "TAGSMITH_BROKER_URL is not set: point it at the Redis the API uses "
            "(`tagsmith up` starts an embedded one with its own worker)"
        )
    argv = _worker_argv(queues or _default_queues(), concurrency, name, loglevel)
    # Replace this process so that signals from a supervisor (docker, systemd) reach Celery directly.
    os.execv(argv[0], argv)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (Alembic upgrade head)."""
    from service.db.migrate import upgrade
    from service.settings import get_settings

    upgrade()
    typer.echo(f"database schema is up to date ({_redact(get_settings().resolved_database_url)})")


def _create_key(owner: str) -> str:
    from service.auth import create_api_key

    return create_api_key(owner)


@app.command("create-key")
def create_key(
    owner: Annotated[
        str, typer.Option(help="Owner name; a new owner is created when none has this name.")
    ] = "default",
) -> None:
    """Create an API key for an owner, directly in the database; prints the key once."""
    typer.echo(_create_key(owner))


# -- HTTP client -----------------------------------------------------------------------------------
def _discover_url() -> str:
    """The URL of a `tagsmith up` in this folder's data directory, else the default port."""
    from service.settings import get_settings

    state = get_settings().resolved_data_dir / STATE_FILE
    if state.is_file():
        try:
            return str(json.loads(state.read_text(encoding="utf-8"))["url"])
        except (ValueError, KeyError):
            pass
    return f"http://127.0.0.1:{DEFAULT_PORT}"


@dataclass
class Api:
    url: str
    api_key: str | None
    timeout: float = 60.0

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url.rstrip("/"), headers=headers, timeout=self.timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        with self.client() as client:
            try:
                response = client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise CliError(
                    f"cannot reach the API at {self.url} ({exc}); start it with ./scripts/run or set TAGSMITH_URL"
                ) from exc
        return _decode(response)


def _decode(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise CliError(_problem_message(response))
    if not response.content:
        return None
    return response.json()


def _problem_message(response: httpx.Response) -> str:
    request = response.request
    head = f"{request.method} {request.url.path} -> {response.status_code}"
    try:
        problem = response.json()
    except ValueError:
        return f"{head}: {response.text[:500]}"
    if not isinstance(problem, dict):
        return f"{head}: {problem}"
    parts = [str(problem.get("title") or ""), str(problem.get("detail") or "")]
    lines = [f"{head}: " + " - ".join(p for p in parts if p)]
    for error in problem.get("errors") or []:
        if isinstance(error, dict):
            where = error.get("loc") or error.get("field") or error.get("pointer") or ""
            if isinstance(where, list):
                where = ".".join(str(x) for x in where)
            lines.append(f"  {where}: {error.get('msg') or error.get('message') or error}")
        else:
            lines.append(f"  {error}")
    return "\n".join(lines)


def _api(ctx: typer.Context) -> Api:
    obj = ctx.obj
    if not isinstance(obj, Api):
        raise CliError("internal: no API client configured")
    return obj


@app.callback()
def _main(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="TAGSMITH_URL", help="API base URL for client commands (default: the local `up`)."
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="TAGSMITH_API_KEY", help="API key for client commands.")
    ] = None,
) -> None:
    ctx.obj = Api(url=url or _discover_url(), api_key=api_key or None)


def _parse_columns(columns: str) -> dict[str, str]:
    """``0:text,1:ner`` -> ``{"0": "text", "1": "ner"}``."""
    mapping: dict[str, str] = {}
    for part in columns.split(","):
        index, sep, name = part.partition(":")
        if not sep or not index.strip().isdigit() or not name.strip():
            raise CliError(f"--columns: expected INDEX:NAME pairs like 0:text,1:ner, got {part!r}")
        mapping[index.strip()] = name.strip()
    return mapping


def upload_corpus(
    api_: Api,
    train: Path,
    dev: Path | None,
    test: Path | None,
    name: str,
    fmt: str,
    columns: str | None,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    data: dict[str, str] = {"name": name, "format": fmt}
    if columns:
        data["columns"] = json.dumps(_parse_columns(columns))
    data.update(extra or {})
    files: list[tuple[str, tuple[str, bytes]]] = []
    for split, path in (("train", train), ("dev", dev), ("test", test)):
        if path is None:
            continue
        if not path.is_file():
            raise CliError(f"{split} file not found: {path}")
        files.append((split, (path.name, path.read_bytes())))
    return dict(api_.call("POST", "/corpora", data=data, files=files))


def _print_corpus(corpus: dict[str, Any]) -> None:
    typer.echo(f"corpus {corpus['id']}  {corpus.get('name', '')}")
    stats = corpus.get("statistics") or {}
    for split, values in stats.items() if isinstance(stats, dict) else []:
        if isinstance(values, dict) and "sentences" in values:
            typer.echo(f"  {split:<6} {values.get('sentences')} sentences, {values.get('tokens')} tokens")
    label_types = corpus.get("label_types")
    if label_types:
        typer.echo(f"  label types: {json.dumps(label_types)}")


@app.command()
def upload(
    ctx: typer.Context,
    train: Annotated[Path, typer.Argument(help="Training file.")],
    dev: Annotated[Path | None, typer.Option(help="Development file.")] = None,
    test: Annotated[Path | None, typer.Option(help="Test file.")] = None,
    name: Annotated[str | None, typer.Option(help="Corpus name (default: the train file's folder).")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="column, conllu, fasttext, csv, tsv, jsonl or trec.")
    ] = "column",
    columns: Annotated[
        str | None, typer.Option(help="Column map for column files, e.g. 0:text,1:ner.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Extra form field NAME=VALUE (e.g. text_column=text)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")] = False,
) -> None:
    """Upload a corpus (POST /corpora); prints its id and statistics."""
    extra: dict[str, str] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--option: expected NAME=VALUE, got {item!r}")
        extra[key] = value
    if fmt == "column" and columns is None:
        columns = "0:text,1:ner"
    corpus = upload_corpus(
        _api(ctx),
        train,
        dev,
        test,
        name or train.resolve().parent.name,
        fmt,
        columns if fmt == "column" else None,
        extra,
    )
    if as_json:
        typer.echo(json.dumps(corpus, indent=2))
    else:
        _print_corpus(corpus)


def load_spec(path: Path, corpus_ids: Sequence[str]) -> dict[str, Any]:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CliError(f"spec file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(spec, dict):
        raise CliError(f"{path}: a spec is a JSON object")
    if corpus_ids:
        corpus = spec.setdefault("corpus", {})
        if not isinstance(corpus, dict):
            raise CliError(f"{path}: 'corpus' must be an object")
        corpus["ids"] = list(corpus_ids)
    return spec


@app.command()
def train(
    ctx: typer.Context,
    spec_file: Annotated[Path, typer.Argument(help="Training spec (JSON).")],
    corpus: Annotated[
        list[str] | None,
        typer.Option("--corpus", "-c", help="Corpus id(s), replacing the spec's corpus.ids."),
    ] = None,
    watch_job: Annotated[
        bool, typer.Option("--watch/--no-watch", help="Follow the job until it ends.")
    ] = True,
) -> None:
    """Submit a training job (POST /jobs) from a spec file."""
    api_ = _api(ctx)
    job = api_.call("POST", "/jobs", json=load_spec(spec_file, corpus or []))
    typer.echo(f"job {job['id']} {job.get('status', '')}")
    if watch_job:
        final = follow_job(api_, str(job["id"]))
        raise typer.Exit(0 if final.get("status") == "completed" else 1)


def _epoch_line(row: dict[str, Any]) -> str:
    parts = [f"epoch {row.get('epoch')}"]
    for key in ("train_loss", "dev_loss", "dev_main_score", "learning_rate"):
        value = row.get(key)
        if isinstance(value, int | float):
            parts.append(f"{key} {value:.4g}")
    if row.get("is_best"):
        parts.append("(best)")
    return "  ".join(parts)


def _epoch_rows(metrics: Any) -> list[dict[str, Any]]:
    if isinstance(metrics, dict):
        rows = metrics.get("epochs") or []
    else:
        rows = metrics or []
    return [r for r in rows if isinstance(r, dict)]


def follow_job(api_: Api, job_id: str, poll_seconds: float = 0.5, show: bool = True) -> dict[str, Any]:
    """Poll GET /jobs/{id} with a progress bar and print each epoch's losses; returns the final job."""
    from tqdm import tqdm

    printed_epochs: set[int] = set()
    bar = tqdm(
        total=100.0,
        unit="%",
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}% [{elapsed}<{remaining}{postfix}]",
        disable=not show,
        dynamic_ncols=True,
    )
    job: dict[str, Any] = {}
    try:
        while True:
            job = dict(api_.call("GET", f"/jobs/{job_id}"))
            epoch, max_epochs = job.get("epoch") or 0, job.get("max_epochs") or "?"
            bar.set_description(f"{job.get('status')} epoch {epoch}/{max_epochs}")
            postfix = {}
            if isinstance(job.get("train_loss"), int | float):
                postfix["loss"] = f"{job['train_loss']:.4f}"
            if isinstance(job.get("learning_rate"), int | float):
                postfix["lr"] = f"{job['learning_rate']:.3g}"
            bar.set_postfix(postfix, refresh=False)
            percent = float(job.get("percent") or 0.0)
            bar.update(max(0.0, min(100.0, percent)) - bar.n)
            finished_epochs = epoch if job.get("status") in TERMINAL else epoch - 1
            if show and finished_epochs > len(printed_epochs):
                for row in _epoch_rows(api_.call("GET", f"/jobs/{job_id}/metrics")):
                    number = int(row.get("epoch") or 0)
                    if number and number not in printed_epochs:
                        printed_epochs.add(number)
                        bar.write(_epoch_line(row))
            if job.get("status") in TERMINAL:
                break
            time.sleep(poll_seconds)
    finally:
        bar.close()
    if show:
        status = job.get("status")
        if status == "completed":
            typer.secho(f"job {job_id} completed: model {job.get('model_id')}", fg=typer.colors.GREEN)
        elif status == "failed":
            _echo_err(f"job {job_id} failed: {job.get('error')}")
        else:
            typer.echo(f"job {job_id} {status}")
    return job


@app.command()
def watch(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Follow a job: a live progress bar and the losses of every epoch."""
    final = follow_job(_api(ctx), job_id)
    raise typer.Exit(0 if final.get("status") == "completed" else 1)


def format_prediction(sentence: dict[str, Any]) -> str:
    """One predicted sentence as ``token/TAG`` text plus its spans or its labels."""
    tokens = sentence.get("tokens") or []
    words = []
    for token in tokens:
        tag = token.get("tag") or token.get("label") or token.get("value")
        words.append(f"{token.get('text')}/{tag}" if tag and tag != "O" else str(token.get("text")))
    lines = [" ".join(words)] if words else [str(sentence.get("text", ""))]
    for span in sentence.get("spans") or []:
        lines.append(
            f"    {span.get('label')}: {span.get('text')!r} ({float(span.get('confidence', 0.0)):.2f})"
        )
    for label in sentence.get("labels") or []:
        score = label.get("score", label.get("confidence", 0.0))
        lines.append(f"    {label.get('value', label.get('label'))} ({float(score):.2f})")
    return "\n".join(lines)


def predict_texts(api_: Api, model_id: str, texts: Sequence[str]) -> list[dict[str, Any]]:
    answer = api_.call("POST", f"/models/{model_id}/predict", json={"texts": list(texts)})
    if isinstance(answer, dict):
        return list(answer.get("results") or answer.get("sentences") or answer.get("predictions") or [])
    return list(answer)


def _iter_sentences(results: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for result in results:
        nested = result.get("sentences") if isinstance(result, dict) else None
        if isinstance(nested, list):
            yield from nested
        else:
            yield result


@app.command()
def predict(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="Model id.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to tag or classify.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")] = False,
) -> None:
    """Tag or classify texts with a model (POST /models/{id}/predict)."""
    results = predict_texts(_api(ctx), model_id, texts)
    if as_json:
        typer.echo(json.dumps(results, indent=2, ensure_ascii=False))
        return
    for sentence in _iter_sentences(results):
        typer.echo(format_prediction(sentence))


DEMO_TEXTS = (
    "I love Berlin .",
    "Angela Merkel flew from Paris to Tokyo on Monday .",
    "Siemens opened a new office in Toronto .",
)


def demo_spec(corpus_id: str, max_epochs: int) -> dict[str, Any]:
    """A small GloVe + character BiLSTM-CRF tagger that trains in about a minute on a CPU."""
    return {
        "name": "demo-ner",
        "task": "sequence_tagging",
        "corpus": {"ids": [corpus_id]},
        "label_type": "ner",
        "embeddings": [{"type": "word", "name": "glove"}, {"type": "character"}],
        "model": {"hidden_size": 64},
        "trainer": {"learning_rate": 0.1, "mini_batch_size": 8, "max_epochs": max_epochs},
    }


@app.command()
def demo(
    ctx: typer.Context,
    max_epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
) -> None:
    """Upload the bundled sample NER corpus, train a small tagger, watch it and tag a few sentences."""
    api_ = _api(ctx)
    typer.echo(f"uploading the sample corpus from {SAMPLE_NER_DIR}")
    corpus = upload_corpus(
        api_,
        SAMPLE_NER_DIR / "train.conll",
        SAMPLE_NER_DIR / "dev.conll",
        SAMPLE_NER_DIR / "test.conll",
        "sample-ner",
        "column",
        "0:text,1:ner",
    )
    _print_corpus(corpus)
    job = api_.call("POST", "/jobs", json=demo_spec(str(corpus["id"]), max_epochs))
    typer.echo(f"training job {job['id']}")
    final = follow_job(api_, str(job["id"]))
    if final.get("status") != "completed":
        raise typer.Exit(1)
    model_id = str(final["model_id"])
    typer.echo("")
    for sentence in _iter_sentences(predict_texts(api_, model_id, DEMO_TEXTS)):
        typer.echo(format_prediction(sentence))
    typer.echo(f'\ntry: tagsmith predict {model_id} "I love Berlin"')


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point; user errors print one line and exit 1."""
    try:
        app(args=list(argv) if argv is not None else None, standalone_mode=True)
    except CliError as exc:
        _echo_err(f"error: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
