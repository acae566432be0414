"""Reading an uploaded corpus in a process of its own.

A parsed corpus takes 16 (CoNLL-U) to 65 (column files) times its file's size in memory: a
190 MB column upload took the API to 12.3 GB, and kept 12.1 GB after. Its sentences link to each
other, so they are freed only by a full garbage collection, which then held the interpreter for
25 s and stalled every request, predict and /health included. Here each upload is read by a
fresh process forked from a small server (``forkserver``: safe with the API's threads, and cheap
after the first), which gives back only the numbers the API keeps and ends, taking the memory
with it. At most ``TAGSMITH_CORPUS_READERS`` read at once; further uploads wait their turn.
"""

from __future__ import annotations

import multiprocessing
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from engine.data import SampleMissingSplits
from engine.readers import read_corpus_files
from engine.readers.errors import CorpusFormatError, ReaderOptionError


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


_lock = threading.Lock()
_slots: threading.BoundedSemaphore | None = None
_running: set[BaseProcess] = set()


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    # The server imports the readers (and the main module, which every child would otherwise
    # import again) once; each reader process is forked from it.
    context.set_forkserver_preload(["__main__", __name__])
    return context


def _reader_slots() -> threading.BoundedSemaphore:
    global _slots
    with _lock:
        if _slots is None:
            from service.settings import get_settings

            _slots = threading.BoundedSemaphore(get_settings().corpus_readers)
        return _slots


def _read_and_answer(
    answer: Connection,
    format: str,
    paths: dict[str, Path],
    options: dict[str, Any],
    sampled: SampleMissingSplits,
) -> None:
    try:
        result: object = _summarize(format, paths, options, sampled)
    except Exception as e:  # the API raises it as the reader did (MemoryError: a 503)
        result = e
    try:
        answer.send(result)
    except Exception:  # an exception that does not pickle
        answer.send(RuntimeError(f"{type(result).__name__}: {result}"))
    answer.close()


def summarize_corpus(
    format: str, paths: dict[str, Path], options: dict[str, Any], sampled: SampleMissingSplits
) -> CorpusSummary:
    """Read the files in a reader process; raises the readers' own errors as they would."""
    # A process per upload, not a ProcessPoolExecutor: Python 3.11's pool, with processes that
    # end after each task, could hang the interpreter's exit joining its manager thread (a CI
    # run hung 70 minutes after its last test), and a pool broken by one dead reader needed
    # rebuilding by hand.
    with _reader_slots():
        context = _context()
        receive, send = context.Pipe(duplex=False)
        process = context.Process(
            target=_read_and_answer, args=(send, format, paths, options, sampled), daemon=True
        )
        with _lock:
            _running.add(process)
        try:
            process.start()
            send.close()  # only the reader's copy stays open: its end is our EOF
            try:
                result = receive.recv()
            except EOFError:
                raise ReaderProcessDied("the process reading the corpus ended without an answer") from None
        finally:
            send.close()
            receive.close()
            # Reaped now, not left a zombie until the next start; one still running (this thread
            # was interrupted) is stopped.
            if process.pid is not None:
                process.join(timeout=10)
                if process.exitcode is None:
                    process.kill()
                    process.join()
            with _lock:
                _running.discard(process)
    if isinstance(result, BaseException):
        raise result
    if isinstance(result, _FormatProblem):
        raise CorpusFormatError(result.file, result.line, result.reason)
    if isinstance(result, _OptionProblem):
        raise ReaderOptionError(result.message, result.options)
    assert isinstance(result, CorpusSummary)
    return result


def close_readers() -> None:
    """Stop the reader processes (the API's shutdown: an upload still being read fails)."""
    with _lock:
        running = list(_running)
    for process in running:
        if process.is_alive():
            process.kill()
