"""Training-job latency and the cost of live progress reporting.

Prints one JSON line::

    {"submit_to_first_batch_s": ..., "callback_overhead_pct": ..., ...}

- ``submit_to_first_batch_s``: from ``POST /jobs`` to the first trained batch (the first batch
  loss the worker writes), with a real Celery worker process already running and an embedded
  Redis; the median over a few jobs (``first_job_submit_to_first_batch_s``: the first of them,
  whose training process had not trained before).
- ``callback_overhead_pct``: training throughput without any callback vs with the database
  progress callback (``worker.progress.JobProgress``: throttled job-row and batch-loss writes,
  epoch rows, checkpoint uploads to storage, cancel-flag reads, under a held lease). Best of
  several alternating runs each, after one untimed run of each. Target: under 5 %.
  On a shared machine the wall-clock difference is noisy (other processes steal the CPU for
  seconds), so ``callback_time_pct`` also reports the time spent inside the callback's hooks as a
  share of the run (median): the synchronous cost the callback adds to the training loop.

``--quick`` uses a tiny synthetic corpus and model (seconds; what the test runs). The full run
trains a character + BiLSTM-CRF tagger on 2,000 CoNLL-03 sentences from ../shared/data.
Everything runs in a temporary folder (SQLite, local storage) unless ``--database-url`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

QUICK_SENTENCES = [
    ("George Washington went to Washington .", "B-PER I-PER O O B-LOC O"),
    ("Anna lives in Berlin .", "B-PER O O B-LOC O"),
    ("John met Mary in London .", "B-PER O B-PER O B-LOC O"),
    ("The Acme Corp hired Bob .", "O B-ORG I-ORG O B-PER O"),
]


def column_file(sentences: list[tuple[str, str]]) -> str:
    blocks = [
        "\n".join(f"{w} {t}" for w, t in zip(s.split(), tags.split(), strict=True)) for s, tags in sentences
    ]
    return "\n\n".join(blocks) + "\n"


def conll_sentences(path: Path, limit: int) -> list[tuple[str, str]]:
    sentences: list[tuple[str, str]] = []
    words: list[str] = []
    tags: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip():
            if words:
                sentences.append((" ".join(words), " ".join(tags)))
                words, tags = [], []
                if len(sentences) >= limit:
                    break
            continue
        parts = line.split()
        words.append(parts[0])
        tags.append(parts[-1])
    return sentences


def corpus_files(quick: bool) -> dict[str, str]:
    if quick:
        return {"train": column_file(QUICK_SENTENCES * 16), "dev": column_file(QUICK_SENTENCES)}
    train = conll_sentences(SHARED_DATA / "conll03" / "train.txt", 2000)
    dev = conll_sentences(SHARED_DATA / "conll03" / "dev.txt", 200)
    return {"train": column_file(train), "dev": column_file(dev)}


def tagger_spec(corpus_id: str, quick: bool, max_epochs: int) -> dict[str, Any]:
    return {
        "task": "sequence_tagging",
        "corpus": {"ids": [corpus_id]},
        "label_type": "ner",
        "embeddings": [
            {
                "type": "character",
                "char_embedding_dim": 8 if quick else 25,
                "hidden_size_char": 8 if quick else 25,
            }
        ],
        "model": {"hidden_size": 8 if quick else 64},
        "trainer": {"mini_batch_size": 4 if quick else 16, "max_epochs": max_epochs, "device": "cpu"},
    }


class Bench:
    def __init__(self, folder: Path, database_url: str | None, redis_url: str) -> None:
        self.folder = folder
        self.env = {
            "TAGSMITH_DATA_DIR": str(folder / "data"),
            "TAGSMITH_DATABASE_URL": database_url or f"sqlite:///{folder / 'data' / 'tagsmith.db'}",
            "TAGSMITH_BROKER_URL": redis_url,
            "TAGSMITH_ADMIN_KEY": "bench-admin-key",
            "TAGSMITH_OPEN_MODE": "false",
        }
        os.environ.update(self.env)
        from service.db.migrate import upgrade
        from service.settings import reset_settings

        reset_settings()
        upgrade()

    def start_worker(self, stack: ExitStack) -> None:
        log = (self.folder / "worker.log").open("wb")
        stack.callback(log.close)
        argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-l", "INFO", "-c", "1"]
        argv += ["-Q", "cpu", "-n", "bench@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env={**os.environ, **self.env, "PYTHONPATH": str(REPO)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(_stop, process)
        deadline = time.monotonic() + 120
        while " ready." not in (self.folder / "worker.log").read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not start:\n" + (self.folder / "worker.log").read_text())
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def first_batch_at(job_id: str, timeout: float) -> datetime:
    from sqlalchemy import func, select

    from service.db.models import Job, JobBatchLoss
    from service.db.session import session_scope

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            first = session.execute(
                select(func.min(JobBatchLoss.created_at)).where(JobBatchLoss.job_id == job_id)
            ).scalar()
            status, error = session.execute(select(Job.status, Job.error).where(Job.id == job_id)).one()
        if first is not None:
            return first if isinstance(first, datetime) else datetime.fromisoformat(str(first))
        if status == "failed":
            raise RuntimeError(f"job {job_id} failed: {error}")
        time.sleep(0.01)
    raise TimeoutError(f"job {job_id}: no batch after {timeout}s")


def wait_finished(job_id: str, timeout: float) -> None:
    from service.db.models import Job
    from service.db.session import session_scope

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.status in ("completed", "failed", "cancelled"):
                return
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not finish within {timeout}s")


def submit_latency(
    client: Any, headers: dict[str, str], corpus_id: str, quick: bool, jobs: int
) -> tuple[float, float]:
    """Median and first-job latency: the first job meets a training process that never trained."""
    from service.db.models import utcnow

    latencies = []
    for _ in range(jobs):
        started = utcnow()
        response = client.post("/jobs", json=tagger_spec(corpus_id, quick, max_epochs=1), headers=headers)
        if response.status_code != 202:
            raise RuntimeError(f"POST /jobs: {response.status_code} {response.text}")
        job_id = response.json()["id"]
        latencies.append((first_batch_at(job_id, timeout=300) - started).total_seconds())
        # Only the start is measured: stop the job so the next one finds the worker idle.
        client.post(f"/jobs/{job_id}/cancel", headers=headers)
        wait_finished(job_id, timeout=600)
    return statistics.median(latencies), latencies[0]


class TimedCallback:
    """Passes every hook on to the progress callback and adds up the time spent in them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __getattr__(self, hook: str) -> Any:
        method = getattr(self.inner, hook)
        if not callable(method):
            return method  # data the trainer reads, e.g. stop_reason

        def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


def train_seconds(
    corpus_id: str, quick: bool, epochs: int, with_callback: bool, folder: Path
) -> tuple[float, float]:
    """Wall time of ``ModelTrainer.train`` alone (the model is built first, outside the clock),
    and the part of it spent inside the progress callback's hooks."""
    from service.db.models import Job, Owner
    from service.db.session import session_scope
    from service.schemas.spec import TrainingSpec
    from service.settings import get_settings
    from service.storage import get_storage
    from worker import build, lease
    from worker.progress import JobProgress

    spec = TrainingSpec.model_validate(tagger_spec(corpus_id, quick, epochs))
    corpus = build.load_corpus(spec, get_storage(), folder / "corpus")
    trainer = build.new_trainer(spec, corpus, folder / "resources")
    callback: TimedCallback | None = None
    heartbeat: lease.Heartbeat | None = None
    if with_callback:
        with session_scope() as session:
            owner = Owner(name="bench")
            session.add(owner)
            session.flush()
            job = Job(owner_id=owner.id, name="bench", spec=spec.model_dump(mode="json"), status="queued")
            session.add(job)
            session.flush()
            job_id = job.id
        owner_id = lease.new_owner_id()
        seconds = get_settings().lease_seconds
        assert lease.claim(job_id, owner_id, seconds).claimed
        heartbeat = lease.Heartbeat(job_id, owner_id, seconds).start()
        callback = TimedCallback(JobProgress(job_id, owner_id, get_storage(), heartbeat.lost))
    arguments = build.trainer_arguments(spec)
    started = time.perf_counter()
    trainer.train(folder / "run", callbacks=[callback] if callback else [], device="cpu", **arguments)
    elapsed = time.perf_counter() - started
    if heartbeat is not None:
        heartbeat.stop()
    return elapsed, callback.seconds if callback else 0.0


def callback_overhead(corpus_id: str, quick: bool, folder: Path) -> tuple[float, float, float, float]:
    """Steady-state throughput: one untimed run per variant first (this process's first SQL
    statements compile and first tensor operations initialise), then alternating timed runs."""
    epochs = 2
    rounds = 3 if quick else 5
    for flag in (False, True):
        train_seconds(corpus_id, quick, 1, flag, folder / f"warm-up-{int(flag)}")
    without: list[float] = []
    with_db: list[float] = []
    in_hooks: list[float] = []
    for i in range(rounds):
        # ABBA order: whatever drifts during the measurement hits both variants alike.
        for flag in (True, False) if i % 2 else (False, True):
            run_dir = folder / f"overhead-{i}-{int(flag)}"
            seconds, hooks = train_seconds(corpus_id, quick, epochs, flag, run_dir)
            (with_db if flag else without).append(seconds)
            if flag:
                in_hooks.append(100.0 * hooks / seconds)
    best_without, best_with = min(without), min(with_db)
    overhead = 100.0 * (best_with - best_without) / best_without
    return overhead, statistics.median(in_hooks), best_without, best_with


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny corpus and model (seconds)")
    parser.add_argument("--database-url", default=None, help="database to use (default: a temporary SQLite)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs timed for the submit latency")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1 if args.quick else max(1, (os.cpu_count() or 2) // 2))
    jobs = args.jobs or (2 if args.quick else 3)

    from fastapi.testclient import TestClient

    from service.broker import start_embedded_redis

    with tempfile.TemporaryDirectory(prefix="tagsmith-bench-jobs-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        redis_server = start_embedded_redis(folder / "redis")
        stack.callback(redis_server.stop)
        bench = Bench(folder, args.database_url, redis_server.url)
        bench.start_worker(stack)
        from service.app import app as api

        client = stack.enter_context(TestClient(api))
        created = client.post(
            "/keys", json={"name": "bench"}, headers={"Authorization": "Bearer bench-admin-key"}
        )
        headers = {"Authorization": f"Bearer {created.json()['key']}"}
        files = {
            split: (f"{split}.txt", text.encode(), "text/plain")
            for split, text in corpus_files(args.quick).items()
        }
        response = client.post(
            "/corpora",
            data={
                "name": "bench",
                "format": "column",
                "options": json.dumps({"column_map": {"0": "text", "1": "ner"}}),
            },
            files=files,
            headers=headers,
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST /corpora: {response.status_code} {response.text}")
        corpus_id = response.json()["id"]
        latency, cold_latency = submit_latency(client, headers, corpus_id, args.quick, jobs)
        overhead, hooks_pct, seconds_without, seconds_with = callback_overhead(corpus_id, args.quick, folder)
    print(
        json.dumps(
            {
                "submit_to_first_batch_s": round(latency, 3),
                "first_job_submit_to_first_batch_s": round(cold_latency, 3),
                "callback_overhead_pct": round(overhead, 2),
                "callback_time_pct": round(hooks_pct, 2),
                "train_s_without_callback": round(seconds_without, 3),
                "train_s_with_callback": round(seconds_with, 3),
                "quick": args.quick,
                "jobs": jobs,
            }
        )
    )
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    raise SystemExit(main())
