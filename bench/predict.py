"""Benchmark: ``SequenceTagger.predict`` speed for a GloVe BiLSTM-CRF tagger; one JSON line.

    .venv/bin/python bench/predict.py            # CoNLL-03 dev (3,250 sentences), batch 64
    .venv/bin/python bench/predict.py --quick    # the first 256 dev sentences

The model is GloVe 6B 50d (``WordEmbeddings("glove")``) -> reprojection -> BiLSTM (hidden 256)
-> linear -> CRF over the BIOES tags of the four CoNLL types, with untrained weights (speed does
not depend on their values). Timed: one ``predict(sentences, mini_batch_size=64)`` call over
fresh sentences, after a warm-up call on other sentence objects (so the one-off GloVe index build
is not counted). Fields: ``sentences``, ``seconds`` (wall clock), ``sentences_per_s``, ``tokens``, ``cpu_seconds``
(CPU time of this process: on a machine shared with other work, wall time includes waiting for a
core, CPU time does not), ``threads``, ``precision``, ``random_batches``.

``--random-batches`` times what the served API does instead: one ``predict`` call per batch of
randomly drawn sentences of mixed lengths (a sorted whole file pads almost nothing).
``--precision bfloat16`` runs under bfloat16 autocast and adds ``same_tags_as_float32``;
``--model DIR`` loads a saved (trained) tagger instead of the untrained one.

Threads: one torch intra-op thread by default, as the service runs inference
(``TAGSMITH_PREDICT_TORCH_THREADS=1``). With two OpenMP threads on two cores shared with other
work, each of the LSTM's small per-step kernels waits at a barrier for a descheduled thread:
measured at load 3-4, 460-730 sentences/s and 4-7 times the CPU time of one thread.
``--threads 0`` uses torch's default.
Reference on the 2-core development machine: Flair 0.15.1 does 540-770 sentences/s; target 2,300.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from engine.data import Corpus, Sentence  # noqa: E402
from engine.embeddings.word import WordEmbeddings  # noqa: E402
from engine.models.base import load_model  # noqa: E402
from engine.models.sequence_tagger import SequenceTagger  # noqa: E402
from engine.precision import PRECISIONS, resolve_precision  # noqa: E402
from engine.readers.column import read_column_file  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="only the first 256 dev sentences")
    parser.add_argument(
        "--path", type=Path, default=DATA / "conll03" / "dev.txt", help="a two-column NER file"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1; 0: torch's default)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="predict's arithmetic (engine.precision); other than float32 also reports the share of "
        "sentences tagged exactly as float32 tags them",
    )
    parser.add_argument(
        "--random-batches",
        action="store_true",
        help="one predict call per batch of randomly drawn sentences (seeded), as the served API "
        "batches concurrent requests, instead of one call over the whole file (which sorts by length)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="a saved tagger folder (e.g. bench/train_ner.py --out DIR/best-model) "
        "instead of an untrained one: agreement with float32 means something only for a trained model",
    )
    args = parser.parse_args(argv)
    if not args.path.is_file():
        print(f"error: {args.path} not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    sentences, _ = read_column_file(args.path, {0: "text", 1: "ner"})
    if args.quick:
        sentences = sentences[:256]
    if args.model:
        tagger = load_model(args.model)
    else:
        dictionary = Corpus(sentences, sample_missing_splits=False).make_label_dictionary("ner")
        torch.manual_seed(0)
        tagger = SequenceTagger(WordEmbeddings("glove"), dictionary, "ner", hidden_size=256)
    precision = resolve_precision(args.precision, torch.device("cpu"))

    def fresh() -> list[Sentence]:
        return [Sentence([t.text for t in s.tokens]) for s in sentences]

    warm_up = fresh()[: args.batch_size * 2]
    tagger.predict(warm_up, mini_batch_size=args.batch_size, precision=precision)
    timed = fresh()
    if args.random_batches:
        drawn = random.Random(0).sample(timed, len(timed))  # ``timed`` keeps the file's order
        calls = [drawn[i : i + args.batch_size] for i in range(0, len(drawn), args.batch_size)]
    else:
        calls = [timed]
    start, cpu_start = time.perf_counter(), time.process_time()
    for call in calls:
        tagger.predict(call, mini_batch_size=args.batch_size, precision=precision)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    record: dict[str, object] = {
        "sentences": len(timed),
        "seconds": round(seconds, 4),
        "sentences_per_s": round(len(timed) / seconds, 1),
        "tokens": sum(len(s) for s in timed),
        "cpu_seconds": round(cpu_seconds, 4),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "random_batches": args.random_batches,
    }
    if precision != "float32":
        reference = fresh()
        tagger.predict(reference, mini_batch_size=args.batch_size)
        label = tagger.label_type
        same = sum(_tags(a, label) == _tags(b, label) for a, b in zip(timed, reference, strict=True))
        record["same_tags_as_float32"] = round(same / len(timed), 5)
    print(json.dumps(record))
    return 0


def _tags(sentence: Sentence, label: str) -> list[tuple[int, int, str]]:
    return [(sp.start, sp.end, sp.label.value) for sp in sentence.get_spans(label)] + [
        (t.idx, t.idx, t.get_tag(label)) for t in sentence.tokens if label in t.labels
    ]


if __name__ == "__main__":
    raise SystemExit(main())
