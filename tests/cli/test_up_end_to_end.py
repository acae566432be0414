"""The README's first command on a fresh data folder: it reaches /ready, the README's curl session
runs against it to a prediction, and SIGINT stops it with no process left behind (API, Celery
worker and its pool, embedded Redis)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.cli.readme import README_URL, REPO_ROOT, curl_session, readme_text

READY_TIMEOUT_S = 300.0  # the first run of scripts/run may still be installing into .venv
SESSION_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _first_readme_command() -> list[str]:
    first = next(
        line for line in readme_text().split("## Two commands", 1)[1].splitlines() if line.startswith("./")
    )
    return first.split("#", 1)[0].split()


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-6000:]


def _wait_ready(stack: Stack) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if stack.proc.poll() is not None:
            raise AssertionError(f"the stack exited with {stack.proc.returncode}:\n{stack.log_tail()}")
        try:
            if httpx.get(f"{stack.url}/ready", timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"/ready not reached in {READY_TIMEOUT_S:.0f} s:\n{stack.log_tail()}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    command = _first_readme_command()
    assert command == ["./scripts/run"], command
    port = _free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "stack.log"
    # A fresh environment: no settings of the calling shell (database, broker, open mode) leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSMITH_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--data-dir", str(data_dir), "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = Stack(proc, f"http://127.0.0.1:{port}", data_dir, log)
    try:
        yield stack
    finally:
        _teardown(stack)


def _teardown(stack: Stack) -> None:
    """After a failed test: stop the stack the normal way, then kill whatever it left."""
    pids: list[int] = []
    state_file = stack.data_dir / "up.json"
    if state_file.is_file():
        state = json.loads(state_file.read_text(encoding="utf-8"))
        pids = [p for p in (state.get("api_pid"), state.get("worker_pid"), state.get("redis_pid")) if p]
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGINT)
        try:
            stack.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(stack.proc.pid, signal.SIGKILL)
            stack.proc.wait()
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL) if pid != pids[-1] else os.kill(pid, signal.SIGKILL)


def _stack_processes(stack: Stack) -> tuple[dict[int, str], set[int]]:
    """Every process of the stack (pid -> command line) and the process groups of its children."""
    state = json.loads((stack.data_dir / "up.json").read_text(encoding="utf-8"))
    assert state["pid"] == stack.proc.pid, "scripts/run must exec `tagsmith up`, not wrap it"
    processes: dict[int, str] = {}
    root = psutil.Process(stack.proc.pid)
    for process in [root, *root.children(recursive=True)]:
        processes[process.pid] = " ".join(process.cmdline())
    redis = psutil.Process(state["redis_pid"])
    assert "redis-server" in redis.name(), redis.cmdline()
    processes[redis.pid] = " ".join(redis.cmdline())
    assert state["api_pid"] in processes and state["worker_pid"] in processes
    groups = {os.getpgid(state["api_pid"]), os.getpgid(state["worker_pid"])}
    assert stack.proc.pid not in groups, "children must run in process groups of their own"
    return processes, groups


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_empty(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return all(not _alive(p.pid) for p in psutil.process_iter() if _pgid(p.pid) == pgid)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _run_curl_session(url: str) -> str:
    script = curl_session()
    assert README_URL in script
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(README_URL, url)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SESSION_TIMEOUT_S,
    )
    assert done.returncode == 0, (
        f"the README curl session failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return done.stdout


@pytest.mark.timeout(900)
def test_readme_first_command_runs_the_curl_session_and_stops_clean(stack: Stack) -> None:
    assert shutil.which("curl"), "the README's session needs curl"
    _wait_ready(stack)
    processes, groups = _stack_processes(stack)
    assert any("celery" in cmd for cmd in processes.values())
    assert any("uvicorn" in cmd for cmd in processes.values())
    banner = stack.log_tail()
    assert f"API {stack.url}" in banner and f"{stack.url}/docs" in banner

    output = _run_curl_session(stack.url)

    prediction = json.loads(output.strip().splitlines()[-1])
    sentence = prediction["sentences"][0]
    assert [t["text"] for t in sentence["tokens"]] == ["I", "love", "Berlin"]
    assert all(t["tag"] and 0.0 <= t["confidence"] <= 1.0 for t in sentence["tokens"])
    assert [(s["text"], s["label"]) for s in sentence["spans"]] == [("Berlin", "LOC")]

    # The whole stack is still the one we saw (nothing restarted or crashed meanwhile).
    assert all(_alive(pid) for pid in processes), stack.log_tail()

    stack.proc.send_signal(signal.SIGINT)
    try:
        code = stack.proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no stop {STOP_TIMEOUT_S:.0f} s after SIGINT:\n{stack.log_tail()}") from None
    assert code == 0, stack.log_tail()
    left = {pid: cmd for pid, cmd in processes.items() if _alive(pid)}
    assert not left, f"processes left behind: {left}"
    assert all(_group_empty(pgid) for pgid in groups)
    assert not (stack.data_dir / "up.json").exists()
