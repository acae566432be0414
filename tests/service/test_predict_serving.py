"""The serving path under load: the model cache's loads and evictions, requests larger than a
micro-batch, and clients that go away before their answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from tests.service.fixtures import ApiSession, register_tiny_tagger


def _settings(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    from service.settings import get_settings, reset_settings

    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    return get_settings()


def _batch_sizes() -> tuple[float, float]:
    """(model calls, sentences) the batchers have run so far."""
    from service.metrics import PREDICT_BATCH_SIZE

    samples = {s.name.rsplit("_", 1)[-1]: s.value for m in PREDICT_BATCH_SIZE.collect() for s in m.samples}
    return samples["count"], samples["sum"]


def test_evicting_under_load_leaves_one_folder_and_batcher_per_cached_model(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a key's lock dropped after each load, waiters and newcomers loaded one model twice and
    # the second copy replaced the first without closing it: its folder and batcher leaked.
    from service.logic.predict import ModelCache, predict
    from service.schemas.api import PredictRequest

    settings = _settings(monkeypatch, TAGSMITH_MODEL_CACHE_SIZE="1")
    owner = api.new_owner()
    models = [register_tiny_tagger(owner, tmp_path, label_type) for label_type in ("ner", "pos", "upos")]
    request = PredictRequest(texts=["Anna lives in Berlin ."])

    async def scenario() -> tuple[ModelCache, list[Any]]:
        cache = ModelCache(settings)
        for _ in range(3):
            await asyncio.gather(
                *(predict(cache, owner.id, models[i % 3], request, settings) for i in range(60))
            )
        await asyncio.sleep(0.1)  # closed batchers finish what they hold
        running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
        return cache, running

    cache, running = asyncio.run(scenario())
    assert len(cache.entries) == 1
    assert running == [entry.batcher.task for entry in cache.entries.values()]
    assert [p.name for p in cache.cache_root.iterdir()] == [e.directory.name for e in cache.entries.values()]
    cache.close()
    assert not cache.cache_root.exists()


def test_a_request_that_goes_away_while_its_model_loads_leaves_no_folder_behind(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The load's thread went on after its request was cancelled (the client hung up): the model's
    # folder was left in the cache folder in no entry until the process ended (425 MB for 9 of
    # 12 aborted requests for a GloVe tagger).
    import threading

    from service.logic import predict as serving

    settings = _settings(monkeypatch)
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    loading, release, loaded = threading.Event(), threading.Event(), threading.Event()
    real_load = serving._load

    def slow_load(info: Any, root: Path) -> Any:
        loading.set()
        release.wait(10)
        try:
            return real_load(info, root)
        finally:
            loaded.set()

    monkeypatch.setattr(serving, "_load", slow_load)

    async def scenario() -> serving.ModelCache:
        cache = serving.ModelCache(settings)
        info = serving.model_info(owner.id, model_id)
        request = asyncio.ensure_future(cache.get(info))
        while not loading.is_set():
            await asyncio.sleep(0.01)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        release.set()
        while not loaded.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the loop takes the finished load in
        # the next request finds the model loaded
        assert (await cache.get(info)).info.id == model_id
        return cache

    cache = asyncio.run(scenario())
    assert len(cache.entries) == 1
    assert [p.name for p in cache.cache_root.iterdir()] == [e.directory.name for e in cache.entries.values()]
    cache.close()


def test_the_model_cache_is_local_and_removes_what_dead_processes_of_this_host_left(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It was under the shared data folder: a recreated container has a new host name, so a dead
    # container's loaded models stayed on the shared volume for good.
    import os
    import socket
    import subprocess
    import sys
    import tempfile

    from service.logic.predict import ModelCache

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    settings = _settings(monkeypatch)
    root = tmp_path / "tmp" / f"tagsmith-models-{os.getuid()}"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = root / f"{socket.gethostname()}-{int(gone.stdout)}"
    other_host = root / "another-container-1"
    for folder in (dead, other_host):
        (folder / "model").mkdir(parents=True)

    cache = ModelCache(settings)
    try:
        assert cache.cache_root == root / f"{socket.gethostname()}-{os.getpid()}"
        assert not cache.cache_root.is_relative_to(settings.resolved_data_dir)
        assert root.stat().st_mode & 0o777 == 0o700
        assert not dead.exists() and other_host.exists()
    finally:
        cache.close()


def test_a_large_request_runs_in_parts_of_the_micro_batch(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One request of 57,829 sentences went through the model at once and held every small
    # request in its window for 17 s.
    from service.logic.predict import ModelCache, predict
    from service.schemas.api import PredictRequest

    settings = _settings(monkeypatch, TAGSMITH_PREDICT_MAX_MICRO_BATCH="4")
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    texts = [f"Anna number {i} lives in Berlin ." for i in range(10)]

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], tuple[float, float]]:
        cache = ModelCache(settings)
        one = await predict(cache, owner.id, model_id, PredictRequest(texts=texts[:1]), settings)
        before = _batch_sizes()
        result = await predict(cache, owner.id, model_id, PredictRequest(texts=texts), settings)
        after = _batch_sizes()
        cache.close()
        return one, result, (after[0] - before[0], after[1] - before[1])

    one, result, (calls, sentences) = asyncio.run(scenario())
    assert (calls, sentences) == (3, 10)  # 4 + 4 + 2, never the 10 at once
    assert [s["text"] for s in result["sentences"]] == texts  # in order
    assert result["sentences"][0] == one["sentences"][0]


def test_concurrent_requests_with_and_without_all_classes_get_what_each_asked_within_the_cap(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Requests collected into one batch went through one model call: those that asked for every
    # class's probability lost them (or the others got them), and a request that did not fit in
    # the micro-batch was added anyway.
    from service.logic.predict import Batcher, ModelCache, predict
    from service.schemas.api import PredictRequest

    settings = _settings(
        monkeypatch, TAGSMITH_PREDICT_MAX_MICRO_BATCH="4", TAGSMITH_PREDICT_BATCH_WAIT_MS="20"
    )
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    calls: list[tuple[int, bool]] = []
    batches: list[list[tuple[int, bool]]] = []
    predict_call, collect = Batcher._predict, Batcher._collect

    def recording_predict(self: Batcher, sentences: list[Any], all_classes: bool) -> None:
        calls.append((len(sentences), all_classes))
        predict_call(self, sentences, all_classes)

    async def recording_collect(self: Batcher, first: Any) -> Any:
        items, stop = await collect(self, first)
        batches.append([(len(i.sentences), i.all_classes) for i in items])
        return items, stop

    monkeypatch.setattr(Batcher, "_predict", recording_predict)
    monkeypatch.setattr(Batcher, "_collect", recording_collect)
    sizes = [2, 1, 3, 1] * 4  # 2 + 1 fit; a plain 3 more than fills the micro-batch
    requests = [
        PredictRequest(
            sentences=[["Anna", "lives", "in", f"Berlin{i}-{j}"] for j in range(size)],
            return_probabilities_for_all_classes=i % 2 == 1,
        )
        for i, size in enumerate(sizes)
    ]

    async def scenario() -> list[dict[str, Any]]:
        cache = ModelCache(settings)
        await predict(cache, owner.id, model_id, PredictRequest(texts=["warm up"]), settings)
        results = await asyncio.gather(*(predict(cache, owner.id, model_id, r, settings) for r in requests))
        cache.close()
        return list(results)

    results = asyncio.run(scenario())
    for request, result in zip(requests, results, strict=True):
        assert len(result["sentences"]) == len(request.sentences or [])
        for sentence in result["sentences"]:
            for token in sentence["tokens"]:
                assert ("all_tags" in token) == request.return_probabilities_for_all_classes, token
    assert sum(n for n, _ in calls[1:]) == sum(sizes)
    assert any(len({flag for _, flag in batch}) == 2 for batch in batches), f"no mixed batch: {batches}"
    assert all(sum(n for n, _ in batch) <= 4 for batch in batches), batches
    assert all(n <= 4 for n, _ in calls), calls


def test_a_request_sent_during_a_large_one_is_answered_between_its_parts(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # All parts of a large request were queued at once: a small request waited behind every
    # one of them (28.9 s behind 248 texts of 10,000 characters).
    from service.logic.predict import ModelCache, predict
    from service.schemas.api import PredictRequest

    settings = _settings(monkeypatch, TAGSMITH_PREDICT_MAX_MICRO_BATCH="1")
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    large = PredictRequest(texts=[f"Anna number {i} lives in Berlin ." for i in range(40)])

    async def scenario() -> list[str]:
        cache = ModelCache(settings)
        await predict(cache, owner.id, model_id, PredictRequest(texts=["warm up"]), settings)
        finished: list[str] = []

        async def send(name: str, request: PredictRequest) -> None:
            await predict(cache, owner.id, model_id, request, settings)
            finished.append(name)

        big = asyncio.ensure_future(send("large", large))
        while _batch_sizes()[1] < 3:  # the large request is under way
            await asyncio.sleep(0.001)
        await send("small", PredictRequest(texts=["Bob ."]))
        await big
        cache.close()
        return finished

    assert asyncio.run(scenario()) == ["small", "large"]


def test_long_texts_go_through_the_model_in_fewer_a_call(
    api: ApiSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 24 texts of 10,000 characters went through the model in one call and held a one-sentence
    # request for 3.3 s: a call holds at most 32 tokens a sentence of the micro-batch.
    from service.logic.predict import ModelCache, predict
    from service.schemas.api import PredictRequest

    settings = _settings(monkeypatch, TAGSMITH_PREDICT_MAX_MICRO_BATCH="4")  # 128 tokens a call
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    texts = ["Anna lives in Berlin . " * 12, "Bob .", "Anna lives in Berlin . " * 30, "Paris .", "Rome ."]

    async def scenario() -> tuple[dict[str, Any], tuple[float, float]]:
        cache = ModelCache(settings)
        await predict(cache, owner.id, model_id, PredictRequest(texts=texts[:1]), settings)
        before = _batch_sizes()
        result = await predict(cache, owner.id, model_id, PredictRequest(texts=texts), settings)
        after = _batch_sizes()
        cache.close()
        return result, (after[0] - before[0], after[1] - before[1])

    result, (calls, sentences) = asyncio.run(scenario())
    # 60 + 2 tokens, then the 150-token text alone (over the budget, never split), then 2 + 2
    assert (calls, sentences) == (3, 5)
    assert [len(s["tokens"]) for s in result["sentences"]] == [60, 2, 150, 2, 2]


def _asgi_predict(
    api: ApiSession, model_id: str, headers: dict[str, str], messages: list[dict[str, Any]]
) -> list[Any]:
    """POST predict straight through the app with these client messages; what it sent back."""
    app = api.client.app
    incoming = iter(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = next(incoming, None)
        if message is None:  # the client waits for its answer
            await asyncio.sleep(3600)
        return message  # type: ignore[return-value]

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/models/{model_id}/predict",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "query_string": b"",
    }
    api.client.portal.call(app, scope, receive, send)  # on the running app's event loop
    return sent


def _http_requests(status: str) -> float:
    from service.metrics import HTTP_REQUESTS

    return HTTP_REQUESTS.labels("POST", "/models/{model_id}/predict", status)._value.get()


def test_a_client_gone_during_the_upload_is_a_499_not_a_500(api: ApiSession, tmp_path: Path) -> None:
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    before = _http_requests("499"), _http_requests("500")
    sent = _asgi_predict(
        api,
        model_id,
        owner.headers,
        [
            {"type": "http.request", "body": b'{"texts": ["Anna', "more_body": True},
            {"type": "http.disconnect"},
        ],
    )
    assert sent == []  # nobody to answer
    assert (_http_requests("499") - before[0], _http_requests("500") - before[1]) == (1, 0)


def test_a_large_request_whose_client_went_away_is_not_computed(api: ApiSession, tmp_path: Path) -> None:
    # Abandoned requests were computed in full: 100 of them held the next request for 14 s.
    owner = api.new_owner()
    model_id = register_tiny_tagger(owner, tmp_path)
    body = ('{"texts": [' + ", ".join(['"Anna lives in Berlin and works in Paris ."'] * 200) + "]}").encode()
    before = _batch_sizes()[1], _http_requests("499")
    sent = _asgi_predict(
        api,
        model_id,
        owner.headers,
        [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}],
    )
    assert sent == []
    assert _http_requests("499") - before[1] == 1
    assert _batch_sizes()[1] - before[0] < 200  # at most what was already running when it left


@pytest.mark.parametrize(("count", "tokens"), [(0, 3), (1, 3), (1, 5000), (499, 3), (500, 3), (256, 40)])
def test_a_large_answer_is_the_same_json_serialised_in_parts_with_the_loop_served_between(
    count: int, tokens: int
) -> None:
    from pydantic_core import to_json

    from service.predict_fastpath import TOKENS_PER_PART, json_in_parts

    token = {"text": 'l\u00e4mb "x"', "start": 0, "end": 4, "tag": "O", "confidence": None}
    sentence = {"index": 0, "text": "EU rejects", "tokens": [token] * tokens, "labels": []}
    result = {
        "model_id": "m",
        "task": "sequence_tagging",
        "label_type": "ner",
        "sentences": [sentence] * count,
    }
    ticks = 0

    async def ticker(done: asyncio.Event) -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def serialise() -> bytes:
        done = asyncio.Event()
        other = asyncio.ensure_future(ticker(done))
        await asyncio.sleep(0)
        before = ticks
        payload = await json_in_parts(result)
        seen = ticks - before
        done.set()
        await other
        # Another task ran between every two parts: a request waiting on the loop is served.
        assert seen >= count * (tokens + 1) // TOKENS_PER_PART - 1
        return payload

    assert asyncio.run(serialise()) == to_json(result)
