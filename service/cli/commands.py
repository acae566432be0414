"""The ``tagsmith`` commands.

Server: ``up`` (the whole stack on one machine), ``api``, ``worker``, ``migrate``, ``create-key``,
``clean-storage``.
Client (HTTP, against ``--url`` / ``TAGSMITH_URL``): ``upload``, ``import-model``, ``train``, ``watch``,
``cancel``, ``files``, ``jobs``, ``models``, ``corpora``, ``predict``, ``evaluate``, ``demo``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.cli import client
from service.cli.errors import CliError
from service.cli.supervisor import StackOptions, open_mode_host_error, run_stack, worker_argv
from service.settings import redact

if TYPE_CHECKING:
    from service.auth import CreatedKey

app = typer.Typer(
    name="tagsmith",
    help="Train and serve NLP sequence taggers and text classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"
SAMPLE_NER = {split: SAMPLES_DIR / f"ner-{split}.conll" for split in ("train", "dev", "test")}
DEFAULT_PORT = 8000


def _out(message: str) -> None:
    typer.echo(message)


# -- server commands -------------------------------------------------------------------------------
@app.command()
def up(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for database, storage and broker. Default: TAGSMITH_DATA_DIR or .tagsmith"),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            envvar="TAGSMITH_HOST",
            help="Address the API listens on; in open mode only loopback (127.0.0.1, ::1, localhost).",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="TAGSMITH_PORT", min=0, max=65535, help="Port of the API.")
    ] = DEFAULT_PORT,
    open_mode: Annotated[
        bool,
        typer.Option(
            "--open-mode/--no-open-mode",
            help="Open single-user mode (no API key needed); --no-open-mode creates and prints a key.",
        ),
    ] = True,
    queues: Annotated[str, typer.Option(help="Queues the one worker consumes.")] = "cpu,gpu",
    worker_grace: Annotated[
        float, typer.Option(help="Seconds the worker gets to stop before it is killed.")
    ] = 10.0,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for the API to be ready.")] = 120.0,
) -> None:
    """Start everything on this machine: embedded Redis, migrations, the API and one worker.

    Ctrl-C (or SIGTERM) stops all of it; a job cut short resumes from its last checkpoint the
    next time a worker runs.
    """
    from service.settings import get_settings

    here = get_settings().data_dir
    options = StackOptions(
        data_dir=data_dir or here,
        host=host,
        port=port,
        open_mode=open_mode,
        queues=queues,
        worker_grace=worker_grace,
        ready_timeout=ready_timeout,
        pointer_dir=here,
    )
    raise typer.Exit(run_stack(options, _out, _local_owner_key))


# libuv (under uvloop) accepts every pending connection at once, so a burst of new keep-alive
# connections lands on whichever worker process wakes first and stays there; one accept per
# wake-up spreads them over the workers (bench/predict_http.py --workers 2, c=16, 7 runs each:
# 855-1,417 sentences/s without, 1,141-1,371 with).
MULTI_WORKER_ENV = {"UV_TCP_SINGLE_ACCEPT": "1"}


@app.command()
def api(
    host: Annotated[
        str,
        typer.Option(
            envvar="TAGSMITH_HOST", help="Address to listen on; with TAGSMITH_OPEN_MODE=true only loopback."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="TAGSMITH_PORT", min=0, max=65535, help="Port to listen on.")
    ] = DEFAULT_PORT,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
    migrate_first: Annotated[
        bool | None,
        typer.Option(
            "--migrate/--no-migrate",
            help="--migrate: bring the database schema up to date before the workers start; --no-migrate: "
            "never (a deployment that runs tagsmith migrate itself). Neither: the API does it as it starts "
            "(TAGSMITH_MIGRATE_ON_START).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the HTTP API (uvicorn service.app:app)."""
    import uvicorn

    _raise_open_file_limit()

    from service.settings import get_settings, reset_settings

    settings = get_settings()
    if settings.open_mode:
        refused = open_mode_host_error(host, "TAGSMITH_OPEN_MODE=false")
        if refused is not None:
            raise CliError(refused)
    from service.db.migrate import upgrade

    # Here, before uvicorn: a failure is one line (in the app's startup it was a 100-line
    # traceback), and the worker processes do not each migrate again.
    if settings.migrate_on_start if migrate_first is None else migrate_first:
        upgrade()
    else:
        problem = _schema_problem_if_reachable()
        if problem is not None:
            raise CliError(f"the database {redact(settings.resolved_database_url)}: {problem}")
    os.environ["TAGSMITH_MIGRATE_ON_START"] = "false"
    reset_settings()  # one worker runs in this process, which has read the settings already
    if workers > 1:
        for name, value in MULTI_WORKER_ENV.items():
            os.environ.setdefault(name, value)  # the worker processes inherit it
    uvicorn.run("service.app:app", host=host, port=port, workers=workers, proxy_headers=True)


# Below this many open files, a few hundred concurrent requests (a socket each, the database pool,
# model files) run out, and the failures read as a database outage.
MIN_OPEN_FILES = 1024


def _raise_open_file_limit() -> None:
    """Raise this process's open-file limit to its hard limit, and warn when that is still low."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass  # a hard limit above what the kernel allows (nr_open): keep the soft one
    if soft != resource.RLIM_INFINITY and soft < MIN_OPEN_FILES:
        typer.echo(
            f"warning: this process may open only {soft} files (ulimit -n; at least {MIN_OPEN_FILES} "
            "recommended): under load, requests will fail for want of them",
            err=True,
        )


def _schema_problem_if_reachable() -> str | None:
    """A database that does not answer yet is no reason not to start: the API answers 503 until
    it does. One that answers with the wrong schema is."""
    from sqlalchemy.exc import OperationalError

    from service.db.migrate import schema_problem

    try:
        return schema_problem()
    except OperationalError as e:
        typer.echo(f"warning: the database does not answer ({_first_line(e)}); starting anyway", err=True)
        return None


@app.command()
def worker(
    queues: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated queues (cpu, gpu). Default: cpu, plus gpu on a machine with CUDA."
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Training processes. Default: TAGSMITH_WORKER_CONCURRENCY.")
    ] = None,
    name: Annotated[str, typer.Option(help="Worker name; Celery appends @hostname.")] = "tagsmith",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
) -> None:
    """Run a Celery training worker (celery -A worker.celery_app worker)."""
    _raise_open_file_limit()  # Celery, exec'd below, keeps it
    from service.queue import QUEUES
    from service.settings import get_settings
    from worker.settings import get_worker_settings

    get_worker_settings()  # a bad TAGSMITH_* value is one error line here, not Celery's traceback
    if queues is not None:
        unknown = [q for q in queues.split(",") if q.strip() not in QUEUES]
        if unknown or not queues.strip():
            raise CliError(f"--queues takes {' and/or '.join(QUEUES)}, comma-separated; got {queues!r}")
    if not get_settings().broker_url:
        raise CliError(
            "TAGSMITH_BROKER_URL is not set: point it at the Redis the API uses "
            "(`tagsmith up` runs an embedded one together with its own worker)"
        )
    _require_database()
    # A worker on the wrong database took job messages and dropped them ("no such table: jobs").
    from service.db.migrate import schema_problem

    problem = schema_problem()
    if problem is not None:
        raise CliError(f"the database {redact(get_settings().resolved_database_url)}: {problem}")
    argv = worker_argv(queues, concurrency, name, loglevel)
    # Replace this process, so that a supervisor's signals (docker stop, systemd) reach Celery itself.
    os.execv(argv[0], argv)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (Alembic upgrade head)."""
    from service.db.migrate import upgrade
    from service.settings import get_settings

    upgrade()
    typer.echo(f"database schema is up to date ({redact(get_settings().resolved_database_url)})")


def _require_database() -> None:
    """A SQLite database that does not exist yet: say so before connecting, which would leave an
    empty file behind."""
    from service.settings import get_settings

    url = get_settings().resolved_database_url
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        raise CliError(_not_migrated(url))


def _create_key(owner_name: str | None, owner_id: str | None = None) -> CreatedKey:
    from service.auth import create_key as new_key
    from service.db.session import session_scope

    _require_database()
    try:
        with session_scope() as session:
            return new_key(session, owner_name=owner_name, owner_id=owner_id)
    except LookupError as exc:
        raise CliError(f"no owner with id {owner_id}") from exc


# The id of the key the last `up --no-open-mode` printed, in its data folder.
UP_KEY_FILE = "up-key-id"


def _local_owner_key() -> str:
    """A new key for the one local owner, the same owner open mode acts as: switching between
    open mode and keys keeps every corpus, job and model visible. The key the previous start
    printed is revoked: one valid key per data folder, not one more in a console log per start."""
    from service.auth import create_key as new_key
    from service.auth import ensure_open_mode_owner
    from service.auth import revoke_key as revoke
    from service.db.session import session_scope
    from service.settings import get_settings

    marker = get_settings().resolved_data_dir / UP_KEY_FILE
    previous = marker.read_text(encoding="utf-8").strip() if marker.is_file() else ""
    with session_scope() as session:
        if previous:
            revoke(session, previous)
        created = new_key(session, owner_id=ensure_open_mode_owner(session))
    marker.write_text(created.id, encoding="utf-8")
    return created.key


@app.command("create-key")
def create_key(
    name: Annotated[str, typer.Option(help="Name of the new owner the key belongs to.")] = "owner",
    owner_id: Annotated[
        str | None, typer.Option(help="Add the key to this existing owner instead of a new one.")
    ] = None,
) -> None:
    """Create an API key directly in the database (for a new owner, or --owner-id); prints it once."""
    created = _create_key(None if owner_id else name, owner_id)
    typer.echo(created.key)
    # on stderr, so that KEY=$(tagsmith create-key) still gets the key alone
    typer.echo(
        f"key {created.id} ({created.prefix}...) of owner {created.owner_id} ({created.owner_name}); "
        f"revoke it with tagsmith revoke-key {created.id}",
        err=True,
    )


@app.command("keys")
def keys(
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the API keys in the database: id, prefix, owner, created (never the keys themselves)."""
    from service.auth import list_keys
    from service.db.session import session_scope

    _require_database()
    with session_scope() as session:
        found = list_keys(session, include_revoked=revoked)
    if as_json:
        rows = [
            {
                "id": k.id,
                "prefix": k.prefix,
                "owner_id": k.owner_id,
                "owner_name": k.owner_name,
                "created_at": k.created_at.isoformat(),
                "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in found
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not found:
        typer.echo("no keys")
    for k in found:
        revoked_at = f"  revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else ""
        typer.echo(
            f"{k.id}  {k.prefix}...  {k.created_at:%Y-%m-%d %H:%M}  {k.owner_name} ({k.owner_id}){revoked_at}"
        )


@app.command("revoke-key")
def revoke_key(
    key: Annotated[
        str, typer.Argument(help="The key's id, its prefix as `tagsmith keys` lists it, or the key.")
    ],
) -> None:
    """Revoke an API key in the database; requests with it get 401 from then on."""
    from service.auth import find_key
    from service.auth import revoke_key as revoke
    from service.db.session import session_scope

    _require_database()
    with session_scope() as session:
        found = find_key(session, key)
        if len(found) > 1:
            raise CliError(f"{key} names {len(found)} keys: give the id ({', '.join(k.id for k in found)})")
        if not found:
            raise CliError(f"no active key {key} (tagsmith keys lists them)")
        revoke(session, found[0].id)
        typer.echo(f"revoked key {found[0].id} ({found[0].prefix}...)")


@app.command("clean-storage")
def clean_storage(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    min_age_minutes: Annotated[
        float,
        typer.Option(min=1, help="Keep anything written more recently than this (a write in progress)."),
    ] = 60,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also when the database points to none of the stored files (it is refused then: "
            "the database may be another deployment's).",
        ),
    ] = False,
) -> None:
    """Remove storage that no corpus, model or job points to: what a process killed between
    writing files and committing their row left behind, and stale temporary copies."""
    from service.logic.storage_sweep import ForeignStorage
    from service.logic.storage_sweep import clean_storage as sweep
    from service.settings import get_settings

    _require_database()
    try:
        found = sweep(min_age_minutes * 60, dry_run=dry_run, force=force)
    except ForeignStorage as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        # a local storage folder that cannot be made or read: name the setting behind it
        settings = get_settings()
        raise CliError(
            f"storage {settings.storage_url or settings.storage_root}: {exc.strerror or exc}"
        ) from exc
    for leftover in found:
        typer.echo(f"{leftover.key:<70} {leftover.bytes:>14,} bytes  {leftover.reason}")
    verb = "would free" if dry_run else "freed"
    typer.echo(f"{len(found)} leftover(s), {verb} {sum(f.bytes for f in found):,} bytes")


# -- client commands -------------------------------------------------------------------------------
@app.callback()
def _global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="TAGSMITH_URL",
            help="API URL for client commands. Default: the `tagsmith up` started from this folder "
            "(any --data-dir), else http://127.0.0.1:8000.",
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="TAGSMITH_API_KEY", help="API key (bearer token).")
    ] = None,
) -> None:
    ctx.obj = (url, api_key or None)


def _api(ctx: typer.Context) -> client.Api:
    url, api_key = ctx.obj if isinstance(ctx.obj, tuple) else (None, None)
    return client.Api(url=url or client.discover_url(), api_key=api_key)


def _reader_options(columns: str | None, options: str | None) -> dict[str, str]:
    """The ``options`` form field of POST /corpora: reader options, plus a column map from --columns."""
    try:
        merged = json.loads(options) if options else {}
    except json.JSONDecodeError as exc:
        raise CliError(f"--options: not valid JSON ({exc.msg})") from exc
    if not isinstance(merged, dict):
        raise CliError("--options: expected a JSON object")
    if columns:
        merged["column_map"] = client.parse_columns(columns)
    return {"options": json.dumps(merged)} if merged else {}


@app.command()
def upload(
    ctx: typer.Context,
    train: Annotated[Path, typer.Argument(help="Training file.")],
    dev: Annotated[Path | None, typer.Option(help="Development file.")] = None,
    test: Annotated[Path | None, typer.Option(help="Test file.")] = None,
    name: Annotated[str | None, typer.Option(help="Corpus name. Default: the train file's name.")] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="column, conllu, fasttext, trec, csv, tsv, jsonl or text (plain text for language models).",
        ),
    ] = "column",
    columns: Annotated[
        str | None,
        typer.Option(
            help="Column map of a column file, e.g. 0:text,1:pos,3:ner. Default: first and last column."
        ),
    ] = None,
    options: Annotated[
        str | None, typer.Option(help="Reader options as a JSON object (see the README's upload section).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")] = False,
) -> None:
    """Upload a corpus (POST /corpora); prints its id and statistics."""
    fields = _reader_options(columns, options)
    files = {"train": train, "dev": dev, "test": test}
    corpus = client.upload_corpus(_api(ctx), files, name or train.stem, fmt, fields)
    typer.echo(json.dumps(corpus, indent=2) if as_json else client.corpus_summary(corpus))


@app.command("import-model")
def import_model(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(help="A model folder that model.save() wrote, or a .tar.gz of one.")
    ],
    name: Annotated[
        str | None, typer.Option(help="Model name. Default: the folder's or archive's name.")
    ] = None,
) -> None:
    """Add a model trained elsewhere (POST /models) to serve it; prints its id."""
    typer.echo(client.model_summary(client.import_model(_api(ctx), path, name)))


@app.command()
def train(
    ctx: typer.Context,
    spec_file: Annotated[Path, typer.Argument(help="Training spec (JSON).")],
    corpus: Annotated[
        list[str] | None, typer.Option("--corpus", "-c", help="Corpus id; replaces the spec's corpus.ids.")
    ] = None,
    watch_job: Annotated[
        bool, typer.Option("--watch/--no-watch", help="Follow the job until it ends.")
    ] = True,
) -> None:
    """Submit a training job (POST /jobs) from a spec file, then follow it."""
    api_ = _api(ctx)
    job = _submit(api_, client.load_spec(spec_file, corpus or []))
    typer.echo(f"job {job['id']} {job.get('status', '')}")
    if watch_job:
        _exit_for(_follow(api_, str(job["id"])))


def _submit(api_: client.Api, spec: dict[str, Any]) -> dict[str, Any]:
    """POST /jobs, where Ctrl-C before the answer leaves no job id to show: the server may have
    queued the job all the same, which the user must hear, with where to look for it."""
    try:
        return dict(api_.call("POST", "/jobs", json=spec))
    except KeyboardInterrupt:
        typer.echo(
            "submit interrupted; the server may have queued the job anyway "
            "(tagsmith jobs to check, tagsmith cancel JOB to stop it)",
            err=True,
        )
        raise typer.Exit(130) from None


def _exit_for(job: dict[str, Any]) -> None:
    raise typer.Exit(0 if job.get("status") == "completed" else 1)


def _follow(api_: client.Api, job_id: str) -> dict[str, Any]:
    """follow_job, where Ctrl-C stops only the watching: the job runs on in the server, which
    the user must hear, with the ways back to it."""
    try:
        return client.follow_job(api_, job_id, write=typer.echo)
    except KeyboardInterrupt:
        typer.echo(
            f"stopped watching; job {job_id} keeps running "
            f"(tagsmith watch {job_id} to follow it, tagsmith cancel {job_id} to stop it)",
            err=True,
        )
        raise typer.Exit(130) from None


@app.command()
def watch(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Follow a job: a live progress bar and the losses and dev score of every epoch."""
    _exit_for(_follow(_api(ctx), job_id))


@app.command()
def cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Cancel a job (POST /jobs/{id}/cancel): a queued one ends at once, a running one at its
    next batch boundary; resume it later with POST /jobs/{id}/resume."""
    job = client.cancel_job(_api(ctx), job_id)
    typer.echo(client.cancel_summary(job))


@app.command()
def files(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    name: Annotated[str | None, typer.Argument(help="A file to fetch, e.g. training.log.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the file here instead of printing it.")
    ] = None,
) -> None:
    """A job's files (training.log, loss.tsv, weights.txt, weights.png, test.tsv): without NAME a
    list, with NAME the file."""
    api_ = _api(ctx)
    if name is None:
        for item in api_.call("GET", client.path("jobs", job_id, "files"))["items"]:
            typer.echo(f"{item['name']:<14} {item['size_bytes']:>12,} bytes")
        return
    response = api_.request("GET", client.path("jobs", job_id, "files", name))
    if output is not None:
        output.write_bytes(response.content)
        typer.echo(f"{name}: {len(response.content):,} bytes written to {output}")
    elif response.headers.get("content-type", "").startswith("text/"):
        typer.echo(response.text, nl=False)
    else:
        raise CliError(f"{name} is not text: write it to a file with --output")


Limit = Annotated[
    int | None, typer.Option(min=1, help="Show only the newest N. Default: all, a page at a time.")
]
ListJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer (all pages as one).")]


def _list(
    items: list[dict[str, Any]], as_json: bool, render: Callable[[list[dict[str, Any]]], str], none: str
) -> None:
    """A listing as a table, as the API's JSON (``{"items": [...]}``), or one line saying there is none."""
    if as_json:
        typer.echo(json.dumps({"items": items}, indent=2, ensure_ascii=False))
    elif items:
        typer.echo(render(items))
    else:
        typer.echo(none, err=True)


@app.command()
def jobs(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(help="Only jobs in this state: queued, running, completed, failed, cancelled."),
    ] = None,
    limit: Limit = None,
    as_json: ListJson = False,
) -> None:
    """Your jobs, newest first (GET /jobs): status, epoch and percent, best dev score."""
    params = {"status": status} if status else {}
    items = client.list_items(_api(ctx), "jobs", limit, params=params)
    none = f"no {status} jobs" if status else "no jobs yet; submit one with tagsmith train SPEC.json"
    _list(items, as_json, client.jobs_table, none)


@app.command()
def models(ctx: typer.Context, limit: Limit = None, as_json: ListJson = False) -> None:
    """Your models, newest first (GET /models): task and label type."""
    items = client.list_items(_api(ctx), "models", limit)
    none = "no models yet; train one with tagsmith train SPEC.json, or add one with tagsmith import-model"
    _list(items, as_json, client.models_table, none)


@app.command()
def corpora(ctx: typer.Context, limit: Limit = None, as_json: ListJson = False) -> None:
    """Your corpora, newest first (GET /corpora): format and sentences per split."""
    items = client.list_items(_api(ctx), "corpora", limit)
    _list(items, as_json, client.corpora_table, "no corpora yet; upload one with tagsmith upload TRAIN")


@app.command()
def predict(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="Model id.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to tag or classify.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the API's JSON answer (model_id, task, sentences ...).")
    ] = False,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="segtok (the default) or whitespace: split at whitespace only, for models trained on "
            "pre-tokenized text such as tweets (@user, URLs stay whole)."
        ),
    ] = None,
) -> None:
    """Tag or classify texts with a model (POST /models/{id}/predict)."""
    answer = client.predict_answer(_api(ctx), model_id, texts, tokenizer)
    if as_json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    for sentence in answer.get("sentences") or []:
        typer.echo(client.format_sentence(sentence))


@app.command()
def evaluate(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="Model id.")],
    corpus_id: Annotated[str, typer.Argument(help="Id of an uploaded corpus with gold labels.")],
    split: Annotated[str, typer.Option(help="train, dev or test.")] = "test",
    label_type: Annotated[
        str | None, typer.Option(help="The corpus's gold label type, when not named like the model's.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Score a model on a split of an uploaded corpus, per class too (POST /models/{id}/evaluate)."""
    result = client.evaluate(_api(ctx), model_id, corpus_id, split, label_type)
    typer.echo(json.dumps(result, indent=2) if as_json else client.format_evaluation(result))


DEMO_TEXTS = (
    "I love Berlin.",
    "Angela Merkel flew from Paris to Tokyo on Monday.",
    "Siemens opened a new office in Toronto.",
)


def demo_spec(corpus_id: str, max_epochs: int) -> dict[str, Any]:
    """A small GloVe + character BiLSTM-CRF tagger: well under a minute on a laptop CPU."""
    return {
        "name": "demo-ner",
        "task": "sequence_tagging",
        "corpus": {"ids": [corpus_id]},
        "label_type": "ner",
        "embeddings": [{"type": "word", "name": "glove"}, {"type": "character"}],
        "model": {"hidden_size": 64},
        # Adam rather than the tutorial's SGD: it learns the 150 sample sentences in a few epochs.
        "trainer": {
            "optimizer": "adam",
            "learning_rate": 0.01,
            "mini_batch_size": 8,
            "max_epochs": max_epochs,
        },
    }


@app.command()
def demo(
    ctx: typer.Context,
    max_epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 10,
) -> None:
    """Upload the bundled sample NER corpus, train a small tagger, follow it and tag a few sentences."""
    api_ = _api(ctx)
    typer.echo(f"uploading the sample corpus ({SAMPLES_DIR})")
    corpus = client.upload_corpus(api_, dict(SAMPLE_NER), "sample-ner", "column", _reader_options(None, None))
    typer.echo(client.corpus_summary(corpus))
    job = _submit(api_, demo_spec(str(corpus["id"]), max_epochs))
    typer.echo(f"training job {job['id']}")
    final = _follow(api_, str(job["id"]))
    if final.get("status") != "completed":
        raise typer.Exit(1)
    model_id = str(final["model_id"])
    typer.echo("")
    for sentence in client.predict(api_, model_id, DEMO_TEXTS):
        typer.echo(client.format_sentence(sentence))
    typer.echo(f'\nnext: tagsmith predict {model_id} "I love Berlin"')


def user_error(exc: BaseException) -> str | None:
    """The one-line message for a failure the user can act on (None: a bug, keep the traceback).

    The one place that turns the local failures every command can meet (files, the database,
    its settings) into messages, so that the commands need no try/except of their own."""
    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    setting = _settings_error(exc)
    if setting is not None:
        return setting
    if isinstance(exc, OSError) and exc.strerror:
        names = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
        return f"{' -> '.join(names)}: {exc.strerror}" if names else exc.strerror
    try:
        from sqlalchemy import exc as db
    except ImportError:  # pragma: no cover - a dependency of the server
        return None
    from alembic.util.exc import CommandError

    if isinstance(exc, CommandError) and "Can't locate revision" in str(exc):
        # the database was migrated by a newer Tagsmith (a rollback of the code)
        from service.db.migrate import schema_problem
        from service.settings import get_settings

        url = redact(get_settings().resolved_database_url)
        return f"the database {url}: {schema_problem() or _first_line(exc)}"
    if isinstance(exc, db.NoSuchModuleError | db.ArgumentError):
        return f"TAGSMITH_DATABASE_URL is not a database URL this server can use ({_first_line(exc)})"
    if isinstance(exc, db.DBAPIError):
        from service.settings import get_settings

        message = _first_line(exc.orig or exc)
        # SQLite says "no such table" / "no such column", PostgreSQL "relation ... does not exist"
        # / "column ... does not exist": a schema older than the code.
        if (
            "no such table" in message
            or "no such column" in message
            or (("relation" in message or "column" in message) and "does not exist" in message)
        ):
            return _not_migrated(get_settings().resolved_database_url)
        return f"database {redact(get_settings().resolved_database_url)}: {message}"
    return None


def _settings_error(exc: BaseException) -> str | None:
    """A ValidationError of the settings (environment variables) as one line naming the variable."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError) or exc.title not in ("Settings", "WorkerSettings"):
        return None
    lines = []
    for error in exc.errors(include_url=False):
        name = "TAGSMITH_" + "_".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        given = error["input"]
        if isinstance(given, str) and "://" in given:
            given = redact(given)  # a URL's password stays out of the console and its logs
        lines.append(f"{name}: {message} (got {given!r})")
    return "; ".join(lines)


def _not_migrated(url: str) -> str:
    # Naming the database shows a forgotten TAGSMITH_DATABASE_URL before `migrate` creates a new one.
    return (
        f"the database {redact(url)} is not migrated: if it is the deployment's, run tagsmith migrate; "
        "otherwise set TAGSMITH_DATABASE_URL"
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_arguments(argv: Sequence[str]) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates, which every later encode (an
    HTTP body, a database row) fails on: refuse them here, naming the argument."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise CliError(f"argument '{shown}' is not UTF-8; set a UTF-8 locale or convert it") from None


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: a user error prints one message and exits with 1."""
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        _check_arguments(args)
        app(args=args)
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise
        typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
        sys.exit(1)
