"""Benchmark: what reading a stored corpus costs the API process, read there (``in_process``) or in
a reader process (``reader``, what the service does): one split for ``POST /models/{id}/evaluate``
(``split``, the gold label type only) and every split's text for ``POST /corpora/{id}/text``
(``text``). One JSON line per case, each measured in a fresh process:

    .venv/bin/python bench/stored_reads.py            # UD English-EWT train + dev, the dev split
    .venv/bin/python bench/stored_reads.py --quick    # EWT dev as the only split

Fields: ``read``, ``where``, ``sentences`` (of the split, or text lines over all splits),
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
READS = ("split", "text")
WHERE = ("in_process", "reader")


def _files(quick: bool) -> tuple[dict[str, Path], str]:
    """The stored corpus's split files and the split an evaluation reads."""
    if quick:
        return {"train": DATA / "dev.conllu"}, "train"
    return {"train": DATA / "train.conllu", "dev": DATA / "dev.conllu"}, "dev"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(read: str, where: str, quick: bool) -> dict[str, object]:
    from engine.language_model.corpus import corpus_texts
    from service.corpus_reading import read_split, read_texts
    from service.stored_corpora import read_copied_corpus

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
    if where == "reader":
        if read == "split":
            sentences = len(read_split("conllu", {}, paths, split, 0, "upos"))
        else:
            sentences = sum(len(lines) for lines in read_texts("conllu", {}, paths).values())
    else:
        corpus = read_copied_corpus("conllu", {}, paths)
        if read == "split":
            sentences = len(getattr(corpus, split))
        else:
            sentences = sum(len(list(corpus_texts(corpus, [s]))) for s in corpus.splits())
    seconds = time.perf_counter() - started
    return {
        "benchmark": "stored_reads",
        "read": read,
        "where": where,
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
    parser.add_argument("--one", nargs=2, metavar=("READ", "WHERE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.quick)))
        return 0
    missing = [p for p in _files(args.quick)[0].values() if not p.is_file()]
    if missing:
        print(f"error: {missing[0]} not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    for read in READS:
        for where in WHERE:
            # a process per case: a peak resident size only grows
            command = [sys.executable, __file__, "--one", read, where, *(["--quick"] if args.quick else [])]
            print(
                subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip(), flush=True
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
