"""Reading a corpus in a process of its own: an upload, to check it and count it, a stored
corpus's split that a model is evaluated on, and a stored corpus's text for a text corpus.

A parsed corpus takes 16 (CoNLL-U) to 65 (column files) times its file's size in memory: a
190 MB column upload took the API to 12.3 GB, and kept 12.1 GB after. Its sentences link to each
other, so they are freed only by a full garbage collection, which then held the interpreter for
25 s and stalled every request, predict and /health included. Here each read is done by a
fresh process forked from a small server (``forkserver``: safe with the API's threads, and cheap
after the first), which gives back only what the API keeps (an upload's numbers, one split's
sentences, the corpus's text) and ends, taking the memory with it. At most ``TAGSMITH_CORPUS_READERS`` read at once;
further reads wait their turn. A read that takes longer than
``TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS`` (its waiting turn not counted) is stopped.

The answer comes back pickled through a pipe from the API's own child, never from anywhere
else: nothing a client sends is unpickled (the child parses the client's files and pickles what
it made of them).
"""

from __future__ import annotations

import gc
import multiprocessing
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from engine.data import SampleMissingSplits, Sentence
from engine.language_model.corpus import corpus_texts
from engine.readers import read_corpus_files
from engine.readers.errors import CorpusFormatError, ReaderOptionError
from engine.readers.files import gc_paused
from service.stored_corpora import read_copied_corpus, read_copied_split

TIMEOUT_SETTING = "TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS"
_POLL_STEP_S = 3600.0  # the longest single wait for a reader's answer


@dataclass(frozen=True)
class CorpusSummary:
    """What the API keeps of a corpus it read: ``Corpus.statistics()`` (without its name), the
    label types and whether the source marked documents."""

    statistics: dict[str, Any]
    label_types: dict[str, str]
    has_documents: bool


@dataclass(frozen=True)
class _FormatProblem:  # the readers' errors do not survive pickling (their arguments are not args)
    file: str
    line: int
    reason: str


@dataclass(frozen=True)
class _OptionProblem:
    message: str
    options: tuple[str, ...]


class ReaderProcessDied(RuntimeError):
    """The process reading the corpus ended without an answer (the kernel's OOM killer, say)."""


class ReadTooSlow(RuntimeError):
    """The read took longer than the limit (``TAGSMITH_CORPUS_READ_TIMEOUT_SECONDS``) and was stopped."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"reading took longer than {seconds:g} s")
        self.seconds = seconds


# Tests only (tests/service/reader_hooks.py): called in the reader process before it reads, to make
# it slow or end it. A module-level function (or a partial of one), pickled by its name.
test_hook: Callable[[], object] | None = None


def _summarize(
    format: str, paths: dict[str, Path], options: dict[str, Any], sampled: SampleMissingSplits
) -> CorpusSummary | _FormatProblem | _OptionProblem:
    try:
        corpus = read_corpus_files(format, paths, options, sample_missing_splits=sampled)
    except CorpusFormatError as e:
        return _FormatProblem(e.file, e.line, e.reason)
    except ReaderOptionError as e:
        return _OptionProblem(str(e), e.options)
    statistics = corpus.statistics()
    statistics.pop("name", None)
    return CorpusSummary(statistics, dict(corpus.label_kinds()), bool(corpus.has_documents()))


@dataclass
class _LinkedSentences:
    """A split's sentences sent without their links, which say (as indexes into ``sentences``,
    -1 for none) who their neighbours were: pickled linked, one sentence drags in the next, and a
    dev split sampled from train took the whole train along (EWT's: 37 MB instead of 3)."""

    sentences: list[Sentence]  # the split's (the first ``count``), then neighbours kept as context
    count: int
    links: list[tuple[int, int]]  # (previous, next) of each sentence

    def relinked(self) -> list[Sentence]:
        for sentence, (previous, following) in zip(self.sentences, self.links, strict=True):
            sentence.previous_sentence = self.sentences[previous] if previous >= 0 else None
            sentence.next_sentence = self.sentences[following] if following >= 0 else None
        return self.sentences[: self.count]


def _context_neighbours(split: list[Sentence], context_tokens: int) -> list[Sentence]:
    """Sentences of other splits within ``context_tokens`` tokens of a sentence of ``split``, on
    either side: a model with document context (``use_context``) reads their words."""
    index = {id(s) for s in split}
    found: dict[int, Sentence] = {}
    for sentence in split:
        for side in ("previous_sentence", "next_sentence"):
            tokens, neighbour = 0, getattr(sentence, side)
            # A sentence of the split ends the walk: its own walk keeps what lies beyond it.
            while neighbour is not None and tokens < context_tokens and id(neighbour) not in index:
                found.setdefault(id(neighbour), neighbour)
                tokens += len(neighbour)
                neighbour = getattr(neighbour, side)
    return list(found.values())


def _detached(split: list[Sentence], context_tokens: int) -> _LinkedSentences:
    context = _context_neighbours(split, context_tokens)
    sentences = split + context
    index = {id(s): i for i, s in enumerate(sentences)}
    links = [(index.get(id(s.previous_sentence), -1), index.get(id(s.next_sentence), -1)) for s in sentences]
    # Only their words are read (the reader process ends after sending: changing them is safe).
    sentences[len(split) :] = [Sentence([t.text for t in s.tokens]) for s in context]
    for sentence in sentences:
        sentence.previous_sentence = sentence.next_sentence = None
    return _LinkedSentences(sentences, len(split), links)


def _only(sentences: list[Sentence], label_type: str) -> None:
    """Drop every label but ``label_type``'s: a CoNLL-U token carries 4-10 of them (lemma, xpos,
    feats ...), and sending them all made EWT train's split take 6 s instead of 2."""
    for sentence in sentences:
        sentence.labels = {k: v for k, v in sentence.labels.items() if k == label_type}
        sentence.spans = {k: v for k, v in sentence.spans.items() if k == label_type}
        for token in sentence.tokens:
            kept = token.labels.get(label_type)
            token.labels = {} if kept is None else {label_type: kept}


def _read_split(
    format: str,
    paths: dict[str, Path],
    options: dict[str, Any],
    split: str,
    context_tokens: int,
    label_type: str | None,
    label_kinds: Mapping[str, str] | None,
) -> _LinkedSentences:
    sentences = read_copied_split(format, options, paths, split, label_kinds)
    if label_type is not None:
        _only(sentences, label_type)
    return _detached(sentences, context_tokens)


_lock = threading.Lock()
_slots: tuple[int, threading.BoundedSemaphore] | None = None  # for how many readers, the semaphore
_running: set[BaseProcess] = set()


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    # The server imports the readers (and the main module, which every child would otherwise
    # import again) once; each reader process is forked from it.
    context.set_forkserver_preload(["__main__", __name__])
    return context


def _reader_slots() -> threading.BoundedSemaphore:
    """The semaphore for ``TAGSMITH_CORPUS_READERS`` as the settings say now: a changed setting
    (``reset_settings``) takes effect for the reads that start from then on; those under the old
    semaphore finish and give their slot back to it."""
    global _slots
    from service.settings import get_settings

    wanted = get_settings().corpus_readers
    with _lock:
        if _slots is None or _slots[0] != wanted:
            _slots = (wanted, threading.BoundedSemaphore(wanted))
        return _slots[1]


def _read_and_answer(
    answer: Connection, hook: Callable[[], object] | None, work: Callable[..., object], args: tuple[Any, ...]
) -> None:
    # No cyclic collector in a process that reads once and ends: past the reader's own pause
    # (engine.readers.files.gc_paused), every full collection walked the whole parsed corpus
    # again (1.1 of the 1.2 s pickling EWT dev took; most of the 0.6 s trimming EWT train's
    # labels). Reference counting still frees what is dropped.
    gc.disable()
    try:
        if hook is not None:
            hook()
        result: object = work(*args)
    except Exception as e:  # the API raises it as the reader did (MemoryError: a 503)
        result = e
    try:
        answer.send(result)
    except Exception:  # an exception that does not pickle
        answer.send(RuntimeError(f"{type(result).__name__}: {result}"))
    answer.close()


def _stop(process: BaseProcess, answered: bool) -> None:
    """Reap the reader now, not leave a zombie until the next start: one that answered is ending
    by itself; one that did not (too slow, or this thread was interrupted) is killed."""
    if process.pid is None:
        return
    if answered:
        process.join(timeout=10)
    if process.exitcode is None:
        process.kill()
        process.join()


def _in_reader(work: Callable[..., object], *args: Any) -> object:
    """``work(*args)`` in a reader process, when a slot is free; its answer, or its exception
    raised here. Raises ReadTooSlow past the time limit, ReaderProcessDied when it ends unanswered."""
    # A process per read, not a ProcessPoolExecutor: Python 3.11's pool, with processes that
    # end after each task, could hang the interpreter's exit joining its manager thread (a CI
    # run hung 70 minutes after its last test), and a pool broken by one dead reader needed
    # rebuilding by hand.
    from service.settings import get_settings

    seconds = get_settings().corpus_read_timeout_seconds
    with _reader_slots():
        context = _context()
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_read_and_answer, args=(send, test_hook, work, args), daemon=True)
        with _lock:
            _running.add(process)
        answered = False
        try:
            process.start()
            send.close()  # only the reader's copy stays open: its end is our EOF
            # poll: True once the answer starts coming, or at EOF (the reader ended). In steps:
            # poll raises OverflowError past about 24.8 days (2**31 ms), and a limit set that
            # high ("no limit") made every read fail.
            deadline = time.monotonic() + seconds
            while not receive.poll(min(max(deadline - time.monotonic(), 0.0), _POLL_STEP_S)):
                if time.monotonic() >= deadline:
                    raise ReadTooSlow(seconds)
            try:
                # Unpickling a split makes its tokens and labels: as in reading, a paused
                # collector (EWT train's split: 0.4 s instead of 1.2).
                with gc_paused():
                    result = receive.recv()
            except (EOFError, OSError):  # OSError: it ended part way through its answer
                raise ReaderProcessDied("the process reading the corpus ended without an answer") from None
            answered = True
        finally:
            send.close()
            receive.close()
            _stop(process, answered)
            with _lock:
                _running.discard(process)
    if isinstance(result, BaseException):
        raise result
    return result


def summarize_corpus(
    format: str, paths: dict[str, Path], options: dict[str, Any], sampled: SampleMissingSplits
) -> CorpusSummary:
    """Read the files in a reader process; raises the readers' own errors as they would."""
    result = _in_reader(_summarize, format, paths, options, sampled)
    if isinstance(result, _FormatProblem):
        raise CorpusFormatError(result.file, result.line, result.reason)
    if isinstance(result, _OptionProblem):
        raise ReaderOptionError(result.message, result.options)
    assert isinstance(result, CorpusSummary)
    return result


def _read_texts(format: str, paths: dict[str, Path], options: dict[str, Any]) -> dict[str, list[str]]:
    corpus = read_copied_corpus(format, options, paths)
    return {split: list(corpus_texts(corpus, [split])) for split in corpus.splits()}


def read_texts(format: str, options: dict[str, Any], paths: dict[str, Path]) -> dict[str, list[str]]:
    """Each split's sentence texts (one a sentence) of the stored corpus whose files were copied
    to ``paths``, read in a reader process; raises as ``read_split`` does."""
    result = _in_reader(_read_texts, format, paths, options)
    assert isinstance(result, dict)
    return result


def read_split(
    format: str,
    options: dict[str, Any],
    paths: dict[str, Path],
    split: str,
    context_tokens: int = 0,
    label_type: str | None = None,
    label_kinds: Mapping[str, str] | None = None,
) -> list[Sentence]:
    """One split of the stored corpus whose files were copied to ``paths``
    (``service.stored_corpora.copy_stored_files``), read in a reader process; raises
    ``StoredCorpusUnreadable`` when this version's readers refuse a file. Its sentences keep
    their neighbours in the split, and those of other splits within ``context_tokens`` tokens
    (their words only) for a model with document context; with ``label_type``, that type's labels
    only. Only the files the split needs are parsed (``stored_corpora.read_copied_split``: with
    ``label_kinds``, the corpus's ``label_types``, a stored dev or test file of column files is
    read without train's)."""
    result = _in_reader(_read_split, format, paths, options, split, context_tokens, label_type, label_kinds)
    assert isinstance(result, _LinkedSentences)
    return result.relinked()


def close_readers() -> None:
    """Stop the reader processes (the API's shutdown: a read still running fails)."""
    with _lock:
        running = list(_running)
    for process in running:
        if process.is_alive():
            process.kill()
