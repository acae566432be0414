"""Benchmark: what reading a stored corpus costs the API process, read there (``in_process``) or in
a reader process (``reader``, what the service does): one split for ``POST /models/{id}/evaluate``
(``split``, the gold label type only) and every split's text for ``POST /corpora/{id}/text``
(``text``). The split is read from the files it needs (``files``: ``needed``, the service's way)
and, in a reader, as it was before (``every``: every stored file parsed, then the split taken), side
by side. One JSON line per case, each measured in a fresh process:

    .venv/bin/python bench/stored_reads.py            # UD English-EWT train + dev, the dev split
    .venv/bin/python bench/stored_reads.py --quick    # EWT dev as the only split

Fields: ``read``, ``where``, ``files``, ``sentences`` (of the split, or text lines over all splits),
``seconds`` (with the reader's process server already started, as in a running API),
``api_peak_growth_mb`` (the measuring process's peak resident memory above what it had before the
read: the reader process's own memory is not in it, it ends with the read).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DATA = REPO_ROOT.parent / "shared" / "data" / "ud_english_ewt"
# (read, where, files)
CASES = (
    ("split", "in_process", "needed"),
    ("split", "reader", "every"),
    ("split", "reader", "needed"),
    ("text", "in_process", "every"),
    ("text", "reader", "every"),
)


def _files(quick: bool) -> tuple[dict[str, Path], str]:
    """The stored corpus's split files and the split an evaluation reads."""
    if quick:
        return {"train": DATA / "dev.conllu"}, "train"
    return {"train": DATA / "train.conllu", "dev": DATA / "dev.conllu"}, "dev"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _every_file_split(paths: dict[str, Path], split: str) -> object:
    """In a reader: the split as the reader read it before it parsed only the files a split needs
    (every stored file, then the split, its upos labels only, detached as the reader sends it)."""
    from service.corpus_reading import _detached, _only
    from service.stored_corpora import read_copied_corpus

    sentences = list(getattr(read_copied_corpus("conllu", {}, paths), split))
    _only(sentences, "upos")
    return _detached(sentences, 0)


def measure(read: str, where: str, files: str, quick: bool) -> dict[str, object]:
    from engine.language_model.corpus import corpus_texts
    from service.corpus_reading import _in_reader, _LinkedSentences, read_split, read_texts
    from service.stored_corpora import read_copied_corpus, read_copied_split

    paths, split = _files(quick)
    # The API's forkserver is warm after its first read; start it (and import what reading
    # imports) before measuring, with a read of a two-sentence file.
    with tempfile.TemporaryDirectory() as folder:
        tiny = Path(folder) / "tiny.conllu"
        tiny.write_text("1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n\n" * 2)
        read_texts("conllu", {}, {"train": tiny}) if where == "reader" else read_copied_corpus(
            "conllu", {}, {"train": tiny}
        )
    before = _peak_mb()
    started = time.perf_counter()
    if read == "text":
        if where == "reader":
            sentences = sum(len(lines) for lines in read_texts("conllu", {}, paths).values())
        else:
            corpus = read_copied_corpus("conllu", {}, paths)
            sentences = sum(len(list(corpus_texts(corpus, [s]))) for s in corpus.splits())
    elif where == "in_process":
        sentences = len(read_copied_split("conllu", {}, paths, split))
    elif files == "needed":
        sentences = len(read_split("conllu", {}, paths, split, 0, "upos"))
    else:
        # read_split's own way to the reader and back (private: the old read is not the service's)
        linked = _in_reader(_every_file_split, paths, split)
        assert isinstance(linked, _LinkedSentences)
        sentences = len(linked.relinked())
    seconds = time.perf_counter() - started
    return {
        "benchmark": "stored_reads",
        "read": read,
        "where": where,
        "files": files,
        "split": split if read == "split" else "all",
        "sentences": sentences,
        "seconds": round(seconds, 3),
        "api_peak_growth_mb": round(_peak_mb() - before, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="EWT dev as the only split")
    parser.add_argument("--one", nargs=3, metavar=("READ", "WHERE", "FILES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(*args.one, args.quick)))
        return 0
    missing = [p for p in _files(args.quick)[0].values() if not p.is_file()]
    if missing:
        print(f"error: {missing[0]} not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    for case in CASES:
        # a process per case: a peak resident size only grows
        command = [sys.executable, __file__, "--one", *case, *(["--quick"] if args.quick else [])]
        print(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
