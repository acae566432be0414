"""Shared test settings: paths to the real corpora and offline model hubs."""

from __future__ import annotations

import faulthandler
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT.parent / "shared" / "data").resolve()
# A run whose tests are over but whose process does not end (a thread or child process left
# waiting) prints every thread's stack and fails, instead of holding CI until its time limit
# (a run once hung 70 minutes after its last test's summary).
EXIT_WATCHDOG_S = 180


def pytest_unconfigure(config: pytest.Config) -> None:
    faulthandler.dump_traceback_later(EXIT_WATCHDOG_S, exit=True, file=sys.__stderr__)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        raise RuntimeError(f"real corpora expected at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3-compatible server (SeaweedFS) for the session: the ``AWS_*`` variables for it."""
    from tests.s3_server import seaweed_s3

    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs")) as env:
        yield env


@pytest.fixture
def s3_bucket(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty bucket, with this process's ``AWS_*`` environment pointing at its server."""
    from tests.s3_server import client, create_bucket

    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    create_bucket(client(s3_env), bucket)
    return bucket
