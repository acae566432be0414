"""Read a corpus and print its statistics and a few tagged sentences.

    .venv/bin/python examples/read_corpus_demo.py                       # ../shared/data/conll03/dev.txt
    .venv/bin/python examples/read_corpus_demo.py ../shared/data/ud_english_ewt/dev.conllu
    .venv/bin/python examples/read_corpus_demo.py ../shared/data/trec6/train.txt --format trec
    .venv/bin/python examples/read_corpus_demo.py data.csv --option text_column=review

Without ../shared/data it reads the bundled examples/data/sample_ner.conll. The file is read as
the training split; as with any corpus without a dev file, a seeded 10% of it becomes dev.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from engine.data import Corpus  # noqa: E402
from engine.readers import FORMATS, CorpusFormatError, ReaderOptionError, read_corpus_files  # noqa: E402

DEFAULT = REPO_ROOT.parent / "shared" / "data" / "conll03" / "dev.txt"
SAMPLE = REPO_ROOT / "examples" / "data" / "sample_ner.conll"


def guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    for name in ("conllu", "csv", "tsv", "jsonl"):
        if suffix in FORMATS[name].suffixes:
            return name
    with path.open(encoding="utf-8", errors="replace") as f:
        first = next((line for line in f if line.strip()), "")
    return "fasttext" if first.startswith("__label__") else "column"


def parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise SystemExit(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def print_statistics(corpus: Corpus, fmt: str, top: int) -> None:
    stats = corpus.statistics()
    kinds = stats["label_types"]
    schemes = getattr(corpus, "tag_schemes", {})
    described = ", ".join(
        f"{name} ({kind}{', ' + schemes[name] if name in schemes else ''})" for name, kind in kinds.items()
    )
    print(f"Corpus {corpus.name!r}  format: {fmt}")
    print(f"  label types: {described or 'none'}")
    print(f"  documents: {stats['documents']:,}   skipped sentences: {stats['skipped_sentences']:,}")
    print()
    print(f"  {'split':<6} {'sentences':>10} {'tokens':>10}")
    for split in ("train", "dev", "test"):
        print(f"  {split:<6} {stats[split]['sentences']:>10,} {stats[split]['tokens']:>10,}")
    for name, counts in stats["train"]["labels"].items():
        total = sum(counts.values())
        print(
            f"\n  {name} in train: {len(counts)} values, {total:,} {'spans' if kinds[name] == 'span' else 'labels'}"
        )
        widest = max(counts.values())
        for value, count in list(counts.items())[:top]:
            bar = "#" * max(1, round(30 * count / widest))
            print(f"    {value:<14.14} {count:>8,}  {bar}")
        if len(counts) > top:
            print(f"    ... {len(counts) - top} more")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", nargs="?", type=Path, help=f"corpus file (default {DEFAULT})")
    parser.add_argument("--format", choices=sorted(FORMATS), help="default: guessed from the file")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='a reader option (JSON values), e.g. column_map=\'{"0": "text", "3": "ner"}\'',
    )
    parser.add_argument("--sentences", type=int, default=3, help="tagged sentences to show")
    parser.add_argument("--top", type=int, default=12, help="label values to list per label type")
    args = parser.parse_args(argv)

    path = args.path
    if path is None:
        path = DEFAULT if DEFAULT.is_file() else SAMPLE
    if not path.is_file():
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    fmt = args.format or guess_format(path)
    try:
        corpus = read_corpus_files(fmt, {"train": path}, parse_options(args.option), name=path.stem)
    except (CorpusFormatError, ReaderOptionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Read {path}\n")
    print_statistics(corpus, fmt, args.top)
    print(f"\nFirst {args.sentences} training sentences:")
    for sentence in corpus.train[: args.sentences]:
        doc = f"  [document {sentence.document_id}]" if sentence.document_id else ""
        print(f"  {sentence.to_tagged_string()}{doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
