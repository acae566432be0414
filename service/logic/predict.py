"""Predict: turn request texts into sentences, run them through a cached model, format results.

- ``ModelCache``: an LRU of loaded models bounded by count; each model loads once (concurrent
  first requests wait for the same load) in the inference thread pool.
- ``Batcher``: one per loaded model. Requests put their sentences on an asyncio queue; one worker
  coroutine takes everything queued, runs ``model.predict`` on it in the thread pool (the event
  loop never blocks) and wakes the requests. While a batch runs, the next one fills up, so under
  load batches grow by themselves; after a batch with several requests it also waits up to
  ``predict_batch_wait_ms`` for more, until as many requests are in as the last batch had.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.data import Sentence
from engine.models.base import distribution_key
from engine.precision import resolve_precision
from engine.serialization import ModelFileError
from service import limits
from service.db.models import Model
from service.db.session import session_scope
from service.errors import (
    FieldError,
    Invalid,
    ModelDamaged,
    NotFound,
    Unavailable,
    exhausted_resource,
    storable,
)
from service.metrics import MODEL_LOADS, MODELS_LOADED, PREDICT_BATCH_SIZE, PREDICT_SENTENCES
from service.process_folders import private_root, process_folder
from service.schemas.api import PredictRequest
from service.settings import Settings
from service.storage import StorageUnavailable, get_storage

PREDICTABLE_TASKS = ("sequence_tagging", "text_classification")
# A task in words: "model X is a language_model model" read as code, not as English.
TASK_NOUNS = {
    "sequence_tagging": "sequence tagger",
    "text_classification": "text classifier",
    "language_model": "language model",
}
ROW_CACHE_SECONDS = 5.0


# -- model rows (cached briefly: predict is the hot path) ------------------------------------
@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    owner_id: str
    task: str
    label_type: str
    storage_key: str
    created_at: float  # identifies this row's artifact: a re-created id never reuses a cache entry


_row_lock = threading.Lock()
_rows: dict[str, tuple[ModelInfo, float]] = {}


def forget_model(model_id: str) -> None:
    with _row_lock:
        _rows.pop(model_id, None)


def _cached_info(model_id: str) -> ModelInfo | None:
    with _row_lock:
        hit = _rows.get(model_id)
    return hit[0] if hit is not None and hit[1] > time.monotonic() else None


def model_info(owner_id: str, model_id: str) -> ModelInfo:
    now = time.monotonic()
    with _row_lock:
        hit = _rows.get(model_id)
    if hit is None or hit[1] <= now:
        with session_scope() as session:
            row = session.get(Model, model_id) if storable(model_id) else None
            if row is None:
                forget_model(model_id)
                raise NotFound(f"model {model_id} not found")
            info = ModelInfo(
                row.id, row.owner_id, row.task, row.label_type, row.storage_key, row.created_at.timestamp()
            )
        with _row_lock:
            _rows[model_id] = (info, now + ROW_CACHE_SECONDS)
    else:
        info = hit[0]
    if info.owner_id != owner_id:
        raise NotFound(f"model {model_id} not found")
    return info


# -- batching ---------------------------------------------------------------------------------
@dataclass
class _Item:
    sentences: list[Sentence]
    all_classes: bool
    future: asyncio.Future[None]


class BatcherClosed(Exception):
    pass


# A model call holds at most this many tokens per sentence of the micro-batch on average, so
# long texts run in fewer sentences a call: 24 texts of 10,000 characters in one call held small
# requests for 3.3 s.
TOKENS_PER_SENTENCE = 32


def _parts(sentences: list[Sentence], max_sentences: int, max_tokens: int) -> list[list[Sentence]]:
    """Consecutive parts of at most ``max_sentences`` and ``max_tokens`` (or one sentence)."""
    parts: list[list[Sentence]] = []
    part: list[Sentence] = []
    tokens = 0
    for sentence in sentences:
        if part and (len(part) == max_sentences or tokens + len(sentence) > max_tokens):
            parts.append(part)
            part, tokens = [], 0
        part.append(sentence)
        tokens += len(sentence)
    if part:
        parts.append(part)
    return parts


class Batcher:
    def __init__(
        self,
        model: Any,
        executor: ThreadPoolExecutor,
        wait_s: float,
        max_sentences: int,
        parallel: int = 1,
        precision: str = "float32",
    ) -> None:
        self.model = model
        self.precision = precision
        self.executor = executor
        self.parallel = parallel
        self.wait_s = wait_s
        self.max_sentences = max_sentences
        self.max_tokens = max_sentences * TOKENS_PER_SENTENCE
        self.queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self.closed = False
        self._last_requests = 1
        self._held: _Item | None = None
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def predict(self, sentences: list[Sentence], all_classes: bool) -> None:
        if self.closed:
            raise BatcherClosed
        # A large request goes in as parts of at most max_sentences and max_tokens, no more than
        # ``parallel`` of them queued or running at a time: no model call is bigger than a part,
        # and requests that come in meanwhile queue between its parts, not behind all of them
        # (248 texts of 10,000 characters held every other request for 28 s).
        loop = asyncio.get_running_loop()
        waiting: set[asyncio.Future[None]] = set()
        try:
            for part in _parts(sentences, self.max_sentences, self.max_tokens):
                while len(waiting) >= self.parallel:
                    done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        future.result()
                if self.closed:
                    # Nothing queued after close() is run: the caller starts over on a new batcher.
                    raise BatcherClosed
                future = loop.create_future()
                waiting.add(future)
                self.queue.put_nowait(_Item(part, all_classes, future))
            if waiting:
                await asyncio.gather(*waiting)
        except BaseException:
            for future in waiting:  # the rest is skipped, not computed for no one
                future.cancel()
            raise

    def close(self) -> None:
        """Finish what is queued, then stop (new requests go to a fresh batcher)."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    async def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        items, size, stop = [first], len(first.sentences), False
        tokens = sum(len(s) for s in first.sentences)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.wait_s if self._last_requests > 1 else 0.0)
        while size < self.max_sentences and tokens < self.max_tokens:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                # Waiting only pays while fewer requests are here than the last batch served
                # (the load level): at a steady load the batch is complete and waiting more would
                # only idle the model.
                if remaining <= 0 or len(items) >= self._last_requests:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
            if item is None:
                stop = True
                break
            item_tokens = sum(len(s) for s in item.sentences)
            if size + len(item.sentences) > self.max_sentences or tokens + item_tokens > self.max_tokens:
                self._held = item  # the first of the next batch: this one is full
                break
            items.append(item)
            size += len(item.sentences)
            tokens += item_tokens
        return items, stop

    def _predict(self, sentences: list[Sentence], all_classes: bool) -> None:
        self.model.predict(
            sentences,
            mini_batch_size=max(1, len(sentences)),
            return_probabilities_for_all_classes=all_classes,
            precision=self.precision,
        )

    async def _run(self) -> None:
        # A slot is taken before a batch is collected, so requests that arrive while every slot
        # is busy join the next batch instead of waiting in many small ones.
        slots = asyncio.Semaphore(self.parallel)
        running: set[asyncio.Task[None]] = set()
        stop = False
        while not stop:
            await slots.acquire()
            first, self._held = self._held or await self.queue.get(), None
            if first is None:
                slots.release()
                break
            items, stop = await self._collect(first)
            self._last_requests = len(items)
            task = asyncio.get_running_loop().create_task(self._run_batch(items, slots))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _run_batch(self, items: list[_Item], slots: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        # a request whose client went away (its future cancelled) is not computed
        items = [i for i in items if not i.future.done()]
        groups = [g for flag in (False, True) if (g := [i for i in items if i.all_classes is flag])]
        released = False
        try:
            for n, group in enumerate(groups, 1):
                sentences = [s for i in group for s in i.sentences]
                PREDICT_BATCH_SIZE.observe(len(sentences))
                error: Exception | None = None
                try:
                    await loop.run_in_executor(self.executor, self._predict, sentences, group[0].all_classes)
                    PREDICT_SENTENCES.inc(len(sentences))
                except Exception as e:
                    error = e
                if n == len(groups):
                    # The slot goes back before these requests wake: asyncio runs callbacks in
                    # order, so the batcher starts the next batch (on the inference thread) first,
                    # and the event loop answers this one while the model runs.
                    slots.release()
                    released = True
                for item in group:
                    if item.future.done():
                        continue
                    if error is None:
                        item.future.set_result(None)
                    else:
                        item.future.set_exception(error)
        except BaseException:  # cancelled (shutdown): no request may wait forever
            for item in items:
                item.future.cancel()
            raise
        finally:
            if not released:
                slots.release()


# -- the model cache --------------------------------------------------------------------------
@dataclass
class LoadedModel:
    info: ModelInfo
    model: Any
    batcher: Batcher
    directory: Path


def _load(info: ModelInfo, cache_root: Path) -> tuple[Any, Path]:
    from engine.models.base import load_model

    cache_root.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{info.id}-", dir=cache_root))
    try:
        get_storage().get_dir(info.storage_key, directory)
        model = load_model(directory)
        model.eval()
        return model, directory
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _freeze_heap(collect: bool) -> None:
    """Move every object alive now (imports, the app, the loaded models) out of the cyclic
    collector's generations. A full collection scans every tracked object - with torch and the
    web stack imported ~200k, ~100 ms holding the GIL - and stalled predict every few seconds
    (p99 ~200 ms at concurrency 16). ``collect``: after dropping a model, first free its cycles
    (one such stall, on a rare event)."""
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


class ModelCache:
    def __init__(self, settings: Settings) -> None:
        self.size = settings.model_cache_size
        self.wait_s = settings.predict_batch_wait_ms / 1000.0
        self.max_sentences = settings.predict_max_micro_batch
        self.cache_root = process_folder(private_root("models"))
        # One batch per thread at a time; a model's batches may run side by side (inference only
        # reads the weights).
        self.parallel = settings.predict_threads
        # Resolved once ("auto" reads the CPU's flags); models are served on the CPU.
        self.precision = resolve_precision(settings.predict_precision, torch.device("cpu"))
        self.executor = ThreadPoolExecutor(settings.predict_threads, thread_name_prefix="predict")
        self._torch_threads: int | None = None
        if settings.predict_torch_threads:
            self._torch_threads = torch.get_num_threads()
            torch.set_num_threads(settings.predict_torch_threads)
        self.entries: OrderedDict[str, LoadedModel] = OrderedDict()
        self.loading: dict[str, asyncio.Future[LoadedModel]] = {}

    @staticmethod
    def _key(info: ModelInfo) -> str:
        return f"{info.id}@{info.created_at}"

    async def get(self, info: ModelInfo) -> LoadedModel:
        key = self._key(info)
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            return entry
        # One load per model at a time, in a task of its own that every request for the model
        # awaits: a request cancelled meanwhile (its client went away) does not stop the load's
        # thread, and the model it loads still becomes an entry. Awaited directly, a cancelled
        # load's folder was left on disk in no entry, until the process ended.
        load = self.loading.get(key)
        if load is None:
            load = asyncio.ensure_future(self._load_entry(info, key))
            self.loading[key] = load
            load.add_done_callback(lambda done: self._loaded(key, done))
        return await asyncio.shield(load)

    def _loaded(self, key: str, load: asyncio.Future[LoadedModel]) -> None:
        self.loading.pop(key, None)
        if not load.cancelled():
            load.exception()  # retrieved: its requests may all have gone away

    async def _load_entry(self, info: ModelInfo, key: str) -> LoadedModel:
        loop = asyncio.get_running_loop()
        try:
            model, directory = await loop.run_in_executor(self.executor, _load, info, self.cache_root)
        except StorageUnavailable:
            raise  # an outage: 503 with Retry-After, and no word of where storage lives
        except FileNotFoundError:
            # as GET /models/{id}/download says it; no retry will bring them back
            raise NotFound(f"the files of model {info.id} are missing from storage") from None
        except ModelFileError as e:
            # Damaged in storage: not the request's fault and not passing either. The file by
            # its name in the model folder, never by the server's path.
            reason = e.reason.replace(f"{e.path.parent}/", "")
            raise ModelDamaged(f"model {info.id} cannot be loaded: {e.path.name}: {reason}") from e
        except (OSError, ValueError) as e:
            exhausted = exhausted_resource(e)
            reason = (
                type(e).__name__ if exhausted is None else f"the server is out of resources ({exhausted})"
            )
            raise Unavailable(f"model {info.id} could not be loaded: {reason}") from e
        MODEL_LOADS.inc()
        batcher = Batcher(
            model, self.executor, self.wait_s, self.max_sentences, self.parallel, self.precision
        )
        entry = LoadedModel(info, model, batcher, directory)
        self.entries[key] = entry  # the only load of this key: no other entry can be here
        evicted = len(self.entries) > self.size
        while len(self.entries) > self.size:
            _, old = self.entries.popitem(last=False)
            self._drop(old)
        _freeze_heap(collect=evicted)
        MODELS_LOADED.set(len(self.entries))
        return entry

    def _drop(self, entry: LoadedModel) -> None:
        entry.batcher.close()
        shutil.rmtree(entry.directory, ignore_errors=True)

    def evict(self, model_id: str) -> None:
        keys = [k for k, e in self.entries.items() if e.info.id == model_id]
        for key in keys:
            self._drop(self.entries.pop(key))
        if keys:
            _freeze_heap(collect=True)
        MODELS_LOADED.set(len(self.entries))

    def close(self) -> None:
        for entry in self.entries.values():
            self._drop(entry)
        self.entries.clear()
        shutil.rmtree(self.cache_root, ignore_errors=True)
        MODELS_LOADED.set(0)
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._torch_threads is not None:
            torch.set_num_threads(self._torch_threads)


# -- requests and responses -------------------------------------------------------------------
@dataclass
class Prepared:
    index: int
    sentence: Sentence
    offset: int | None  # where the sentence starts in its input text (None: pre-tokenized)


def prepare(request: PredictRequest, info: ModelInfo, settings: Settings) -> list[Prepared]:
    """Validate limits and the task, then split and tokenize (see ``needs_thread``)."""
    if info.task not in PREDICTABLE_TASKS:
        noun = TASK_NOUNS.get(info.task, f"{info.task} model")
        raise Invalid(
            f"model {info.id} is a {noun}, which has no labels to predict; only sequence taggers and "
            "text classifiers predict (GET /models lists them)",
            [FieldError(["path", "model_id"], f"a {noun} cannot predict")],
        )
    if request.task is not None and request.task != info.task:
        raise Invalid(
            f"model {info.id} is a {info.task} model, not {request.task}",
            [FieldError(["body", "task"], f"the model's task is {info.task}")],
        )
    field_name = "texts" if request.texts is not None else "sentences"
    inputs: list[Any] = request.texts if request.texts is not None else request.sentences or []
    if not inputs:
        raise Invalid("the batch is empty", [FieldError(["body", field_name], "give at least one item")])
    if len(inputs) > settings.predict_max_batch:
        raise Invalid(
            f"too many items: {len(inputs)} > {settings.predict_max_batch}",
            [FieldError(["body", field_name], f"at most {settings.predict_max_batch} items per request")],
        )
    from engine.tokenization import is_blank

    limit = settings.predict_max_text_chars
    errors = []
    for i, item in enumerate(inputs):
        # a pre-tokenized sentence counts as its text: the tokens joined by single spaces
        length = len(item) if isinstance(item, str) else sum(len(t) for t in item) + max(len(item) - 1, 0)
        if length > limit:
            errors.append(FieldError(["body", field_name, i], f"{length} characters; the limit is {limit}"))
        # Blank as the tokenizer sees it: a text of only zero-width spaces or control characters
        # has no token, and its text vanished from the answer without a word.
        elif (isinstance(item, str) and is_blank(item)) or (not isinstance(item, str) and not item):
            errors.append(FieldError(["body", field_name, i], "empty"))
        elif not isinstance(item, str) and any(is_blank(t) for t in item):
            errors.append(FieldError(["body", field_name, i], "tokens must not be empty or blank"))
    if errors:
        raise Invalid(errors[0].message if len(errors) == 1 else f"{len(errors)} invalid items", errors)

    prepared: list[Prepared] = []
    max_sentences = limits.PREDICT_MAX_SENTENCES
    if request.texts is None:
        # One sentence each: more only where TAGSMITH_PREDICT_MAX_BATCH is set above the limit.
        if len(inputs) > max_sentences:
            raise Invalid(
                f"too many sentences: {len(inputs):,} > {max_sentences:,}",
                [FieldError(["body", field_name], f"at most {max_sentences:,} sentences per request")],
            )
        for i, tokens in enumerate(inputs):
            prepared.append(Prepared(i, Sentence(list(tokens)), None))
        return prepared
    split = request.split_sentences
    if split is None:
        split = info.task == "sequence_tagging"
    from engine.tokenization import sentences_from_text

    tokenizer = request.tokenizer or "segtok"
    for i, text in enumerate(inputs):
        # Sentences of one text are linked, so models with document context see their neighbours.
        whole = [Sentence(text, use_tokenizer=tokenizer == "segtok")]
        for sentence in sentences_from_text(text, tokenizer) if split else whole:
            if len(sentence):
                prepared.append(Prepared(i, sentence, sentence.metadata.get("offset", 0)))
        if len(prepared) > max_sentences:
            # Refused at the first text past the limit: splitting the rest would only build more
            # sentences to throw away.
            raise Invalid(
                f"too many sentences: the texts split into more than {max_sentences:,}",
                [
                    FieldError(
                        ["body", field_name],
                        f"the first {i + 1} of {len(inputs)} texts split into {len(prepared):,} sentences; "
                        f"at most {max_sentences:,} per request: send fewer or shorter texts",
                    )
                ],
            )
    return prepared


def check_probability_cells(prepared: list[Prepared], model: Any) -> None:
    """Refuse (422) a ``return_probabilities_for_all_classes`` request whose answer would hold
    more than ``PREDICT_MAX_PROBABILITY_CELLS`` probabilities. Needs the loaded model (its
    classes), so it runs after ``prepare``, once the model is loaded and before inference."""
    tagger = model.label_kind in ("span", "token")
    # the classes the answer lists: a tagger's internal tags (O and BIOES prefixes included)
    classes = len((model.tag_dictionary if tagger else model.label_dictionary).get_items())
    items = sum(len(p.sentence) for p in prepared) if tagger else len(prepared)
    cells = items * classes
    limit = limits.PREDICT_MAX_PROBABILITY_CELLS
    if cells > limit:
        what = "tokens" if tagger else "sentences"
        per = "tags" if tagger else "classes"
        raise Invalid(
            f"the answer would hold {cells:,} probabilities ({items:,} {what} x {classes:,} {per}); "
            f"at most {limit:,} per request",
            [
                FieldError(
                    ["body", "return_probabilities_for_all_classes"],
                    f"{cells:,} probabilities ({items:,} {what} x {classes:,} {per}) exceed the limit of "
                    f"{limit:,}: send fewer or shorter texts, or leave return_probabilities_for_all_classes off",
                )
            ],
        )


def check_crf_work(prepared: list[Prepared], model: Any, field_name: str) -> None:
    """Refuse (422) a request whose CRF decoding would take more than ``PREDICT_MAX_CRF_WORK``
    (tokens x tags²). Needs the loaded model (its CRF), so it runs once the model is loaded."""
    crf = getattr(model, "crf", None)
    if crf is None:
        return
    tags = int(crf.num_tags)
    tokens = sum(len(p.sentence) for p in prepared)
    limit = limits.PREDICT_MAX_CRF_WORK
    if tokens * tags * tags <= limit:
        return
    most = limit // (tags * tags)
    raise Invalid(
        f"{tokens:,} tokens are too many for one request to this model: its CRF has {tags:,} tags, and "
        f"decoding costs tokens x tags²; at most {most:,} tokens per request",
        [
            FieldError(
                ["body", field_name],
                f"{tokens:,} tokens; this model's CRF ({tags:,} tags) decodes at most {most:,} a request: "
                "send fewer or shorter texts",
            )
        ],
    )


def _offset(pos: int | None, offset: int | None) -> int | None:
    return None if pos is None or offset is None else pos + offset


def _scores(labels: list[Any]) -> list[dict[str, Any]]:
    return [{"value": lb.value, "score": float(lb.score)} for lb in labels]


def _distribution(dist: Any) -> list[dict[str, Any]]:
    """Per-class probabilities as ``[{value, score}]``, most likely first."""
    pairs = dist.items() if isinstance(dist, dict) else ((d["value"], d["score"]) for d in dist)
    return sorted(({"value": str(v), "score": float(sc)} for v, sc in pairs), key=lambda d: -d["score"])


def format_sentence(p: Prepared, info: ModelInfo, kind: str, all_classes: bool) -> dict[str, Any]:
    """One sentence's result. ``kind`` is the model's label kind: ``span`` (spans, and BIOES tags
    derived from them on the tokens), ``token`` (a tag per token) or ``sentence`` (labels)."""
    s = p.sentence
    label_type = info.label_type
    text = s.to_original_text()
    out: dict[str, Any] = {
        "index": p.index,
        "text": text,
        "start": p.offset,
        "end": None if p.offset is None else p.offset + len(text),
    }
    distribution = s.metadata.get(distribution_key(label_type)) if all_classes else None
    base = p.offset
    if base is None:
        tokens: list[dict[str, Any]] = [{"text": t.text, "start": None, "end": None} for t in s.tokens]
    else:
        tokens = [
            {
                "text": t.text,
                "start": None if t.start_pos is None else t.start_pos + base,
                "end": None if t.end_pos is None else t.end_pos + base,
            }
            for t in s.tokens
        ]
    out["tokens"] = tokens
    if kind == "sentence":
        labels = sorted(s.get_labels(label_type), key=lambda lb: -lb.score)
        out["labels"] = _scores(labels)
        if distribution is not None:
            out["all_labels"] = _distribution(distribution)
        return out
    if kind == "span":
        spans = s.get_spans(label_type)
        outside = (
            distribution if isinstance(distribution, list) and len(distribution) == len(tokens) else None
        )
        # Outside spans a confidence exists only when the per-tag probabilities were asked for.
        for k, token in enumerate(tokens):
            token["tag"] = "O"
            token["confidence"] = float(outside[k]["O"]) if outside and "O" in outside[k] else None
        for span in spans:
            start, end, value, score = span.start, span.end, span.label.value, float(span.label.score)
            if end - start == 1:
                tokens[start]["tag"] = "S-" + value
            else:
                tokens[start]["tag"] = "B-" + value
                for k in range(start + 1, end - 1):
                    tokens[k]["tag"] = "I-" + value
                tokens[end - 1]["tag"] = "E-" + value
            for k in range(start, end):
                tokens[k]["confidence"] = score
        out["spans"] = [
            {
                "text": sp.text,
                "start": _offset(sp.start_pos, p.offset),
                "end": _offset(sp.end_pos, p.offset),
                "start_token": sp.start,
                "end_token": sp.end,
                "label": sp.label.value,
                "confidence": float(sp.label.score),
            }
            for sp in spans
        ]
    else:
        for token, t in zip(tokens, s.tokens, strict=True):
            label = t.labels.get(label_type)
            token["tag"] = label.value if label is not None else None
            token["confidence"] = float(label.score) if label is not None else None
    if isinstance(distribution, list) and len(distribution) == len(tokens):
        for token, dist in zip(tokens, distribution, strict=True):
            token["all_tags"] = _distribution(dist)
    return out


# Above this many input characters, tokenizing and formatting leave the event loop.
INLINE_CHARS = 4000


def input_chars(request: PredictRequest) -> int:
    if request.texts is not None:
        return sum(len(t) for t in request.texts)
    return sum(len(tok) + 1 for s in request.sentences or [] for tok in s)


def is_large(request: PredictRequest) -> bool:
    """Worth work off the event loop (and, in the fast path, watching for the client leaving)."""
    return input_chars(request) > INLINE_CHARS


async def predict(
    cache: ModelCache,
    owner_id: str,
    model_id: str,
    request: PredictRequest,
    settings: Settings,
    large: bool | None = None,
) -> dict[str, Any]:
    """``large``: ``is_large(request)``, when the caller has it already."""
    cached = _cached_info(model_id)
    if cached is not None and cached.owner_id == owner_id:
        info = cached
    else:
        # A database round trip: off the event loop.
        info = await asyncio.get_running_loop().run_in_executor(None, model_info, owner_id, model_id)
    if large is None:
        large = is_large(request)
    loop = asyncio.get_running_loop()
    if large:
        prepared = await loop.run_in_executor(None, prepare, request, info, settings)
    else:
        prepared = prepare(request, info, settings)
    all_classes = request.return_probabilities_for_all_classes
    sentences = [p.sentence for p in prepared]
    for _ in range(3):
        entry = await cache.get(info)
        if all_classes:
            check_probability_cells(prepared, entry.model)
        check_crf_work(prepared, entry.model, "texts" if request.texts is not None else "sentences")
        if not sentences:
            break
        try:
            await entry.batcher.predict(sentences, all_classes)
            break
        except BatcherClosed:
            continue
    else:
        raise Unavailable(f"model {info.id} was unloaded repeatedly while predicting; try again")
    kind = entry.model.label_kind
    return {
        "model_id": info.id,
        "task": info.task,
        "label_type": info.label_type,
        "sentences": (
            await loop.run_in_executor(None, _format_all, prepared, info, kind, all_classes)
            if large
            else _format_all(prepared, info, kind, all_classes)
        ),
    }


def _format_all(
    prepared: list[Prepared], info: ModelInfo, kind: str, all_classes: bool
) -> list[dict[str, Any]]:
    return [format_sentence(p, info, kind, all_classes) for p in prepared]
