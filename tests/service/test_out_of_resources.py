"""A server out of disk, memory or file descriptors answers 503 with Retry-After and says so:
never a 4xx that blames the client's input, nor a bare 500 (found by a fault-injection audit)."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.service.fixtures import CONLL_TRAIN, ApiSession, stored_files


def _disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def test_an_upload_the_server_cannot_spool_to_its_full_disk_is_503_not_400(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FastAPI answered 400 "There was an error parsing the body" when the multipart parser's
    # temporary file could not grow past memory onto a full temporary disk.
    import starlette.formparsers

    class FullDisk(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def rollover(self) -> None:
            raise _disk_full()

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", FullDisk)
    owner = api.new_owner()
    big = CONLL_TRAIN * (2_000_000 // len(CONLL_TRAIN))  # past the 1 MB kept in memory
    r = api.upload(owner, train=big)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "30"
    assert r.json()["detail"] == "the server is out of resources (disk full); try again later"
    assert stored_files() == []
    assert api.upload(owner).status_code == 201  # a small one is read in memory


@pytest.mark.parametrize(
    ("error", "what"),
    [(MemoryError(), "out of memory"), (OSError(errno.EMFILE, "Too many open files"), "too many open files")],
)
def test_an_error_from_running_out_is_503_naming_what_ran_out(
    api: ApiSession, monkeypatch: pytest.MonkeyPatch, error: BaseException, what: str
) -> None:
    from service.logic import corpora

    def list_corpora(owner_id: str, limit: int, offset: int, cursor: str | None) -> list[object]:
        try:
            raise error
        except BaseException as cause:
            raise RuntimeError("while listing") from cause

    monkeypatch.setattr(corpora, "list_corpora", list_corpora)
    owner = api.new_owner()
    client = TestClient(api.client.app, raise_server_exceptions=False)
    r = client.get("/corpora", headers=owner.headers)
    assert r.status_code == 503, r.text
    assert what in r.json()["detail"] and r.headers["retry-after"] == "30"
    assert r.json()["type"].endswith("/server-exhausted")


def test_a_worker_out_of_disk_says_so_and_names_no_server_folder(service_env: str) -> None:
    from service.settings import get_settings
    from worker.tasks import error_message

    root = get_settings().storage_root
    error = OSError(errno.ENOSPC, "No space left on device", f"{root}/jobs/x/model.safetensors")
    message = error_message(error)
    assert message.startswith("the worker is out of resources (disk full): ")
    assert str(root) not in message and "<storage>/jobs/x/model.safetensors" in message


def test_request_scratch_files_are_the_process_s_own_and_a_restart_removes_a_killed_one_s(
    service_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An import killed while unpacking left 146 MB in $TMPDIR (up to 4 x the upload limit), and
    # nothing ever removed it.
    import os
    import socket
    import subprocess
    import sys

    from service.app import create_app
    from service.logic import corpora

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    root = tmp_path / "tmp" / f"tagsmith-requests-{os.getuid()}"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = root / f"{socket.gethostname()}-{int(gone.stdout)}"
    (dead / "import-x").mkdir(parents=True)
    (dead / "import-x" / "model.safetensors").write_bytes(b"\0" * 1000)
    read_from: list[Path] = []
    real_read = corpora.summarize_corpus

    def read(format: str, paths: dict[str, Path], *args: object) -> object:
        read_from.extend(paths.values())
        return real_read(format, paths, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(corpora, "summarize_corpus", read)
    with TestClient(create_app()) as client:
        assert not dead.exists()  # at start, before any request
        session = ApiSession(client=client)
        assert session.upload(session.new_owner()).status_code == 201
    mine = root / f"{socket.gethostname()}-{os.getpid()}"
    assert read_from and all(path.is_relative_to(mine) for path in read_from)
    assert list(mine.iterdir()) == []  # the upload's staging is gone
