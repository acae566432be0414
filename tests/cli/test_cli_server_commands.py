"""`tagsmith migrate` and `tagsmith create-key` on a fresh SQLite data folder, the supervisor's
helpers, and `tagsmith worker` refusing to start without a broker."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from service.auth import OPEN_MODE_OWNER_ID, owner_for_key
from service.cli import app
from service.cli.commands import _local_owner_key
from service.cli.errors import CliError
from service.cli.supervisor import Child, port_is_free, worker_argv
from service.db.session import session_scope
from service.settings import redact, reset_settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in ("TAGSMITH_DATABASE_URL", "TAGSMITH_BROKER_URL", "TAGSMITH_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TAGSMITH_DATA_DIR", str(tmp_path))
    reset_settings()
    yield tmp_path
    reset_settings()


def test_migrate_then_create_keys(data_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert "schema is up to date" in result.output and (data_dir / "tagsmith.db").is_file()

    result = runner.invoke(app, ["create-key", "--name", "alice"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()  # the key alone: KEY=$(tagsmith create-key)
    assert key.startswith("tsk_")
    with session_scope() as session:
        alice = owner_for_key(session, key)
    assert alice is not None
    assert f"({key[:10]}...) of owner {alice} (alice); revoke it with tagsmith revoke-key " in result.stderr

    second = runner.invoke(app, ["create-key", "--owner-id", alice]).stdout.strip()
    with session_scope() as session:
        assert owner_for_key(session, second) == alice

    with pytest.raises(CliError, match="no owner with id nobody"):
        runner.invoke(app, ["create-key", "--owner-id", "nobody"], catch_exceptions=False)

    # `up --no-open-mode` keys belong to the owner open mode acts as; each start revokes the last one's.
    first_up, second_up = _local_owner_key(), _local_owner_key()
    with session_scope() as session:
        assert owner_for_key(session, first_up) is None
        assert owner_for_key(session, second_up) == OPEN_MODE_OWNER_ID

    # An operator lists the keys and revokes one by its prefix, or a leaked key by itself.
    listed = runner.invoke(app, ["keys"]).stdout.splitlines()
    assert len(listed) == 3 and all("tsk_" in line and "..." in line for line in listed)
    assert key not in "\n".join(listed) and key[:10] in listed[0] and "alice" in listed[0]
    revoked = runner.invoke(app, ["revoke-key", key[:10]])
    assert revoked.exit_code == 0 and revoked.stdout.startswith("revoked key ")
    runner.invoke(app, ["revoke-key", second], catch_exceptions=False)
    with session_scope() as session:
        assert owner_for_key(session, key) is None and owner_for_key(session, second) is None
    with pytest.raises(CliError, match="no active key"):
        runner.invoke(app, ["revoke-key", key[:10]], catch_exceptions=False)
    assert len(runner.invoke(app, ["keys", "--revoked"]).stdout.splitlines()) == 4


def test_worker_without_a_broker_says_what_to_do(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["worker"], catch_exceptions=True)
    assert result.exit_code != 0
    assert "TAGSMITH_BROKER_URL is not set" in str(result.exception)


def test_worker_argv_leaves_queue_choice_to_the_worker_unless_given() -> None:
    assert "-Q" not in worker_argv(None, None, "tagsmith", "info")
    argv = worker_argv("gpu,cpu", 2, "w", "debug")
    assert argv[:6] == [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
    assert argv[argv.index("-Q") + 1] == "gpu,cpu" and argv[argv.index("--concurrency") + 1] == "2"


def test_redact_hides_passwords_only() -> None:
    assert redact("postgresql+psycopg://u:secret@db:5432/x") == "postgresql+psycopg://u:***@db:5432/x"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_port_is_free() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free("127.0.0.1", sock.getsockname()[1])


def test_child_stop_kills_the_whole_process_group_after_the_grace_period() -> None:
    # A parent that ignores SIGTERM, with a grandchild in its group: both must be gone after stop().
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = Child("stubborn", [sys.executable, "-c", script], env={}, grace_seconds=0.5)
    child.proc = subprocess.Popen(child.argv, stdout=subprocess.PIPE, start_new_session=True)
    assert child.proc.stdout is not None and child.proc.stdout.readline().strip() == b"ready"
    family = [child.pid, *(p.pid for p in psutil.Process(child.pid).children(recursive=True))]
    assert len(family) == 2
    child.stop()
    assert child.proc.returncode == -signal.SIGKILL
    for pid in family:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_api_with_several_workers_serves_and_spreads_connections(data_dir: Path) -> None:
    import httpx

    from service.cli.commands import MULTI_WORKER_ENV

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tagsmith = str(Path(sys.executable).parent / "tagsmith")
    process = subprocess.Popen(
        [tagsmith, "api", "--port", str(port), "--workers", "2", "--migrate"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "tagsmith api --workers 2 did not come up"
            time.sleep(0.3)
        workers = [
            p
            for p in psutil.Process(process.pid).children(recursive=True)
            if "spawn" in " ".join(p.cmdline())
        ]
        assert len(workers) == 2
        for worker in workers:
            environment = worker.environ()
            for name, value in MULTI_WORKER_ENV.items():
                assert environment.get(name) == value
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_up_refuses_storage_it_cannot_write_before_starting_anything(
    data_dir: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAGSMITH_STORAGE_URL", f"s3://{s3_bucket}-missing/tagsmith")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tagsmith = str(Path(sys.executable).parent / "tagsmith")
    done = subprocess.run(
        [tagsmith, "up", "--data-dir", str(data_dir), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert f"storage s3://{s3_bucket}-missing/tagsmith/ cannot be written" in output
    assert "NoSuchBucket" in output
    assert "broker" not in output  # nothing was started


@pytest.mark.parametrize(("flag", "migrations"), [([], 1), (["--no-migrate"], 0), (["--migrate"], 1)])
def test_api_migrates_as_its_flag_says(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], migrations: int
) -> None:
    # One worker serves in the `tagsmith api` process, which had read the settings before the flag
    # set TAGSMITH_MIGRATE_ON_START: --no-migrate migrated all the same.
    import uvicorn
    from fastapi.testclient import TestClient

    from service.db import migrate

    calls: list[str] = []
    real_upgrade = migrate.upgrade
    monkeypatch.setattr(migrate, "upgrade", lambda *a, **k: (calls.append("upgrade"), real_upgrade())[1])

    def serve(target: str, **_: object) -> None:
        from service.app import create_app

        with TestClient(create_app()):
            pass

    monkeypatch.setattr(uvicorn, "run", serve)
    monkeypatch.setenv("TAGSMITH_MIGRATE_ON_START", "true")  # and restored after the CLI changes it
    reset_settings()
    if not migrations:
        real_upgrade()  # migrated apart, as --no-migrate expects (an unmigrated one is refused)
    result = CliRunner().invoke(app, ["api", *flag], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(calls) == migrations
