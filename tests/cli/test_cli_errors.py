"""What the user sees when a command fails for a reason outside the code: one line
``error: ...`` on stderr and exit code 1, never a traceback (the console script's ``main``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from service.cli import app, client, commands, main
from service.settings import reset_settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in ("TAGSMITH_DATABASE_URL", "TAGSMITH_BROKER_URL", "TAGSMITH_STORAGE_URL", "TAGSMITH_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TAGSMITH_DATA_DIR", str(tmp_path / "data"))
    reset_settings()
    yield tmp_path / "data"
    reset_settings()


def _wire(monkeypatch: pytest.MonkeyPatch, answer: Callable[[httpx.Request], httpx.Response]) -> None:
    """The client commands talk to ``answer`` instead of a server."""
    api = client.Api("http://api", transport=httpx.MockTransport(answer))
    monkeypatch.setattr(commands, "_api", lambda ctx: api)


def _error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the command line, expect exit code 1 and one ``error:`` line; return that line."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: "), err
    return err.strip()


def test_a_2xx_answer_that_is_not_json_asks_whether_the_url_is_the_api(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = "<html><body>Welcome to nginx</body></html>"
    _wire(monkeypatch, lambda request: httpx.Response(200, text=page, headers={"content-type": "text/html"}))
    err = _error(capsys, "predict", "m1", "I love Berlin")
    assert "POST http://api/models/m1/predict answered 200 but not JSON" in err
    assert "is TAGSMITH_URL the Tagsmith API?" in err


def test_files_output_that_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _wire(monkeypatch, lambda request: httpx.Response(200, text="EPOCH\tLOSS\n"))
    err = _error(capsys, "files", "j1", "loss.tsv", "-o", str(tmp_path))
    assert err == f"error: {tmp_path}: Is a directory"
    missing = tmp_path / "missing" / "dir" / "x"
    assert _error(capsys, "files", "j1", "loss.tsv", "-o", str(missing)) == (
        f"error: {missing}: No such file or directory"
    )


def test_train_with_a_folder_or_a_spec_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _error(capsys, "--url", "http://127.0.0.1:9", "train", str(tmp_path)) == (
        f"error: cannot read spec file {tmp_path}: Is a directory"
    )
    latin1 = tmp_path / "spec.json"
    latin1.write_bytes('{"name": "café"}'.encode("latin-1"))
    err = _error(capsys, "--url", "http://127.0.0.1:9", "train", str(latin1))
    assert err.startswith(f"error: {latin1}: not UTF-8 text (byte 13)"), err


def test_arguments_that_are_not_utf8_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    # what Python makes of the bytes of $'caf\xe9' under a UTF-8 locale
    err = _error(capsys, "--url", "http://127.0.0.1:9", "predict", "m1", "caf\udce9")
    assert err.startswith("error: argument 'caf\\xe9' is not UTF-8"), err


def test_up_with_a_file_as_its_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    assert (
        _error(capsys, "up", "--data-dir", str(afile)) == f"error: --data-dir {afile} is a file, not a folder"
    )


def test_server_commands_before_migrate_say_so_and_leave_no_database_file(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It names the database: after a forgotten TAGSMITH_DATABASE_URL, `migrate` would make a new one.
    expected = (
        f"error: the database sqlite:///{data_dir.resolve() / 'tagsmith.db'} is not migrated: if it is the "
        "deployment's, run tagsmith migrate; otherwise set TAGSMITH_DATABASE_URL"
    )
    for command in (["create-key"], ["clean-storage", "--dry-run"]):
        assert _error(capsys, *command) == expected
    assert not (data_dir / "tagsmith.db").exists()
    # a database file without the schema (an interrupted first start) says the same
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "tagsmith.db").write_bytes(b"")
    assert _error(capsys, "create-key") == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://u:secret@127.0.0.1:1/x",
            "error: database postgresql+psycopg://u:***@127.0.0.1:1/x: connection failed",
        ),
        ("bogus://x", "error: TAGSMITH_DATABASE_URL is not a database URL this server can use"),
        ("nosuch", "error: TAGSMITH_DATABASE_URL is not a database URL this server can use"),
    ],
    ids=["refused", "unknown-scheme", "not-a-url"],
)
def test_a_database_that_cannot_be_used(
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    expected: str,
) -> None:
    monkeypatch.setenv("TAGSMITH_DATABASE_URL", url)
    reset_settings()
    err = _error(capsys, "create-key")
    assert err.startswith(expected), err
    assert "secret" not in err


def test_clean_storage_on_a_storage_path_that_cannot_exist(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["migrate"])
    capsys.readouterr()
    afile = data_dir / "afile"
    afile.write_text("x", encoding="utf-8")
    monkeypatch.setenv("TAGSMITH_STORAGE_URL", str(afile / "storage"))
    reset_settings()
    assert _error(capsys, "clean-storage") == f"error: storage {afile / 'storage'}: Not a directory"


@pytest.mark.parametrize("command", ["up", "api"])
def test_a_port_out_of_range_is_a_usage_error(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--port", "99999"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--port'" in result.output


def test_up_on_an_address_of_another_machine_reports_the_bind_error(tmp_path: Path) -> None:
    # a subprocess: `up` installs its own signal handlers
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSMITH_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tagsmith"), "up", "--host", "192.0.2.1", "--port", "8123"]
        + ["--no-open-mode", "--data-dir", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip() == "error: cannot listen on 192.0.2.1:8123: Cannot assign requested address"
    assert done.stdout == ""


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "gpu-box"])
def test_up_in_open_mode_refuses_an_address_other_machines_reach(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It listened on 0.0.0.0 and answered anyone without a key, while its banner said 127.0.0.1.
    folder = tmp_path / "data"
    error = _error(capsys, "up", "--host", host, "--port", "8123", "--data-dir", str(folder))
    assert error == (
        "error: open mode serves without API keys, so it listens on loopback only (127.0.0.1, ::1, "
        f"localhost), not on {host}; to serve other machines, turn it off (--no-open-mode) and give "
        "them keys (tagsmith create-key, or POST /keys with TAGSMITH_ADMIN_KEY)"
    )
    assert not folder.exists()  # refused before anything was made or started


def test_api_in_open_mode_refuses_an_address_other_machines_reach(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAGSMITH_OPEN_MODE", "true")
    reset_settings()
    error = _error(capsys, "api", "--host", "0.0.0.0", "--port", "8123")
    assert "listens on loopback only" in error and "turn it off (TAGSMITH_OPEN_MODE=false)" in error


def test_loopback_addresses() -> None:
    from service.auth import is_loopback

    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.0.0.1", "192.0.2.1", "fe80::1", "example.org", "128.0.0.1"):
        assert not is_loopback(host), host


def test_demo_refuses_zero_epochs_before_uploading(monkeypatch: pytest.MonkeyPatch) -> None:
    requests: list[httpx.Request] = []
    _wire(monkeypatch, lambda request: requests.append(request) or httpx.Response(500))
    result = CliRunner().invoke(app, ["demo", "--max-epochs", "0"])
    assert result.exit_code == 2 and "Invalid value for '--max-epochs'" in result.output, result.output
    assert requests == []  # no corpus was uploaded


def test_ids_and_file_names_are_one_path_segment_each(monkeypatch: pytest.MonkeyPatch) -> None:
    paths: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path)
        return httpx.Response(200, text="x\n", headers={"content-type": "text/plain"})

    _wire(monkeypatch, answer)
    for args in (["files", "j1", "../../corpora"], ["files", ".."], ["predict", "a/b?c", "hi"]):
        CliRunner().invoke(app, args)
    assert paths == [b"/jobs/j1/files/..%2F..%2Fcorpora", b"/jobs/%2E%2E/files", b"/models/a%2Fb%3Fc/predict"]


def test_a_url_without_http_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    for url in ("localhost:1", "ftp://x", "127.0.0.1"):
        assert _error(capsys, "--url", url, "predict", "m1", "hi") == (
            f"error: --url / TAGSMITH_URL '{url}' is not an API URL: it needs http:// or https://, "
            "e.g. http://127.0.0.1:8000"
        )


def test_upload_of_a_folder_and_import_of_nothing_say_what_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "http://127.0.0.1:9"
    assert _error(capsys, "--url", url, "upload", str(tmp_path)) == (
        f"error: train file {tmp_path} is a directory; give the corpus file itself"
    )
    missing = tmp_path / "nosuch"
    assert _error(capsys, "--url", url, "import-model", str(missing)) == f"error: {missing} does not exist"


@pytest.mark.parametrize(
    ("command", "variable", "value", "message"),
    [
        (
            "migrate",
            "MAX_UPLOAD_MB",
            "abc",
            "Input should be a valid number, unable to parse string as a number",
        ),
        ("migrate", "MAX_UPLOAD_MB", "inf", "Input should be a finite number"),
        ("migrate", "DEFAULT_QUEUE", "CPU", "Input should be 'cpu' or 'gpu'"),
        (
            "migrate",
            "BROKER_URL",
            "http://127.0.0.1:6379/9",
            "a Redis URL is needed (redis://, rediss://)",
        ),
        (
            "migrate",
            "BROKER_URL",
            "amqp://bob:hunter2@rabbit:5672//",
            "a Redis URL is needed (redis://, rediss://)",
        ),
        (
            "worker",
            "WORKER_CONCURRENCY",
            "x",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        ("up", "STORAGE_SWEEP_HOURS", "-1", "Input should be greater than or equal to 0"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    variable: str,
    value: str,
    message: str,
) -> None:
    # Each was a 45-57-line pydantic traceback; "CPU" and "inf" were accepted, then failed every job
    # ("queue unreachable (ValueError)") or every upload (int(inf)).
    from worker.settings import reset_worker_settings

    monkeypatch.setenv(f"TAGSMITH_{variable}", value)
    reset_settings()
    reset_worker_settings()
    try:
        shown = value.replace(":hunter2@", ":***@")  # a password is never printed
        assert _error(capsys, command) == f"error: TAGSMITH_{variable}: {message} (got {shown!r})"
    finally:
        monkeypatch.delenv(f"TAGSMITH_{variable}")
        reset_settings()
        reset_worker_settings()
    assert not (data_dir / "tagsmith.db").exists()  # nothing was started or migrated


def test_worker_queues_are_cpu_and_gpu(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = _error(capsys, "worker", "--queues", "cpu,CPU")
    assert error == "error: --queues takes cpu and/or gpu, comma-separated; got 'cpu,CPU'"


def test_a_worker_on_a_database_it_cannot_use_does_not_start(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said "ready", then took job messages and dropped them ("no such table: jobs").
    import sqlite3

    from alembic.script import ScriptDirectory

    from service.db.migrate import alembic_config, upgrade

    monkeypatch.setenv("TAGSMITH_BROKER_URL", "redis://127.0.0.1:6379/9")
    reset_settings()
    database = data_dir / "tagsmith.db"
    data_dir.mkdir(parents=True)
    database.write_bytes(b"")  # a database file without the schema
    url = f"sqlite:///{database.resolve()}"
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    not_migrated = (
        f"error: the database {url}: it is not migrated (schema none, this Tagsmith needs {head}): if it "
        "is the deployment's, run tagsmith migrate; otherwise set TAGSMITH_DATABASE_URL"
    )
    assert _error(capsys, "worker") == not_migrated
    # the API with migrations off said "ready" and answered every request 503
    assert _error(capsys, "api", "--no-migrate", "--port", "1") == not_migrated
    # migrated by a newer Tagsmith, then the code was rolled back: migrate and worker say so
    upgrade()
    with sqlite3.connect(database) as connection:
        connection.execute("update alembic_version set version_num = '0099'")
    newer = f"error: the database {url}: its schema (0099) is newer than this Tagsmith's ({head}): upgrade Tagsmith"
    assert _error(capsys, "worker") == newer
    assert _error(capsys, "migrate") == newer
    # the API printed Alembic's 100-line traceback from its startup
    assert _error(capsys, "api", "--port", "1") == newer
    assert _error(capsys, "api", "--no-migrate", "--port", "1") == newer


def test_up_with_an_unreachable_broker_says_so_before_starting_anything(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It started everything and waited out --ready-timeout (120 s) for /ready.
    import time

    monkeypatch.setenv("TAGSMITH_BROKER_URL", "redis://127.0.0.1:1/0")
    reset_settings()
    started = time.monotonic()
    error = _error(capsys, "up", "--port", "18931")
    assert error.startswith("error: TAGSMITH_BROKER_URL redis://127.0.0.1:1/0: ") and "refused" in error
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("soft", "hard", "warning"), [(100, 200, "may open only 200 files"), (100, 4096, None)]
)
def test_the_api_and_worker_raise_their_open_file_limit_and_warn_when_it_stays_low(
    data_dir: Path, soft: int, hard: int, warning: str | None
) -> None:
    # With `ulimit -n 64`, requests failed for want of file descriptors and read as a database outage.
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    result = subprocess.run(
        [sys.executable, "-c", "from service.cli import main; main()", "worker", "--queues", "none"],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        env={**os.environ, "TAGSMITH_DATA_DIR": str(data_dir)},
        timeout=120,
    )
    assert result.returncode == 1 and "--queues takes cpu" in result.stderr, result.stderr
    if warning is None:
        assert "warning" not in result.stderr
    else:
        assert warning in result.stderr
