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
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
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
_pool: ProcessPoolExecutor | None = None


def _readers() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            from service.settings import get_settings

            context = multiprocessing.get_context("forkserver")
            # The server imports the readers (and the main module, which every child would
            # otherwise import again) once; each reader process is forked from it.
            context.set_forkserver_preload(["__main__", __name__])
            _pool = ProcessPoolExecutor(
                get_settings().corpus_readers, mp_context=context, max_tasks_per_child=1
            )
        return _pool


def _forget(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    # Python 3.11 leaves a broken pool's other (idle) reader waiting for work forever, and its
    # manager thread joining it: one stuck process and thread per death, and a hang at exit.
    for process in list((pool._processes or {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=False)


def summarize_corpus(
    format: str, paths: dict[str, Path], options: dict[str, Any], sampled: SampleMissingSplits
) -> CorpusSummary:
    """Read the files in a reader process; raises the readers' own errors as they would."""
    pool = _readers()
    try:
        future = pool.submit(_summarize, format, paths, options, sampled)
    except BrokenProcessPool:
        # broken by an earlier upload's reader (a broken pool takes no more work): a new one
        _forget(pool)
        pool = _readers()
        future = pool.submit(_summarize, format, paths, options, sampled)
    try:
        result = future.result()
    except BrokenProcessPool:
        _forget(pool)
        raise ReaderProcessDied("the process reading the corpus ended without an answer") from None
    if isinstance(result, _FormatProblem):
        raise CorpusFormatError(result.file, result.line, result.reason)
    if isinstance(result, _OptionProblem):
        raise ReaderOptionError(result.message, result.options)
    return result


def close_readers() -> None:
    """Stop the reader processes (the API's shutdown: an upload still being read fails)."""
    pool = _pool
    if pool is not None:
        _forget(pool)
