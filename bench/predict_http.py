"""HTTP predict throughput and latency: ``/models/{id}/predict`` under uvicorn.

Builds a GloVe BiLSTM-CRF NER tagger with the engine (untrained weights: speed does not depend on
them), registers it in a fresh data folder, starts ``uvicorn service.app:app`` on 127.0.0.1 and
drives it from a separate load-generator process: a minimal asyncio HTTP/1.1 keep-alive client
(one connection per concurrent client, pre-encoded requests), so the generator costs far less CPU
than the server. One raw sentence per request (CoNLL-03 dev sentences, detokenized).

Prints one JSON line per concurrency level:
``{"concurrency", "sentences_per_s", "p50_ms", "p99_ms", "requests", "errors", ...}``, plus
``server_cpu_ms_per_sentence`` (the server process's CPU time per sentence, which does not depend
on what else runs on the machine) and ``load_average`` (the 1-minute load when the level ended).

    python bench/predict_http.py            # concurrency 1 and 16, 20 s each
    python bench/predict_http.py --quick    # a few seconds, for tests
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FALLBACK_SENTENCES = [
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn lives in Brussels and works for the European Commission .",
    "The match between Manchester United and Arsenal ended 2-1 on Saturday .",
    "Germany 's representative to the European Union 's veterinary committee Werner Zwingmann said on Wednesday .",
]


def load_sentences(limit: int = 2000) -> list[str]:
    path = SHARED_DATA / "conll03" / "dev.txt"
    if not path.exists():
        return FALLBACK_SENTENCES
    sentences: list[str] = []
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if words and words[0] != "-DOCSTART-":
                sentences.append(" ".join(words))
            words = []
            if len(sentences) >= limit:
                break
        else:
            words.append(line.split()[0])
    return sentences or FALLBACK_SENTENCES


# -- load generator (runs in its own process) -----------------------------------------------------
async def _client(
    host: str, port: int, requests: list[bytes], stop_at: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = 0
    try:
        while time.perf_counter() < stop_at:
            payload = requests[i % len(requests)]
            i += 1
            start = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


def _encode_requests(host: str, port: int, path: str, key: str, sentences: list[str]) -> list[bytes]:
    out = []
    for sentence in sentences:
        body = json.dumps({"texts": [sentence]}).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


def loadgen(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sentences = load_sentences()
    path = f"/models/{args.model}/predict"
    requests = _encode_requests(args.host, args.port, path, args.key, sentences)
    latencies: list[float] = []
    errors: list[int] = []

    async def run() -> float:
        # Stagger the clients' starting sentences so concurrent requests differ.
        start = time.perf_counter()
        stop_at = start + args.duration
        await asyncio.gather(
            *(
                _client(
                    args.host, args.port, requests[i * 37 :] + requests[: i * 37], stop_at, latencies, errors
                )
                for i in range(args.concurrency)
            )
        )
        return time.perf_counter() - start

    cpu_start = time.process_time()
    elapsed = asyncio.run(run())
    cpu = time.process_time() - cpu_start
    latencies.sort()

    def pct(p: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2) if latencies else 0.0
        )

    print(
        json.dumps(
            {
                "concurrency": args.concurrency,
                "sentences_per_s": round(len(latencies) / elapsed, 1),
                "p50_ms": pct(0.50),
                "p99_ms": pct(0.99),
                "requests": len(latencies),
                "errors": len(errors),
                "seconds": round(elapsed, 2),
                "loadgen_cpu_percent": round(100 * cpu / elapsed, 1),
            }
        ),
        flush=True,
    )


# -- setup: model, database, server ------------------------------------------------------------
def build_model(directory: Path) -> tuple[str, list[str]]:
    """Save an untrained GloVe BiLSTM-CRF NER tagger (hidden 256) into ``directory``."""
    from engine.data import Dictionary
    from engine.embeddings.word import WordEmbeddings
    from engine.models.sequence_tagger import SequenceTagger

    labels = ["PER", "LOC", "ORG", "MISC"]
    dictionary = Dictionary(add_unk=False)
    for label in labels:
        dictionary.add_item(label)
    model = SequenceTagger(
        embeddings=WordEmbeddings("glove"),
        tag_dictionary=dictionary,
        tag_type="ner",
        hidden_size=256,
        use_crf=True,
        use_rnn=True,
    )
    model.save(directory)
    return "ner", labels


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(data_dir: Path) -> tuple[dict[str, str], str, str]:
    """Fresh settings in ``data_dir``, a migrated database, an owner key and a registered model."""
    env = {
        "TAGSMITH_DATA_DIR": str(data_dir),
        "TAGSMITH_DATABASE_URL": f"sqlite:///{data_dir / 'tagsmith.db'}",
        "TAGSMITH_STORAGE_URL": str(data_dir / "storage"),
        "TAGSMITH_OPEN_MODE": "false",
        "HF_HUB_OFFLINE": "1",
    }
    os.environ.update(env)
    from service import auth
    from service.db.migrate import upgrade
    from service.db.session import dispose_engines, session_scope
    from service.logic.models import register_model
    from service.settings import reset_settings

    reset_settings()
    upgrade()
    with session_scope() as session:
        created = auth.create_key(session, owner_name="bench")
    with tempfile.TemporaryDirectory() as tmp:
        label_type, labels = build_model(Path(tmp))
        row = register_model(
            created.owner_id,
            Path(tmp),
            name="glove-bilstm-crf-ner",
            task="sequence_tagging",
            label_type=label_type,
            labels=labels,
        )
    dispose_engines()
    return env, created.key, row.id


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("uvicorn did not become healthy")


@contextlib.contextmanager
def uvicorn_server(
    env: dict[str, str], server_env: dict[str, str] | None = None, workers: int = 1
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``uvicorn service.app:app`` on a free port of 127.0.0.1 with ``prepare``'s settings,
    healthy when the block starts and stopped when it ends: (port, process)."""
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-access-log", "--log-level", "warning", "--workers", str(workers)]
    server = subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **env, **(server_env or {}), "PYTHONPATH": str(REPO)}
    )
    try:
        wait_healthy(port, server)
        yield port, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def _cpu_seconds(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def run_level(
    port: int, key: str, model_id: str, concurrency: int, duration: float, server_pid: int | None = None
) -> dict[str, Any]:
    """One load level; with ``server_pid`` also the server's CPU time per sentence, a figure that
    does not depend on what else runs on the machine."""
    cpu_before = _cpu_seconds(server_pid) if server_pid else 0.0
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--loadgen",
        "--port",
        str(port),
        "--key",
        key,
        "--model",
        model_id,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=REPO)
    row = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    row["load_average"] = round(os.getloadavg()[0], 2)
    if server_pid and row["requests"]:
        row["server_cpu_ms_per_sentence"] = round(
            1000 * (_cpu_seconds(server_pid) - cpu_before) / row["requests"], 3
        )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short run (tests)")
    parser.add_argument("--levels", default="1,16", help="comma-separated concurrency levels")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load before measuring")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server, e.g. TAGSMITH_PREDICT_THREADS=2 (repeatable)",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--key", default="", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen:
        loadgen(args)
        return 0
    if args.quick:
        args.duration, args.warmup = 2.0, 1.0
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    server_env = dict(item.split("=", 1) for item in args.server_env)
    if args.workers > 1:
        from service.cli.commands import MULTI_WORKER_ENV  # what `tagsmith api --workers N` sets

        server_env = {**MULTI_WORKER_ENV, **server_env}

    with tempfile.TemporaryDirectory(prefix="tagsmith-bench-") as tmp:
        env, key, model_id = prepare(Path(tmp))
        with uvicorn_server(env, server_env, args.workers) as (port, server):
            run_level(port, key, model_id, max(levels), args.warmup)
            for concurrency in levels:
                row = run_level(port, key, model_id, concurrency, args.duration, server.pid)
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
