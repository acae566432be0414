"""Benchmark: read UD English-EWT train (CoNLL-U, 14 MB) and print one JSON line.

    .venv/bin/python bench/read_corpus.py            # EWT train
    .venv/bin/python bench/read_corpus.py --quick    # EWT dev (a few hundred ms)

Fields: ``sentences``, ``tokens``, ``seconds`` (reading, including the garbage collection the
reader's allocations cause afterwards), ``peak_rss_mb`` (the process's peak resident memory).
Target for EWT train: under 2 s and under 400 MB.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from engine.readers import read_corpus_files  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="read EWT dev instead of train")
    parser.add_argument("--path", type=Path, help="another file to read")
    parser.add_argument("--format", default="conllu", help="format of --path (default conllu)")
    args = parser.parse_args(argv)
    path = args.path or DATA / "ud_english_ewt" / ("dev.conllu" if args.quick else "train.conllu")
    if not path.is_file():
        print(f"error: {path} not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    corpus = read_corpus_files(args.format, {"train": path}, sample_missing_splits=False)
    sentences = len(corpus.train)
    tokens = sum(len(s) for s in corpus.train)
    gc.collect(0)
    seconds = time.perf_counter() - start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "benchmark": "read_corpus",
                "file": str(path.relative_to(DATA)) if path.is_relative_to(DATA) else str(path),
                "sentences": sentences,
                "tokens": tokens,
                "seconds": round(seconds, 3),
                "peak_rss_mb": round(peak_rss_mb, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
