"""Reading a stored corpus for a request (evaluate a model on a split, make a text corpus of
one): its files copied to a request folder, read in a reader process (``service.corpus_reading``),
and the reader's failures answered as the client can act on them."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from service.corpus_reading import TIMEOUT_SETTING, ReaderProcessDied, ReadTooSlow
from service.errors import Conflict, Unavailable
from service.process_folders import REQUESTS_KIND, own_folder
from service.storage import get_storage
from service.stored_corpora import StoredCorpusUnreadable, copy_stored_files

T = TypeVar("T")


def read_stored(corpus_id: str, files: dict[str, str], what: str, read: Callable[[dict[str, Path]], T]) -> T:
    """``read(paths)`` of corpus ``corpus_id``'s files (split -> key) copied locally. ``what``
    names the read in a timeout's message ("for the test split"). Raises Conflict when this
    version's readers refuse a stored file or the read takes longer than the limit (trying again
    does not help: a smaller corpus or a higher limit does), Unavailable when the reader ended."""
    with tempfile.TemporaryDirectory(prefix="stored-", dir=own_folder(REQUESTS_KIND)) as folder:
        paths = copy_stored_files(get_storage(), files, Path(folder))
        try:
            return read(paths)
        except StoredCorpusUnreadable as e:
            raise Conflict(f"corpus {corpus_id}: {e}") from None
        except ReadTooSlow as e:
            raise Conflict(
                f"corpus {corpus_id}: reading its files {what} was stopped after {e.seconds:g} s "
                f"({TIMEOUT_SETTING}); use a smaller corpus, or ask the operator to raise {TIMEOUT_SETTING}"
            ) from None
        except ReaderProcessDied:
            raise Unavailable(
                f"the server could not finish reading corpus {corpus_id} (its reader process ended, "
                "most likely out of memory); try again later"
            ) from None
