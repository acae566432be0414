"""Benchmark: train a forward and a backward character language model for a fixed time budget.

    .venv/bin/python bench/train_charlm.py --minutes 30 --out bench/out/charlm   # hidden 1024
    .venv/bin/python bench/train_charlm.py --minutes 1 --hidden 256               # a short look
    .venv/bin/python bench/train_charlm.py --quick                                # seconds (tests)

Text: the raw sentences of UD English-EWT train (``# text =``) plus the tokens of CoNLL-03 train
joined with spaces (no labels), one sentence a line, written as a language-model corpus folder
(``<out>/corpus``: 1% valid, 1% test, training files of ``--chunk-chars`` characters).

Each direction trains for ``--minutes`` (checked before each training file, so a run ends after
the file that crosses the budget) and prints one JSON line per checkpoint:
``{"direction", "checkpoint", "chars_per_s", "valid_perplexity", "train_loss", "learning_rate",
"elapsed_s"}``, then a summary line with the best validation perplexity, the model folder and a
generated sample. The models land in ``<out>/forward/best-lm`` and ``<out>/backward/best-lm``;
a tagger uses them with ``FlairEmbeddings("<out>/forward/best-lm")``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from engine.language_model import (  # noqa: E402
    LanguageModel,
    LanguageModelTrainer,
    TextCorpus,
    corpus_texts,
    write_text_corpus,
)
from engine.readers import read_column_file, read_conllu_file  # noqa: E402
from engine.training.callbacks import BatchEnded, EpochEnded, TrainerCallback  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data"


def source_lines(split: str = "train", limit: int | None = None) -> Iterator[str]:
    """EWT's raw text, then CoNLL-03's tokens joined with spaces (``split``: train or dev)."""
    ewt, _ = read_conllu_file(DATA / "ud_english_ewt" / f"{split}.conllu")
    conll, _ = read_column_file(DATA / "conll03" / f"{split}.txt", {0: "text"}, span_columns=[])
    count = 0
    for sentences in (ewt, conll):
        for line in corpus_texts(sentences):
            if limit is not None and count >= limit:
                return
            count += 1
            yield line


class JsonLines(TrainerCallback):
    def __init__(self, direction: str) -> None:
        self.direction = direction
        self.started = time.monotonic()
        self.last: EpochEnded | None = None
        self.split_chars_per_s = 0.0

    def on_batch_end(self, info: BatchEnded) -> None:
        self.split_chars_per_s = info.tokens_per_s  # running mean over the current training file

    def on_epoch_end(self, info: EpochEnded) -> None:
        self.last = info

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        info = self.last
        assert info is not None and info.dev_scores is not None
        row = {
            "direction": self.direction,
            "checkpoint": epoch,
            "chars_per_s": round(self.split_chars_per_s, 1),
            "valid_perplexity": round(info.dev_scores["perplexity"], 4),
            "train_loss": round(info.train_loss, 4),
            "learning_rate": info.learning_rate,
            "elapsed_s": round(time.monotonic() - self.started, 1),
        }
        print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny model on 300 lines of the dev files, one pass (seconds)"
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="training time per direction")
    parser.add_argument("--hidden", type=int, default=1024, help="LSTM hidden size")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--sequence-length", type=int, default=250)
    parser.add_argument("--batch", type=int, default=100, help="parallel character streams")
    parser.add_argument("--lr", type=float, default=20.0)
    parser.add_argument("--chunk-chars", type=int, default=250_000, help="characters per training file")
    parser.add_argument("--directions", default="forward,backward")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "out" / "charlm")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.hidden, args.sequence_length, args.batch, args.chunk_chars = 32, 50, 16, 12_000
    if not (DATA / "ud_english_ewt" / "train.conllu").is_file():
        print(f"error: corpora not found under {DATA} (see ../shared/data/README.md)", file=sys.stderr)
        return 2

    corpus_dir = args.out / "corpus"
    corpus = (
        TextCorpus.open(corpus_dir)
        if (corpus_dir / "valid.txt").is_file() and not args.quick
        else write_text_corpus(
            source_lines("dev", 300) if args.quick else source_lines(),
            corpus_dir,
            train_chunk_chars=args.chunk_chars,
            valid_fraction=0.05 if args.quick else 0.01,
            test_fraction=0.05 if args.quick else 0.01,
        )
    )
    characters = corpus.characters(min_count=1 if args.quick else 3)
    for direction in args.directions.split(","):
        if direction not in ("forward", "backward"):
            parser.error(f"--directions: unknown direction {direction!r}")
        torch.manual_seed(1)
        model = LanguageModel(
            characters, is_forward=direction == "forward", hidden_size=args.hidden, nlayers=args.layers
        )
        result = LanguageModelTrainer(model, corpus).train(
            args.out / direction,
            sequence_length=args.sequence_length,
            mini_batch_size=args.batch,
            learning_rate=args.lr,
            max_epochs=1 if args.quick else 1000,
            max_seconds=None if args.quick else args.minutes * 60,
            callbacks=[JsonLines(direction)],
        )
        best = LanguageModel.load(result["model_path"])
        summary = {
            "direction": direction,
            "model": str(result["model_path"]),
            "splits_trained": result["epochs_done"],
            "train_files": len(corpus.train_files),
            "best_valid_perplexity": round(result["best_valid_perplexity"], 4),
            "hidden": args.hidden,
            "sample": best.generate_text("\nThe " if direction == "forward" else " .\n", 120, 0.5, seed=0),
        }
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
