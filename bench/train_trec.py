"""Benchmark: TREC-6 question classification, MiniLM-L6 fine-tuned (TransformerDocumentEmbeddings).

TREC-6 train only is here, so a seeded 10% is held out for evaluation (the corpus's dev split).

    .venv/bin/python bench/train_trec.py                 # 5 epochs of fine-tuning
    .venv/bin/python bench/train_trec.py --quick         # 96 questions, 1 epoch
    .venv/bin/python bench/train_trec.py --device cuda --use-amp --pooling mean
    .venv/bin/python bench/train_trec.py --write-split /tmp/trec-split   # for bench/baselines/flair_trec.py
    .venv/bin/python bench/train_trec.py --tune --learning-rate 3e-5     # choose settings without the held-out 10%

Trainer: ``fine_tune`` (AdamW, lr 5e-5, 10% linear warm-up then decay, mini-batch 16, storage mode
none, final model evaluated). One JSON line per epoch (``epoch``, ``tokens_per_s``, ``train_loss``,
``dev_accuracy`` ...), then ``final_dev_accuracy``, ``wall_s``, ``peak_rss_mb``. Target >= 0.96.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    EpochPrinter,
    emit,
    output_dir,
    peak_rss_mb,
    set_threads,
    training_parser,
    trec_corpus,
)

if TYPE_CHECKING:
    from engine.data import Sentence


def main(argv: list[str] | None = None) -> int:
    parser = training_parser(__doc__, epochs=5, quick_help="96 train / 48 held-out questions, 1 epoch")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument(
        "--decoder-learning-rate",
        type=float,
        default=None,
        help="a rate of its own for the classifier's linear layer (default: --learning-rate)",
    )
    parser.add_argument("--mini-batch-size", type=int, default=16)
    parser.add_argument(
        "--pooling",
        choices=("cls", "mean", "max"),
        default="cls",
        help="document vector: [CLS], or the mean or maximum over subtokens",
    )
    parser.add_argument(
        "--layers",
        default="-1",
        help='transformer layers whose mean is pooled: "-1" (the last), "all", or a list like "-1,-2"',
    )
    parser.add_argument(
        "--no-bucketing",
        action="store_true",
        help="plain shuffled batches (as Flair)",
    )
    parser.add_argument("--loss-reduction", choices=("sum", "mean"), default="sum")
    parser.add_argument(
        "--use-amp",
        action="store_true",
        help="mixed precision: float16 on CUDA, bfloat16 on a CPU with native bfloat16 (else ignored)",
    )
    parser.add_argument(
        "--write-split",
        type=Path,
        metavar="DIR",
        help="write the train and held-out questions as FastText files (DIR/train.txt, DIR/dev.txt) "
        "for another tool to train on the same split, and stop",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="score on a seeded 10%% of the training questions instead of the held-out ones, which "
        "this run never sees: settings chosen on these scores are then measured once on the held-out",
    )
    args = parser.parse_args(argv)
    if args.write_split is not None:
        return write_split(args.write_split)

    started = time.perf_counter()
    set_threads(args.threads)
    import torch

    from engine.embeddings.transformer import TransformerDocumentEmbeddings
    from engine.models.text_classifier import TextClassifier
    from engine.training.trainer import ModelTrainer

    corpus = trec_corpus()
    if args.tune:
        corpus.train, corpus.dev = tuning_split(corpus.train)
    epochs = args.epochs
    if args.quick:
        corpus.train, corpus.dev, epochs = corpus.train[:96], corpus.dev[:48], 1
    torch.manual_seed(args.seed)
    classifier = TextClassifier(
        TransformerDocumentEmbeddings("minilm", layers=args.layers, fine_tune=True, cls_pooling=args.pooling),
        corpus.make_label_dictionary("question_class"),
        "question_class",
    )
    printer = EpochPrinter("accuracy", "accuracy")
    trainer = ModelTrainer(classifier, corpus)
    trainer.fine_tune(
        output_dir(args.out, "trec"),
        learning_rate=args.learning_rate,
        mini_batch_size=args.mini_batch_size,
        max_epochs=epochs,
        seed=args.seed,
        device=args.device,
        callbacks=[printer],
        use_amp=args.use_amp,
        length_bucketing=not args.no_bucketing,
        loss_reduction=args.loss_reduction,
        decoder_learning_rate=args.decoder_learning_rate,
    )
    emit(
        {
            "benchmark": "train_trec",
            "epochs": epochs,
            "learning_rate": args.learning_rate,
            "decoder_learning_rate": args.decoder_learning_rate,
            "mini_batch_size": args.mini_batch_size,
            "pooling": args.pooling,
            "layers": args.layers,
            "use_amp": args.use_amp,
            "length_bucketing": not args.no_bucketing,
            "loss_reduction": args.loss_reduction,
            "train_sentences": len(corpus.train),
            "heldout_sentences": len(corpus.dev),
            "scored_on": "tuning split of train" if args.tune else "held-out",
            # fine_tune keeps the final model: its score is the last epoch's
            "final_dev_accuracy": None if printer.last is None else round(printer.last, 5),
            "wall_s": round(time.perf_counter() - started, 1),
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    return 0


def tuning_split(train: list[Sentence]) -> tuple[list[Sentence], list[Sentence]]:
    """The training questions less a seeded 10%, and that 10%."""
    shuffled = list(train)
    random.Random(7).shuffle(shuffled)
    cut = len(shuffled) // 10
    return shuffled[cut:], shuffled[:cut]


def write_split(folder: Path) -> int:
    """The corpus's train and held-out questions, one ``__label__CLASS question`` a line, each
    question as the TREC file writes it."""
    corpus = trec_corpus()
    folder.mkdir(parents=True, exist_ok=True)
    for name, sentences in (("train.txt", corpus.train), ("dev.txt", corpus.dev)):
        lines = [
            f"__label__{s.labels['question_class'][0].value} {s.to_original_text()}\n" for s in sentences
        ]
        (folder / name).write_text("".join(lines), encoding="utf-8")
        emit({"file": str(folder / name), "questions": len(lines)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
