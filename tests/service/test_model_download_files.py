"""A model download's temporary archive: closed, and deleted after the download, also when the
client goes away mid-download. Each download kept an open descriptor to its deleted archive, and
with it the archive's disk space, until the process ended."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from service.logic.models import register_model
from tests.service.fixtures import ApiSession, Owner

pytestmark = pytest.mark.postgres


def _open_archives() -> list[str]:
    """This process's open descriptors to tagsmith-model archives (deleted ones included)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "tagsmith-model-" in target:
            out.append(target)
    return out


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _left_in(folder: Path) -> list[Path]:
    """The files under ``folder`` (the process's own scratch folder stays; what was in it must not)."""
    return [p for p in folder.rglob("*") if not p.is_dir()]


def _register(owner: Owner, tmp_path: Path, size: int) -> str:
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "config.json").write_text('{"class": "SequenceTagger"}')
    (folder / "model.safetensors").write_bytes(os.urandom(size))  # does not compress
    return register_model(
        owner.id, folder, name="m", task="sequence_tagging", label_type="ner", labels=["PER"]
    ).id


def test_downloads_leave_no_open_or_stored_archive(api: ApiSession, tmp_path: Path, temp_dir: Path) -> None:
    owner = api.new_owner()
    model_id = _register(owner, tmp_path, 200_000)
    before = _open_archives()
    for _ in range(5):
        r = api.client.get(f"/models/{model_id}/download", headers=owner.headers)
        assert r.status_code == 200 and len(r.content) > 200_000
    assert _open_archives() == before
    assert _left_in(temp_dir) == []


def test_a_download_the_client_leaves_removes_its_archive(
    api: ApiSession, tmp_path: Path, temp_dir: Path
) -> None:
    owner = api.new_owner()
    model_id = _register(owner, tmp_path, 2_000_000)  # about 30 parts of 64 kB
    before = _open_archives()
    parts = 0

    async def run() -> None:
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not hasattr(receive, "sent"):
                receive.sent = True  # type: ignore[attr-defined]
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            # uvicorn's send after the client has gone returns without a word.
            nonlocal parts
            if message["type"] == "http.response.body":
                parts += 1
                if parts == 2:
                    # The archive exists while it is sent.
                    assert [p.name for p in temp_dir.rglob("model-*.tar.gz")]
                    gone.set()
                await asyncio.sleep(0.01)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},  # what uvicorn says
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/models/{model_id}/download",
            "raw_path": f"/models/{model_id}/download".encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {owner.key}".encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "state": {},
        }
        await api.client.app(scope, receive, send)

    asyncio.run(run())
    assert 2 <= parts < 20, parts  # the download stopped part-way
    assert _open_archives() == before
    assert _left_in(temp_dir) == []
