"""Small predict requests while one large request is answered: how long does a one-sentence
request wait behind a request of long texts?

The server and model are those of ``bench/predict_http.py`` (an untrained GloVe BiLSTM-CRF NER
tagger under ``uvicorn service.app:app``). One client sends one-sentence requests back to back;
after a second, another sends one large request: ``--texts`` texts of about ``--chars``
characters (CoNLL-03 dev sentences joined; the defaults are the most one default request may
hold: ``TAGSMITH_PREDICT_MAX_BATCH`` texts of ``TAGSMITH_PREDICT_MAX_TEXT_CHARS``). Prints one
JSON line: the large request's time and answer size, and the small requests' latency while it
ran (``small_max_ms`` is the longest any one of them waited).

    python bench/predict_large.py            # 256 texts of 10,000 characters
    python bench/predict_large.py --quick    # 16 texts of 2,000 characters, for tests
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
from predict_http import load_sentences, prepare, uvicorn_server


def large_texts(count: int, chars: int) -> list[str]:
    sentences = load_sentences(20_000)
    texts: list[str] = []
    current: list[str] = []
    size = 0
    index = 0
    while len(texts) < count:
        sentence = sentences[index % len(sentences)]
        index += 1
        if size + len(sentence) + 1 > chars and current:
            texts.append(" ".join(current))
            current, size = [], 0
        current.append(sentence)
        size += len(sentence) + 1
    return texts


def measure(url: str, headers: dict[str, str], texts: list[str], small: str) -> dict[str, float | int]:
    client = httpx.Client(timeout=600)
    for _ in range(20):  # warm-up: the model is loaded and its first calls are done
        client.post(url, json={"texts": [small]}, headers=headers).raise_for_status()
    latencies: list[tuple[float, float]] = []
    stop = threading.Event()

    def small_requests() -> None:
        with httpx.Client(timeout=600) as own:
            while not stop.is_set():
                began = time.perf_counter()
                own.post(url, json={"texts": [small]}, headers=headers).raise_for_status()
                latencies.append((began, time.perf_counter() - began))

    thread = threading.Thread(target=small_requests)
    thread.start()
    time.sleep(1.0)
    began = time.perf_counter()
    answer = client.post(url, json={"texts": texts}, headers=headers)
    ended = time.perf_counter()
    time.sleep(0.5)
    stop.set()
    thread.join()
    answer.raise_for_status()
    during = sorted(latency for start, latency in latencies if began <= start <= ended)
    return {
        "large_texts": len(texts),
        "large_chars": sum(len(t) for t in texts),
        "large_s": round(ended - began, 2),
        "large_answer_mb": round(len(answer.content) / 1e6, 1),
        "small_requests": len(during),
        "small_p50_ms": round(1000 * during[len(during) // 2], 1) if during else 0.0,
        "small_p99_ms": round(1000 * during[int(0.99 * (len(during) - 1))], 1) if during else 0.0,
        "small_max_ms": round(1000 * during[-1], 1) if during else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="16 texts of 2,000 characters (tests)")
    parser.add_argument("--texts", type=int, default=256, help="texts in the large request")
    parser.add_argument("--chars", type=int, default=10_000, help="characters per text (at most)")
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.chars = 16, 2000
    with tempfile.TemporaryDirectory(prefix="tagsmith-bench-") as tmp:
        env, key, model_id = prepare(Path(tmp))
        with uvicorn_server(env) as (port, _):
            url = f"http://127.0.0.1:{port}/models/{model_id}/predict"
            headers = {"Authorization": f"Bearer {key}"}
            texts = large_texts(args.texts, args.chars)
            row = measure(url, headers, texts, "EU rejects German call to boycott British lamb .")
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
